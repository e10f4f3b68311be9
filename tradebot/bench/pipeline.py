"""The running pipeline as the benchmark sees it: a clean slate, readiness, backlog and stream times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from redis.exceptions import ResponseError

from tradebot.bench.target import BENCH_DATABASE, BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import get_many
from tradebot.common.bus.wire import entry_events, entry_ms
from tradebot.common.db import create_pool, recreate_database
from tradebot.common.streams import (
    EXECUTION_ROLE,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    lease_key,
    order_streams,
    storage_streams,
    tick_streams,
)
from tradebot.storage.schema import apply_migrations

POLL_S = 0.1
PAGE = 10_000  # entries per XRANGE when counting a stream's events


class BenchTimeoutError(RuntimeError):
    """A bounded wait ran out: the pipeline did not get where the benchmark needed it."""


async def reset(target: BenchTarget, bus: Bus) -> None:
    """Empty the bench Redis database and recreate the bench PostgreSQL database (migrated)."""
    await bus.redis.flushdb()
    assert target.settings.database_url
    await recreate_database(target.settings.database_url, BENCH_DATABASE)
    await apply_migrations(target.database_url)


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; raise BenchTimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise BenchTimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def consumers_ready(bus: Bus, partitions: int) -> bool:
    """Every tick partition (by strategy and storage) and the account are leased, and storage has its groups."""
    keys = [lease_key(role, p) for role in (STRATEGY_ROLE, STORAGE_GROUP) for p in range(partitions)]
    keys.append(lease_key(EXECUTION_ROLE, 0))
    if not all(await get_many(bus.redis, keys)):
        return False
    last_stream = storage_streams(partitions)[-1]  # storage creates its groups in this order
    try:
        groups = await bus.redis.xinfo_groups(last_stream)
    except ResponseError:  # the stream does not exist yet
        return False
    return any(group["name"] == STORAGE_GROUP for group in groups)


async def strategy_backlog(bus: Bus, partitions: int) -> int:
    """Ticks the strategy has not yet applied."""
    return await bus.backlog(tick_streams(partitions), STRATEGY_ROLE)


async def pipeline_backlog(bus: Bus, partitions: int) -> dict[str, int]:
    """What each role still has to do."""
    return {
        "strategy": await strategy_backlog(bus, partitions),
        "execution": await bus.backlog(order_streams(partitions), EXECUTION_ROLE),
        "storage": await bus.backlog(storage_streams(partitions), STORAGE_GROUP),
    }


async def stream_time_span(bus: Bus, streams: list[str]) -> tuple[int, int, int]:
    """(events, first entry ms, last entry ms) over several streams: a tick-batch entry counts its ticks."""
    entries, first, last = 0, None, None
    for stream in streams:
        start = "-"
        while True:
            page = await bus.redis.xrange(stream, min=start, count=PAGE)
            entries += sum(entry_events(fields) for _, fields in page)
            if len(page) < PAGE:
                break
            start = "(" + page[-1][0]
        head = await bus.redis.xrange(stream, count=1)
        tail = await bus.redis.xrevrange(stream, count=1)
        if head:
            first = min(entry_ms(head[0][0]), first or entry_ms(head[0][0]))
            last = max(entry_ms(tail[0][0]), last or 0)
    return entries, first or 0, last or 0


class TableCounter:
    """Counts the rows of tradebot tables over a connection of its own (``async with``)."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> TableCounter:
        self._pool = await create_pool(self.database_url, max_size=1, application_name="tradebot-bench")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def backend_pid(self) -> int:
        """The PostgreSQL server process serving this counter (its CPU is the bench's, not the pipeline's)."""
        assert self._pool is not None
        return int(await self._pool.fetchval("SELECT pg_backend_pid()"))

    async def count(self, table: str = "ticks") -> int:
        """Rows in ``table`` (one of the tradebot tables) right now."""
        assert self._pool is not None
        assert table.isidentifier()
        return int(await self._pool.fetchval(f"SELECT count(*) FROM {table}"))
