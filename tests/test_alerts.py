"""Alerts: the pure rules, and the alerts worker delivering to a Telegram/Discord/Slack emulator and
a real SMTP server (aiosmtpd), de-duplicated, rate-limited, retried, secrets never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller

from tests.emulators.chat_webhooks import TOKEN, ChatWebhooksEmulator
from tests.helpers import free_port, wait_until
from tradebot.alerts import service
from tradebot.alerts.channels import channels_from_settings
from tradebot.alerts.notifier import Notifier
from tradebot.alerts.rules import Alert, Deduper, alerts_for, workers_down
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.models import ControlEvent, Gap, OrderEvent
from tradebot.common.runtime import setup_logging
from tradebot.common.streams import ORDER_EVENTS, heartbeat_key

DISCORD_PATH = "/api/webhooks/42/discord-secret"
SLACK_PATH = "/services/T0/B0/slack-secret"


def fill(n: int, status: str = "filled") -> OrderEvent:
    return OrderEvent(
        id=f"ev-{n}",
        symbol="AAPL",
        timestamp=datetime(2026, 3, 2, 15, n, tzinfo=UTC),
        client_order_id=f"co-{n}",
        status=status,  # type: ignore[arg-type]
        side="buy",
        quantity=10,
        price=187.25 if status == "filled" else None,
        reason=None if status == "filled" else "insufficient cash",
    )


# --- rules -----------------------------------------------------------------------------------------


def test_fills_and_refusals_call_for_alerts() -> None:
    assert alerts_for(fill(1)) == [Alert("fill:ev-1", "filled: buy 10 AAPL @ 187.25")]
    [refused] = alerts_for(fill(2, "rejected"))
    assert refused.severity == "warning"
    assert "insufficient cash" in refused.text


def test_a_role_that_ran_and_has_no_worker_now_is_down() -> None:
    [down] = workers_down({"strategy", "storage"}, {"storage"})
    assert down.key == "worker-down:strategy"
    assert down.severity == "critical"


def test_one_alert_per_incident_then_a_reminder() -> None:
    now = [0.0]
    deduper = Deduper(reminder_s=60, clock=lambda: now[0])
    alert = Alert("worker-down:strategy", "worker down")
    assert deduper.due(alert) == "worker down"
    now[0] = 59.9
    assert deduper.due(alert) is None
    now[0] = 60.0
    assert deduper.due(alert) == "still: worker down"
    assert deduper.resolve(alert.key)
    assert deduper.due(alert) == "worker down"


# --- the worker against the emulators ------------------------------------------------------------


class Inbox:
    """What a real SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.messages.append(envelope.content)  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def chat() -> Iterator[ChatWebhooksEmulator]:
    with ChatWebhooksEmulator() as emulator:
        yield emulator


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def alert_settings(settings: Settings, chat: ChatWebhooksEmulator, inbox: tuple[Inbox, int]) -> Settings:
    return ReadySettings(
        _env_file=None,
        **settings.model_dump()
        | {
            "alert_telegram_token": TOKEN,
            "alert_telegram_chat_id": "-100",
            "alert_telegram_api_url": chat.url,
            "alert_discord_webhook_url": f"{chat.url}{DISCORD_PATH}",
            "alert_slack_webhook_url": f"{chat.url}{SLACK_PATH}",
            "alert_smtp_host": "127.0.0.1",
            "alert_smtp_port": inbox[1],
            "alert_email_to": "ops@example.com",
            "alert_check_s": 0.2,
            # The daily summary is due for a day after each close by the wall clock, and goes out
            # whenever the shared database holds the tables: these tests count the other alerts
            # (test_alerts_daily.py tests the summary at a fixed time).
            "alert_daily_summary": False,
        },
    )


async def run_until(settings: Settings, condition: object, what: str) -> Counter:
    counters: Counter = Counter()
    stop = asyncio.Event()
    worker = asyncio.create_task(service.run(settings, stop=stop, counters=counters))
    try:
        await wait_until(condition, timeout=30, what=what)  # type: ignore[arg-type]
    finally:
        stop.set()
        await worker
    return counters


async def test_a_fill_reaches_every_channel_once(
    alert_settings: Settings, bus: Bus, chat: ChatWebhooksEmulator, inbox: tuple[Inbox, int]
) -> None:
    await bus.publish([(ORDER_EVENTS, fill(1)), (ORDER_EVENTS, fill(1)), (ORDER_EVENTS, fill(2, "rejected"))])
    await run_until(alert_settings, lambda: len(chat.messages) == 6 and len(inbox[0].messages) == 2, "alerts")
    texts = {
        service_name: [t for s, t in chat.messages if s == service_name]
        for service_name in ("telegram", "discord", "slack")
    }
    for sent in texts.values():
        assert sent[0] == "filled: buy 10 AAPL @ 187.25"
        assert "rejected" in sent[1]
        assert len(sent) == 2
    subjects = [message_from_bytes(raw)["Subject"] for raw in inbox[0].messages]
    assert subjects[0] == "tradebot: filled: buy 10 AAPL @ 187.25"


async def test_a_failing_channel_is_retried_and_secrets_never_appear_in_logs(
    alert_settings: Settings, bus: Bus, chat: ChatWebhooksEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    chat.fail_next(500, count=2, path_prefix="/api/webhooks")
    await bus.publish([(ORDER_EVENTS, fill(3))])
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    setup_logging("DEBUG")  # the workers' logging, at its most verbose
    try:
        with caplog.at_level(logging.DEBUG):
            await run_until(
                alert_settings, lambda: ("discord", "filled: buy 10 AAPL @ 187.25") in chat.messages, "discord"
            )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert len(chat.requests_to("/api/webhooks")) == 3
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (TOKEN, "discord-secret", "slack-secret"):
        assert secret not in logged


async def test_a_worker_going_down_is_alerted_once_and_its_recovery_too(bus: Bus, chat: ChatWebhooksEmulator) -> None:
    key = heartbeat_key("strategy", "host-1")
    await bus.redis.set(key, "{}", ex=60)
    telegram_only = channels_from_settings(
        Settings(
            _env_file=None, alert_telegram_token=TOKEN, alert_telegram_chat_id="-100", alert_telegram_api_url=chat.url
        )
    )
    notifier = Notifier(telegram_only, Deduper(3600, time.monotonic), per_minute=20, counters=Counter())
    stop, seen = asyncio.Event(), set[str]()
    watcher = asyncio.create_task(service.watch_workers(bus, notifier, 0.05, stop, seen))
    try:
        await wait_until(lambda: "strategy" in seen, what="the watcher to see the strategy worker")
        await bus.redis.delete(key)
        await wait_until(lambda: any("worker down" in t for _, t in chat.messages), what="the down alert")
        await bus.redis.set(key, "{}", ex=60)
        await wait_until(lambda: any("recovered" in t for _, t in chat.messages), what="the recovery")
    finally:
        stop.set()
        await watcher
    down = [t for _, t in chat.messages if "worker down" in t]
    assert down == ["worker down: no live strategy worker (its heartbeat expired)"]


async def test_the_worker_watch_outlives_what_it_does_not_expect_and_says_so(
    bus: Bus, chat: ChatWebhooksEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    key = heartbeat_key("strategy", "host-1")
    await bus.redis.set(key, "{}", ex=60)
    await bus.redis.set(heartbeat_key("storage", "host-2"), json.dumps({"started_at": "yesterday"}), ex=60)
    telegram_only = channels_from_settings(
        Settings(
            _env_file=None, alert_telegram_token=TOKEN, alert_telegram_chat_id="-100", alert_telegram_api_url=chat.url
        )
    )
    notifier = Notifier(telegram_only, Deduper(3600, time.monotonic), per_minute=20, counters=Counter())
    stop, seen, counters = asyncio.Event(), set[str](), Counter[str]()
    watcher = asyncio.create_task(service.watch_workers(bus, notifier, 0.05, stop, seen, counters=counters))
    try:
        await wait_until(lambda: {"strategy", "storage"} <= seen, what="the watcher past a malformed heartbeat")
        await bus.redis.set("heartbeat:not-ours", "{}", ex=60)  # a key it cannot read: each check fails
        await wait_until(lambda: counters["worker_watch_failing"] >= 2, what="two failed checks")
        assert not watcher.done()
        await bus.redis.delete("heartbeat:not-ours", key)
        await wait_until(lambda: any("worker down" in t for _, t in chat.messages), what="the down alert")
        assert counters["worker_watch_failing"] == 0
    finally:
        stop.set()
        await watcher
    failed = [record for record in caplog.records if record.getMessage().startswith("worker watch failed")]
    assert len(failed) >= 2
    assert "ValueError" in failed[0].getMessage()
    assert failed[0].levelname == "ERROR"


async def test_over_the_rate_limit_alerts_are_held_back_and_counted(chat: ChatWebhooksEmulator) -> None:
    telegram_only = channels_from_settings(
        Settings(
            _env_file=None, alert_telegram_token=TOKEN, alert_telegram_chat_id="-100", alert_telegram_api_url=chat.url
        )
    )
    counters: Counter = Counter()
    notifier = Notifier(telegram_only, Deduper(3600, time.monotonic), per_minute=2, counters=counters)
    for n in range(5):
        await notifier.notify(Alert(f"fill:{n}", f"fill {n}"))
    assert [t for _, t in chat.messages] == ["fill 0", "fill 1"]
    assert counters["alerts_rate_limited"] == 3


def test_halts_and_data_gaps_call_for_alerts() -> None:
    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    halt = ControlEvent(
        id="ctl-1", timestamp=at, action="halt", state="HALTED", actor="ops", reason="broker outage", version=2
    )
    [alert] = alerts_for(halt)
    assert alert.severity == "critical"
    assert alert.text == "trading HALTED (halt by ops): broker outage"
    [gap] = alerts_for(Gap.create("alpaca", "AAPL", at, at.replace(minute=5), dropped=1200))
    assert gap.severity == "warning"
    assert "data gap: alpaca AAPL 2026-03-02 15:00:00 to 15:05:00 UTC (1200 events" in gap.text
