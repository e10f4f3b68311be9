"""The alerts worker: fills, refused orders, trading-state changes (halts, rules tripping), data gaps
and workers that went down, to Telegram, Discord, Slack and e-mail (whichever ALERT_* settings are
given; with none, alerts are only logged).

Order events, control events and gaps come through the ``alerts`` consumer group, acked once their alerts were handed to
the channels; heartbeats are checked every ALERT_CHECK_S. A redelivered event after a crash may
alert twice: alerts are at-least-once, like everything on the bus. Once per NYSE session the daily
summary goes out too (alerts/daily.py: exactly one replica sends it).

Both watchers (heartbeats, the daily summary) outlive what they do not expect: a failure is logged
with its reason each time, the next try comes after a growing delay (up to WATCH_RETRY_CAP_S), and
the worker's counters (its heartbeat, in /health) say how many tries in a row failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime

from tradebot.alerts import daily
from tradebot.alerts.channels import channels_from_settings
from tradebot.alerts.notifier import Notifier
from tradebot.alerts.rules import Alert, Deduper, alerts_for, workers_down
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, get_many
from tradebot.common.bus.wire import Delivery
from tradebot.common.config import ReadySettings
from tradebot.common.consumer import GroupConsumer
from tradebot.common.db import TRANSIENT_DB_ERRORS
from tradebot.common.lifecycle import backoff_delay_s, wait_or_stop
from tradebot.common.runtime import consumer_name
from tradebot.common.runtime import main as run_worker
from tradebot.common.streams import CONTROL_EVENTS, GAPS, HEARTBEAT_PATTERN, ORDER_EVENTS, Role, worker_down_key
from tradebot.risk.calendar import session_of

log = logging.getLogger(__name__)
ROLE = Role.ALERTS
GROUP: str = Role.ALERTS
Clock = Callable[[], datetime]
WATCH_RETRY_CAP_S = 300.0  # the longest wait after a watcher's failed try


def utc_now() -> datetime:
    return datetime.now(UTC)


async def run(
    settings: ReadySettings,
    *,
    stop: asyncio.Event,
    counters: Counter[str] | None = None,
    clock: Clock = utc_now,
    hours: daily.SessionHours | None = None,
) -> None:
    """Alert until ``stop``; ``clock`` and ``hours`` (the NYSE calendar) decide when a summary is due."""
    counters = counters if counters is not None else Counter[str]()
    channels = channels_from_settings(settings)
    if not channels:
        log.info("no alert channel configured (ALERT_* settings): alerts are logged only")
    deduper = Deduper(settings.alert_reminder_minutes * 60, time.monotonic)
    notifier = Notifier(channels, deduper, per_minute=settings.alert_rate_per_minute, counters=counters)
    bus = Bus.from_settings(settings)

    async def handle(batch: list[Delivery]) -> None:
        for delivery in batch:
            for alert in alerts_for(delivery.event):
                await notifier.notify(alert)

    consumer = GroupConsumer(
        bus,
        [ORDER_EVENTS, CONTROL_EVENTS, GAPS],
        GROUP,
        consumer_name(),
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        counters=counters,
    )
    watch = watch_workers(bus, notifier, settings.alert_check_s, stop, clock=clock, counters=counters)
    watchers = [asyncio.create_task(watch)]
    if settings.alert_daily_summary:
        summaries = send_daily_summaries(bus, notifier, settings, stop, clock, hours, counters=counters)
        watchers.append(asyncio.create_task(summaries))
    try:
        await consumer.run(handle, stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await bus.close()


async def live_roles(bus: Bus, day: str) -> set[str]:
    """Roles with at least one unexpired heartbeat (``heartbeat:<role>:<consumer>``); the processes
    among them started on ``day`` are counted for the daily summary."""
    keys = [key async for key in bus.redis.scan_iter(match=HEARTBEAT_PATTERN, count=500)]
    roles = set()
    for key, raw in zip(keys, await get_many(bus.redis, keys), strict=True):
        role, consumer = key.split(":", 2)[1:]
        roles.add(role)
        try:
            started = json.loads(raw or "{}").get("started_at")
            started_day = session_of(datetime.fromisoformat(started)) if started else None
        except (ValueError, TypeError, AttributeError):  # not a heartbeat of ours: not counted
            continue
        if started_day == day:
            await daily.record_started(bus.redis, day, role, consumer)
    return roles


async def keep_watching(
    what: str,
    check: Callable[[], Awaitable[None]],
    every_s: float,
    stop: asyncio.Event,
    counters: Counter[str],
    expected: tuple[type[Exception], ...] = (),
) -> None:
    """Run ``check`` every ``every_s`` until ``stop``, whatever it raises. A failed try is logged
    with its reason (a warning for the ``expected`` outages, an error with its traceback, the first
    time in a row, for anything else), the next one waits longer (doubling, up to
    WATCH_RETRY_CAP_S), and ``counters["<what>_failing"]`` holds the failures in a row (0: the last
    try worked)."""
    failing = f"{what.replace(' ', '_')}_failing"
    failures = 0
    while not stop.is_set():
        try:
            await check()
            failures, delay = 0, every_s
        except Exception as error:  # a bug or an unforeseen failure must not end the watcher
            failures += 1
            delay = backoff_delay_s(failures, base_s=every_s, cap_s=max(every_s, WATCH_RETRY_CAP_S))
            unforeseen = not isinstance(error, expected)
            log.log(
                logging.ERROR if unforeseen else logging.WARNING,
                "%s failed (%d in a row; next try in %.1fs): %r",
                what,
                failures,
                delay,
                error,
                exc_info=unforeseen and failures == 1,
            )
        counters[failing] = failures
        await wait_or_stop(stop, delay)


async def watch_workers(
    bus: Bus,
    notifier: Notifier,
    every_s: float,
    stop: asyncio.Event,
    seen: set[str] | None = None,
    *,
    clock: Clock = utc_now,
    counters: Counter[str] | None = None,
) -> None:
    """Alert when a role that was running (``seen``) has no live worker; say so when it is back."""
    seen = seen if seen is not None else set()

    async def check() -> None:
        day = session_of(clock())
        alive = await live_roles(bus, day)
        seen.update(alive)
        for alert in workers_down(seen - {ROLE}, alive):
            role = alert.key.split(":", 1)[1]
            await daily.record_worker_down(bus.redis, day, role, worker_down_key(role))
            await notifier.notify(alert)
        for key in notifier.deduper.open_incidents("worker-down:"):
            role = key.split(":", 1)[1]
            if role in alive:
                await bus.redis.delete(worker_down_key(role))
                await notifier.resolve(key, f"recovered: a {role} worker is running again")

    counters = counters if counters is not None else Counter()
    await keep_watching("worker watch", check, every_s, stop, counters, expected=RECOVERABLE_REDIS_ERRORS)


async def send_daily_summaries(
    bus: Bus,
    notifier: Notifier,
    settings: ReadySettings,
    stop: asyncio.Event,
    clock: Clock,
    hours: daily.SessionHours | None = None,
    *,
    counters: Counter[str] | None = None,
) -> None:
    """Send each session's summary once it is due (checked every ALERT_CHECK_S)."""
    if hours is None:
        from tradebot.risk.calendar import nyse_hours  # pandas: loaded only with the summary on

        hours = await asyncio.to_thread(nyse_hours)
    session_hours = hours
    after_close_s = settings.alert_daily_summary_after_close_minutes * 60

    async def check() -> None:
        session = daily.session_due(clock(), session_hours, after_close_s)
        if session is not None:
            await send_summary(bus, notifier, settings, session)

    counters = counters if counters is not None else Counter()
    outages = (*RECOVERABLE_REDIS_ERRORS, *TRANSIENT_DB_ERRORS, OSError)
    await keep_watching("daily summary", check, settings.alert_check_s, stop, counters, expected=outages)


async def send_summary(bus: Bus, notifier: Notifier, settings: ReadySettings, session: date) -> None:
    """Send ``session``'s summary if no replica has (or is sending it). A failure before it went
    out hands the claim back, so the next try (here or on another replica) need not wait for its
    lease to expire."""
    owner = consumer_name()
    if not await daily.claim(bus.redis, session, owner):
        return
    try:
        summary = await daily.gather(bus.redis, settings.database_url, session)
    except Exception:
        await daily.release(bus.redis, session, owner)
        raise
    await notifier.notify(Alert(f"daily:{session.isoformat()}", summary.text()), rate_limited=False)
    await daily.mark_sent(bus.redis, session)


def main() -> None:
    """Run the alerts worker as a process."""
    run_worker(ROLE, run)


if __name__ == "__main__":
    main()
