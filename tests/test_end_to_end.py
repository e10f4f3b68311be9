"""`tradebot up` end to end, through real processes: mock ticks → strategy → execution → storage → API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from tests.helpers import free_port, wait_until
from tests.storage_fixtures import assert_quoted
from tradebot.api.routes_account import account_out
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.streams import (
    EXECUTION_ROLE,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    order_streams,
    storage_streams,
    tick_streams,
)
from tradebot.execution.account import read_account
from tradebot.storage.schema import apply_migrations

TICKS = 3000
SYMBOLS = "AAPL,MSFT,NVDA"


def start_system(settings: Settings, api_port: int, log_path) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url or "",
        "API_PORT": str(api_port),
        "DATA_DIR": str(settings.data_dir),
        "SYMBOL_MODE": "custom",
        "SYMBOLS": SYMBOLS,
        "MOCK_MAX_TICKS": str(TICKS),
        "MOCK_TICKS_PER_SECOND": "3000",
        "BUS_BLOCK_MS": "100",
        "LEASE_TTL_MS": "2000",
        "SLIPPAGE_BPS": "2",
        "COMMISSION_PER_SHARE": "0.01",
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tradebot.cli", "up", "--scale", "strategy=2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def minute_bars_from_ticks(rows: list[asyncpg.Record]) -> dict[datetime, dict]:
    """An independent OHLCV aggregation: ticks in (ts, id) order, bucketed by UTC minute."""
    buckets: dict[datetime, list[asyncpg.Record]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (r["ts"], r["id"])):
        buckets[row["ts"].replace(second=0, microsecond=0)].append(row)
    bars = {}
    for start, ticks in buckets.items():
        volume = sum(t["size"] for t in ticks)
        bars[start] = {
            "open": ticks[0]["price"],
            "high": max(t["price"] for t in ticks),
            "low": min(t["price"] for t in ticks),
            "close": ticks[-1]["price"],
            "volume": volume,
            "trade_count": len(ticks),
            "vwap": sum(t["price"] * t["size"] for t in ticks) / volume,
        }
    return bars


async def count(conn: asyncpg.Connection, table: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {table}")


@pytest.mark.timeout(240)
async def test_tradebot_up_runs_the_whole_pipeline(settings: Settings, bus: Bus, clean_database: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await apply_migrations(clean_database)  # so the test can poll tables while `up` starts
    api_port = free_port()
    system = start_system(settings, api_port, tmp_path / "up.log")
    conn = await asyncpg.connect(clean_database)
    try:
        await wait_until(lambda: _stored_all(conn), timeout=120, what=f"{TICKS} ticks stored")
        await wait_until(lambda: _settled(conn, bus, settings), timeout=60, what="the pipeline to drain")
        api = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(base_url=api, timeout=10) as client:
            await wait_until(lambda: _api_up(client), timeout=60, what="the API")
            history = (await client.get("/history/AAPL", params={"timeframe": "1m", "limit": 10000})).json()
            health = (await client.get("/health")).json()
            account = (await client.get("/account")).json()
        rows = await conn.fetch("SELECT id, ts, price, size FROM ticks WHERE symbol = 'AAPL'")
        expected = minute_bars_from_ticks(rows)
        got = {datetime.fromisoformat(bar["timestamp"]).astimezone(UTC): bar for bar in history["bars"]}
        assert got.keys() == expected.keys()
        for start, bar in expected.items():
            assert got[start]["trade_count"] == bar["trade_count"]
            assert got[start]["volume"] == pytest.approx(bar["volume"], rel=1e-9), start
            for field in ("open", "high", "low", "close"):  # mock prices are whole cents
                assert got[start][field] == pytest.approx(bar[field], abs=1e-9), (start, field)
            assert_quoted(got[start]["vwap"], bar["vwap"], 4, (start, "vwap"))
        # the mock feed has finished (MOCK_MAX_TICKS) and left; the others keep beating
        assert {beat["role"] for beat in health["workers"]} >= {"strategy", "execution", "storage"}
        await _assert_account_reconciles(conn, bus)
        assert account == account_out(await read_account(bus.redis), include_closed=False).model_dump()  # type: ignore[arg-type]
        signals, orders = await count(conn, "signals"), await count(conn, "orders")
        assert orders > 0
        assert signals - 3 <= orders <= signals  # only a symbol's first signal, a SELL, has no order
    finally:
        await conn.close()
        system.send_signal(signal.SIGINT)
        code = system.wait(timeout=60)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]


async def _stored_all(conn: asyncpg.Connection) -> bool:
    return await count(conn, "ticks") >= TICKS


async def _settled(conn: asyncpg.Connection, bus: Bus, settings: Settings) -> bool:
    """Every tick through the strategy, every order executed, every event stored."""
    partitions = settings.tick_partitions
    if (
        await bus.backlog(tick_streams(partitions), STRATEGY_ROLE)
        or await bus.backlog(order_streams(partitions), EXECUTION_ROLE)
        or await bus.backlog(storage_streams(partitions), STORAGE_GROUP)
    ):
        return False
    orders = await count(conn, "orders")
    signals = await count(conn, "signals")
    # every order fills; a signal has no order only when it is a symbol's first, a SELL (long only)
    return orders > 0 and signals - 3 <= orders == await count(conn, "fills") <= signals


async def _api_up(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health")).status_code == 200
    except httpx.TransportError:
        return False


async def _assert_account_reconciles(conn: asyncpg.Connection, bus: Bus) -> None:
    """Cash and positions in the broker's account equal what the stored fills add up to."""
    account = await read_account(bus.redis)
    assert account is not None
    fills = await conn.fetch("SELECT symbol, side, quantity, price, commission FROM fills WHERE status = 'filled'")
    cash = account["starting_cash"]
    positions: dict[str, float] = defaultdict(float)
    for fill in fills:
        signed = fill["quantity"] if fill["side"] == "buy" else -fill["quantity"]
        cash -= signed * fill["price"] + fill["commission"]
        positions[fill["symbol"]] += signed
    assert account["cash"] == pytest.approx(cash, abs=1e-6)
    held = {symbol: p["quantity"] for symbol, p in account["positions"].items() if p["quantity"]}
    assert held == {symbol: qty for symbol, qty in positions.items() if qty}
