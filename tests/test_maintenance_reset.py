"""tradebot reset: everything gone, or the ticks and bars kept; never while workers run; asks first."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime

import asyncpg
import pytest
from typer.testing import CliRunner

from tests.storage_fixtures import migrated_database
from tradebot.cli import app
from tradebot.common.bus import Bus
from tradebot.common.models import Bar, Order, OrderEvent, Signal, Tick
from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, heartbeat_key, producer_cursor_key, signal_stream
from tradebot.maintenance.reset import StillRunningError, plan_reset, reset
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import refresh_aggregate
from tradebot.storage.writer import write_events

NOW = datetime(2026, 12, 1, 15, tzinfo=UTC)


async def _fill_everything(bus: Bus, dsn: str) -> None:
    await apply_migrations(dsn)
    signal = Signal(
        id="s1", symbol="AAPL", timestamp=NOW, side="buy", price=220, confidence=1, strategy="m", tick_id="t"
    )
    order = Order.from_signal(signal, 10)
    events = [
        Tick.create("AAPL", 220.0, 10, NOW, trade_id=1),
        Bar(
            id="b",
            symbol="AAPL",
            timestamp=NOW,
            timeframe="1m",
            open=1,
            high=1,
            low=1,
            close=1,
            volume=1,
            trade_count=1,
        ),
        signal,
        order,
        OrderEvent(
            id="f1",
            symbol="AAPL",
            timestamp=NOW,
            client_order_id=order.id,
            status="filled",
            side="buy",
            quantity=10,
            price=220.02,
            commission=0.05,
        ),
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, events)
    finally:
        await conn.close()
    await bus.publish([(signal_stream(0), signal)])
    await bus.redis.set(checkpoint_key(EXECUTION_ROLE, 0), json.dumps({"starting_cash": 100_000}))
    await bus.redis.set(producer_cursor_key("mock"), "{}")


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in ("ticks", "bars", "signals", "orders", "fills")
        }
    finally:
        await conn.close()


@pytest.mark.parametrize("keep_history", [False, True])
async def test_reset_deletes_the_state_and_the_history_unless_kept(
    bus: Bus, clean_database: str, keep_history: bool
) -> None:
    await _fill_everything(bus, clean_database)
    conn = await asyncpg.connect(clean_database)
    try:
        plan = await plan_reset(bus.redis, conn, keep_history=keep_history)
        assert plan.redis_keys == 3
        assert plan.tables["fills"] == 1
        assert ("ticks" in plan.tables) is not keep_history
        # what is kept from the history (kept and mixed series) stays with it, or goes with it
        derived = {"ohlcv_kept_1m", "ohlcv_kept_1d", "ohlcv_mixed_1h", "ohlcv_mixed_1d"}
        assert (derived & plan.tables.keys()) == (set() if keep_history else derived)
        await reset(bus.redis, conn, keep_history=keep_history)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0  # the schema stays
    finally:
        await conn.close()
    kept = 1 if keep_history else 0
    assert await _counts(clean_database) == {"ticks": kept, "bars": kept, "signals": 0, "orders": 0, "fills": 0}
    assert await bus.redis.dbsize() == 0


async def test_reset_refuses_while_workers_are_alive(bus: Bus, clean_database: str) -> None:
    await _fill_everything(bus, clean_database)
    await bus.redis.set(heartbeat_key("strategy", "host-1"), "{}", ex=30)
    conn = await asyncpg.connect(clean_database)
    try:
        with pytest.raises(StillRunningError, match=r"1 tradebot workers are running .*strategy:host-1.*stop them"):
            await plan_reset(bus.redis, conn, keep_history=False)
    finally:
        await conn.close()
    assert (await _counts(clean_database))["fills"] == 1


async def _run(args: list[str], redis_url: str, dsn: str, answer: str = "") -> tuple[int, str]:
    """The command in a thread of its own (it runs its own event loop)."""
    env = {"REDIS_URL": redis_url, "DATABASE_URL": dsn}
    result = await asyncio.to_thread(CliRunner().invoke, app, args, input=answer, env=env)
    return result.exit_code, result.output


async def test_the_command_asks_first_and_yes_skips_the_question(bus: Bus, clean_database: str, redis_url: str) -> None:
    await _fill_everything(bus, clean_database)
    code, output = await _run(["reset"], redis_url, clean_database, answer="n\n")
    assert code == 1
    assert "fills (1 rows)" in output
    assert "nothing deleted" in output
    assert (await _counts(clean_database))["fills"] == 1
    code, output = await _run(["reset", "--yes", "--keep-history"], redis_url, clean_database)
    assert code == 0, output
    assert "kept:       ticks and bars" in output
    assert "reset done" in output
    assert await _counts(clean_database) == {"ticks": 1, "bars": 1, "signals": 0, "orders": 0, "fills": 0}


TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")


@pytest.mark.timescale
@pytest.mark.skipif(not TIMESCALE_DSN, reason="needs TEST_TIMESCALE_DSN")
async def test_reset_empties_the_timescale_rollups_too(bus: Bus) -> None:
    assert TIMESCALE_DSN
    dsn = await migrated_database(TIMESCALE_DSN, "reset_timescale_test")
    await _fill_everything(bus, dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await refresh_aggregate(conn, "ohlcv_1m")  # the policy's own first refresh may be running
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_1m") == 1
        await reset(bus.redis, conn, keep_history=False)
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_1m") == 0
        assert await conn.fetchval("SELECT count(*) FROM ohlcv_1d") == 0
    finally:
        await conn.close()
