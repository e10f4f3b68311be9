"""``tradebot reset``: back to a fresh start, with or without the market history.

A reset empties tradebot's Redis database (streams, the paper account, the mock feed's cursor,
strategy checkpoints, leases: FLUSHDB, so give tradebot a Redis database of its own) and the
trading tables (signals, orders, fills, and any other table but the migrations' record). With
``keep_history`` the ticks and bars stay. It refuses while workers are alive: a running worker
would write its state straight back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from tradebot.common.bus.connection import connect
from tradebot.common.streams import HEARTBEAT_PATTERN
from tradebot.storage.buckets import WIDTHS
from tradebot.storage.timescale import refresh_aggregate, refreshes_paused

# The stored history and what is kept from it (the kept and mixed series: emptied apart from their
# ticks and bars, closed buckets would be read without their stored minutes).
HISTORY_TABLES = (
    "ticks",
    "bars",
    "symbol_sources",
    "ohlcv_kept_1m",
    "ohlcv_kept_1d",
    "ohlcv_mixed_1h",
    "ohlcv_mixed_1d",
    "history_versions",
)
KEPT_TABLES = ("schema_migrations",)


class StillRunningError(RuntimeError):
    """Workers are alive; a reset now would be undone by them."""


@dataclass(frozen=True)
class ResetPlan:
    """What a reset will delete, for the confirmation prompt."""

    redis_keys: int
    tables: dict[str, int]  # table -> rows

    def describe(self) -> str:
        """A few lines a person reads before saying yes."""
        rows = ", ".join(f"{table} ({count:,} rows)" for table, count in self.tables.items()) or "none"
        return (
            f"  Redis:      {self.redis_keys:,} keys (streams, paper account, mock feed cursor, strategy state)\n"
            f"  PostgreSQL: {rows}"
        )


async def live_workers(client: aioredis.Redis) -> list[str]:
    """Heartbeat keys of workers that are still alive."""
    return sorted([key async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=500)])


async def _tables(conn: asyncpg.Connection, keep_history: bool) -> list[str]:
    kept = set(KEPT_TABLES) | (set(HISTORY_TABLES) if keep_history else set())
    names = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
    return [row["tablename"] for row in names if row["tablename"] not in kept]


async def plan_reset(client: aioredis.Redis, conn: asyncpg.Connection, *, keep_history: bool) -> ResetPlan:
    """What ``reset`` would delete; raises StillRunningError while workers are alive."""
    alive = await live_workers(client)
    if alive:
        shown = ", ".join(key.split(":", 1)[1] for key in alive[:5])
        raise StillRunningError(f"{len(alive)} tradebot workers are running ({shown}); stop them (Ctrl-C) first")
    counts = {
        table: await conn.fetchval(f'SELECT count(*) FROM "{table}"') for table in await _tables(conn, keep_history)
    }
    return ResetPlan(redis_keys=await client.dbsize(), tables=counts)


async def reset(client: aioredis.Redis, conn: asyncpg.Connection, *, keep_history: bool) -> None:
    """Delete the state (and, without ``keep_history``, the ticks and bars)."""
    tables = await _tables(conn, keep_history)
    async with refreshes_paused(conn):
        if tables:
            await conn.execute("TRUNCATE " + ", ".join(f'"{table}"' for table in tables))
        if not keep_history:
            await refresh_rollups(conn)
    await client.flushdb()


async def refresh_rollups(conn: asyncpg.Connection) -> None:
    """TimescaleDB keeps materialized rollups of deleted ticks: refreshing them over all time brings
    them in line with the ticks left (finest first: each level is built from the one below). Plain
    PostgreSQL has none. Call it inside ``refreshes_paused``, around the delete too."""
    if not await conn.fetchval("SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL"):
        return
    views = {
        row["view_name"]
        for row in await conn.fetch("SELECT view_name FROM timescaledb_information.continuous_aggregates")
    }
    for timeframe in WIDTHS:  # finest first
        if f"ohlcv_{timeframe}" in views:
            await refresh_aggregate(conn, f"ohlcv_{timeframe}")


def run_reset(redis_url: str, database_url: str, *, keep_history: bool, confirm: Callable[[ResetPlan], bool]) -> bool:
    """Plan, ask ``confirm``, reset; False when the answer was no. Raises StillRunningError."""

    async def main() -> bool:
        client = connect(redis_url)
        conn = await asyncpg.connect(database_url)
        try:
            plan = await plan_reset(client, conn, keep_history=keep_history)
            if not confirm(plan):
                return False
            await reset(client, conn, keep_history=keep_history)
            return True
        finally:
            await conn.close()
            await client.aclose()

    return asyncio.run(main())
