"""``tradebot data drop --source mock``: remove the ticks and bars of one source (e.g. mock data that
got in the way of a backfill), leaving every other source and the trading records alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from tradebot.maintenance.reset import refresh_rollups
from tradebot.storage.timescale import refreshes_paused


async def source_rows(conn: asyncpg.Connection, source: str, symbol: str | None) -> dict[str, int]:
    """How many ticks and bars of ``source`` (and ``symbol``, if given) are stored."""
    where, params = _where(source, symbol)
    return {
        table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *params)
        for table in ("ticks", "bars")
    }


async def drop_source(conn: asyncpg.Connection, source: str, symbol: str | None = None) -> dict[str, int]:
    """Delete the ticks and bars of ``source`` in one transaction; returns the rows deleted per table."""
    where, params = _where(source, symbol)
    deleted = {}
    async with refreshes_paused(conn):
        async with conn.transaction():
            # the symbols' history version rows first, in one order (storage/writer.py)
            await conn.execute(
                f"SELECT history_versions_lock(array(SELECT symbol FROM symbol_sources WHERE {where}))", *params
            )
            for table in ("ticks", "bars", "symbol_sources"):
                status = await conn.execute(f"DELETE FROM {table} WHERE {where}", *params)
                deleted[table] = int(status.rsplit(" ", 1)[-1])
        if deleted["ticks"]:
            await refresh_rollups(conn)  # TimescaleDB's rollups still hold the deleted ticks
    return {table: deleted[table] for table in ("ticks", "bars")}


def _where(source: str, symbol: str | None) -> tuple[str, list[str]]:
    return ("source = $1 AND symbol = $2", [source, symbol]) if symbol else ("source = $1", [source])


def run_drop(
    database_url: str, source: str, symbol: str | None, confirm: Callable[[dict[str, int]], bool]
) -> dict[str, int] | None:
    """Count, ask ``confirm``, delete; None when the answer was no."""

    async def main() -> dict[str, int] | None:
        conn = await asyncpg.connect(database_url)
        try:
            if not confirm(await source_rows(conn, source, symbol)):
                return None
            return await drop_source(conn, source, symbol)
        finally:
            await conn.close()

    return asyncio.run(main())
