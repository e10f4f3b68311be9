"""The daily summary: due once per NYSE session after its close (the risk calendar), its figures from
the account, the database and Redis, and sent exactly once to every channel however many alerts
workers run or restart (a claim in Redis). The clock is injected: no waiting for 16:10."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email import message_from_bytes

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from tests.emulators.chat_webhooks import TOKEN, ChatWebhooksEmulator
from tests.helpers import free_port, wait_until
from tests.storage_fixtures import migrated_database
from tests.test_alerts import DISCORD_PATH, SLACK_PATH, Inbox
from tradebot.alerts import daily, service
from tradebot.alerts.daily import DailySummary, session_due
from tradebot.broker.paper import PaperBroker
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.models import Order
from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, incidents_key
from tradebot.risk.calendar import nyse_hours

MONDAY = date(2026, 3, 2)
AFTER_MONDAY_CLOSE = datetime(2026, 3, 2, 21, 15, tzinfo=UTC)  # 16:15 New York; the close is 16:00
TEN_MINUTES = 600


class Hours:
    """A calendar of given sessions (epoch seconds)."""

    def __init__(self, sessions: dict[date, tuple[datetime, datetime]]) -> None:
        self.sessions = {day: (a.timestamp(), b.timestamp()) for day, (a, b) in sessions.items()}

    def session_hours(self, day: date) -> tuple[float, float] | None:
        return self.sessions.get(day)


def test_a_summary_is_due_after_the_close_and_up_to_a_day_later() -> None:
    hours = Hours({MONDAY: (datetime(2026, 3, 2, 14, 30, tzinfo=UTC), datetime(2026, 3, 2, 21, 0, tzinfo=UTC))})
    assert session_due(datetime(2026, 3, 2, 21, 9, tzinfo=UTC), hours, TEN_MINUTES) is None
    assert session_due(datetime(2026, 3, 2, 21, 10, tzinfo=UTC), hours, TEN_MINUTES) == MONDAY
    assert session_due(datetime(2026, 3, 3, 15, 0, tzinfo=UTC), hours, TEN_MINUTES) == MONDAY  # caught up
    assert session_due(datetime(2026, 3, 3, 21, 10, tzinfo=UTC), hours, TEN_MINUTES) is None  # too late


def test_the_nyse_calendar_knows_holidays_and_early_closes() -> None:
    hours = nyse_hours()
    assert (
        session_due(datetime(2026, 12, 25, 23, 0, tzinfo=UTC), hours, 0) is None
    )  # Christmas, and the 24th was a day before
    assert session_due(datetime(2026, 11, 27, 18, 5, tzinfo=UTC), hours, 0) == date(2026, 11, 27)  # 13:00 close


def test_the_text_says_every_figure() -> None:
    summary = DailySummary(
        MONDAY,
        {"daily_pnl": -3.214, "equity": 99_996.786},
        [("AAPL", 10.0), ("MSFT", -5.0)],
        {"fills": 12, "denied": 2, "rejected": 0, "gaps": 1},
        {"strategy": 1, "started:strategy": 2, "started:storage": 1},
    )
    assert summary.text() == (
        "daily summary 2026-03-02: P&L -$3.21 · equity $99,996.79 · 12 fills, 2 denied, 0 rejected · "
        "positions AAPL 10, MSFT -5 · 1 data gap · workers: strategy down 1×, 3 processes started"
    )


@pytest.fixture
def chat() -> Iterator[ChatWebhooksEmulator]:
    with ChatWebhooksEmulator() as emulator:
        yield emulator


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server (aiosmtpd) and what it received."""
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
async def trading_day(database_url: str, bus: Bus) -> str:
    """Monday's record: two fills and a denial (one fill the Friday before), a gap, an outage, an
    account; the database's DSN."""
    dsn = await migrated_database(database_url, "alerts_daily_test")
    conn = await asyncpg.connect(dsn)
    try:
        rows = [
            ("f1", datetime(2026, 3, 2, 15, 0, tzinfo=UTC), "filled"),
            ("f2", datetime(2026, 3, 2, 16, 0, tzinfo=UTC), "filled"),
            ("d1", datetime(2026, 3, 2, 17, 0, tzinfo=UTC), "denied"),
            ("f0", datetime(2026, 2, 27, 15, 0, tzinfo=UTC), "filled"),
        ]
        await conn.executemany(
            "INSERT INTO fills (id, ts, client_order_id, symbol, status, side, quantity, price, commission) "
            "VALUES ($1, $2, $1, 'AAPL', $3, 'buy', 10, 187.25, 0)",
            rows,
        )
        await conn.execute(
            "INSERT INTO gaps VALUES ('g1', 'AAPL', $1, $1, 'alpaca', 12)", datetime(2026, 3, 2, 18, tzinfo=UTC)
        )
    finally:
        await conn.close()
    broker = PaperBroker(100_000.0)
    at = datetime(2026, 3, 2, 15, tzinfo=UTC)
    broker.execute(
        Order(id="co-1", symbol="AAPL", side="buy", quantity=10, reference_price=187.25, signal_id="s", timestamp=at)
    )
    await bus.redis.set(checkpoint_key(EXECUTION_ROLE, 0), json.dumps(broker.snapshot()))
    for _replica in range(2):  # both replicas see the strategy worker down: one incident
        await daily.record_worker_down(bus.redis, "2026-03-02", "strategy", "alerts:worker_down:strategy")
    return dsn


def summary_settings(settings: Settings, dsn: str, chat: ChatWebhooksEmulator, **extra: object) -> ReadySettings:
    return ReadySettings(
        _env_file=None,
        **settings.model_dump()
        | {
            "database_url": dsn,
            "alert_telegram_token": TOKEN,
            "alert_telegram_chat_id": "-100",
            "alert_telegram_api_url": chat.url,
            "alert_check_s": 0.05,
            **extra,
        },
    )


async def run_workers(settings: ReadySettings, replicas: int, until: object, what: str) -> None:
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(service.run(settings, stop=stop, counters=Counter(), clock=lambda: AFTER_MONDAY_CLOSE))
        for _ in range(replicas)
    ]
    try:
        await wait_until(until, timeout=30, what=what)  # type: ignore[arg-type]
    finally:
        stop.set()
        await asyncio.gather(*workers)


def summaries(chat: ChatWebhooksEmulator) -> list[str]:
    return [text for _, text in chat.messages if text.startswith("daily summary")]


async def test_two_replicas_send_the_summary_once_to_every_channel_and_a_restart_does_not_repeat_it(
    settings: Settings,
    trading_day: str,
    bus: Bus,
    chat: ChatWebhooksEmulator,
    inbox: tuple[Inbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    every_channel = {
        "alert_discord_webhook_url": f"{chat.url}{DISCORD_PATH}",
        "alert_slack_webhook_url": f"{chat.url}{SLACK_PATH}",
        "alert_smtp_host": "127.0.0.1",
        "alert_smtp_port": inbox[1],
        "alert_email_to": "ops@example.com",
    }
    ready = summary_settings(settings, trading_day, chat, **every_channel)
    key = daily.daily_summary_key("2026-03-02")

    async def sent() -> bool:
        return len(summaries(chat)) == 3 and len(inbox[0].messages) == 1 and await bus.redis.get(key) == "sent"

    await run_workers(ready, 2, sent, "the daily summary sent")
    assert sorted(service_name for service_name, _ in chat.messages) == ["discord", "slack", "telegram"]
    text = summaries(chat)[0]
    assert set(summaries(chat)) == {text}
    assert text.startswith("daily summary 2026-03-02: P&L ")
    assert "2 fills, 1 denied, 0 rejected · positions AAPL 10 · 1 data gap · workers: strategy down 1×" in text
    assert message_from_bytes(inbox[0].messages[0])["Subject"].startswith("tradebot: daily summary 2026-03-02")

    # restarted (or killed -9 and restarted): it finds the session's summary sent
    checked = Counter[str]()
    original = daily.session_due

    def counting(*args: object) -> date | None:
        checked["due"] += 1
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(daily, "session_due", counting)
    await run_workers(ready, 1, lambda: checked["due"] >= 3, "three checks of the summary")
    assert len(summaries(chat)) == 3
    assert len(inbox[0].messages) == 1


async def test_a_claim_left_by_a_killed_worker_expires_and_the_summary_is_sent(
    settings: Settings, trading_day: str, bus: Bus, chat: ChatWebhooksEmulator
) -> None:
    key = daily.daily_summary_key("2026-03-02")
    await bus.redis.set(key, "sending:killed-worker", px=300)  # its lease, short for the test
    await run_workers(summary_settings(settings, trading_day, chat), 1, lambda: summaries(chat), "the daily summary")
    assert len(summaries(chat)) == 1
    assert summaries(chat)[0].startswith("daily summary 2026-03-02")


async def test_with_the_summary_off_nothing_is_sent(
    settings: Settings, trading_day: str, bus: Bus, chat: ChatWebhooksEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = summary_settings(settings, trading_day, chat, alert_daily_summary=False)
    beats = Counter[str]()
    original = service.live_roles

    async def counting(*args: object) -> set[str]:
        beats["checks"] += 1
        return await original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "live_roles", counting)
    await run_workers(ready, 1, lambda: beats["checks"] >= 5, "five heartbeat checks")
    assert summaries(chat) == []
    assert await bus.redis.hget(incidents_key("2026-03-02"), "strategy") == "1"


async def test_an_unforeseen_failure_is_logged_each_try_retried_and_shown_until_the_summary_goes_out(
    settings: Settings, trading_day: str, bus: Bus, chat: ChatWebhooksEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(trading_day)
    await conn.execute("ALTER TABLE gaps RENAME TO gaps_away")  # not an outage it knows: UndefinedTableError
    counters = Counter[str]()
    stop = asyncio.Event()
    ready = summary_settings(settings, trading_day, chat)
    worker = asyncio.create_task(service.run(ready, stop=stop, counters=counters, clock=lambda: AFTER_MONDAY_CLOSE))
    try:
        await wait_until(lambda: counters["daily_summary_failing"] >= 2, what="two failed tries of the summary")
        assert summaries(chat) == []
        assert await bus.redis.get(daily.daily_summary_key("2026-03-02")) is None  # the claim handed back
        await conn.execute("ALTER TABLE gaps_away RENAME TO gaps")
        await wait_until(lambda: summaries(chat), what="the summary once the table is back")
        await wait_until(lambda: counters["daily_summary_failing"] == 0, what="the failures reset")
    finally:
        stop.set()
        await worker
        await conn.execute("ALTER TABLE IF EXISTS gaps_away RENAME TO gaps")
        await conn.close()
    assert len(summaries(chat)) == 1
    failed = [record for record in caplog.records if record.getMessage().startswith("daily summary failed")]
    assert len(failed) >= 2
    assert all("UndefinedTableError" in record.getMessage() for record in failed)
    assert failed[0].levelname == "ERROR"
    assert failed[0].exc_info  # the traceback once, not every try
    assert not failed[1].exc_info
