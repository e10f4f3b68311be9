"""The alerts worker: fills, refused orders, trading-state changes (halts, rules tripping), data gaps
and workers that went down, to Telegram, Discord, Slack and e-mail (whichever ALERT_* settings are
given; with none, alerts are only logged).

Order events, control events and gaps come through the ``alerts`` consumer group, acked once their alerts were handed to
the channels; heartbeats are checked every ALERT_CHECK_S. A redelivered event after a crash may
alert twice: alerts are at-least-once, like everything on the bus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from tradebot.alerts.channels import channels_from_settings
from tradebot.alerts.notifier import Notifier
from tradebot.alerts.rules import Deduper, alerts_for, workers_down
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, Bus, Delivery
from tradebot.common.config import ReadySettings
from tradebot.common.consumer import GroupConsumer
from tradebot.common.runtime import consumer_name
from tradebot.common.runtime import main as run_worker
from tradebot.common.streams import CONTROL_EVENTS, GAPS, HEARTBEAT_PATTERN, ORDER_EVENTS, Role

log = logging.getLogger(__name__)
ROLE = Role.ALERTS
GROUP: str = Role.ALERTS


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str] | None = None) -> None:
    """Alert until ``stop``."""
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
    watcher = asyncio.create_task(watch_workers(bus, notifier, settings.alert_check_s, stop))
    try:
        await consumer.run(handle, stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await bus.close()


async def live_roles(bus: Bus) -> set[str]:
    """Roles with at least one unexpired heartbeat (``heartbeat:<role>:<consumer>``)."""
    return {key.split(":")[1] async for key in bus.redis.scan_iter(match=HEARTBEAT_PATTERN, count=500)}


async def watch_workers(
    bus: Bus, notifier: Notifier, every_s: float, stop: asyncio.Event, seen: set[str] | None = None
) -> None:
    """Alert when a role that was running (``seen``) has no live worker; say so when it is back."""
    seen = seen if seen is not None else set()
    while not stop.is_set():
        try:
            alive = await live_roles(bus)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.warning("cannot read heartbeats: %s", error)
        else:
            seen |= alive
            for alert in workers_down(seen - {ROLE}, alive):
                await notifier.notify(alert)
            for key in notifier.deduper.open_incidents("worker-down:"):
                role = key.split(":", 1)[1]
                if role in alive:
                    await notifier.resolve(key, f"recovered: a {role} worker is running again")
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


def main() -> None:
    """Run the alerts worker as a process."""
    run_worker(ROLE, run)


if __name__ == "__main__":
    main()
