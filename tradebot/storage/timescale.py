"""TimescaleDB specifics: chunk sizing, the values migrations are rendered with, mode, backfill help.

Sizing rule (Timescale's "best practices for time partitioning"): choose ``chunk_time_interval``
so that one chunk of each actively written hypertable, indexes included, fits in 25% of main
memory. We estimate a day's bytes from the symbol count and measured bytes per row, then take the
longest candidate interval that fits; ``CHUNK_INTERVAL`` overrides the ticks' interval.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import asyncpg

from tradebot.common.config import Settings
from tradebot.common.db import Executor, connection

log = logging.getLogger(__name__)

Mode = Literal["timescaledb", "postgresql"]

MEMORY_SHARE = 0.25
# Heap row plus primary-key entry, measured on the benchmark table (pg_total_relation_size / rows).
TICK_ROW_BYTES = 170
BAR_ROW_BYTES = 220
# A liquid US stock prints 10^4-10^5 trades a day on a consolidated feed; size for the busy end.
TICKS_PER_SYMBOL_DAY = 50_000
BARS_PER_SYMBOL_DAY = 24 * 60 + 1  # 1-minute bars around the clock plus a daily bar: an upper bound
TICK_INTERVALS = (("1 day", 1.0), ("6 hours", 0.25), ("1 hour", 1 / 24))
BAR_INTERVALS = (("7 days", 7.0), ("1 day", 1.0))
EVENTS_INTERVAL = "30 days"  # signals, orders, fills: a few rows a day per symbol


def chunk_interval_for(bytes_per_day: float, memory_bytes: int, candidates: Sequence[tuple[str, float]]) -> str:
    """The longest candidate whose chunk (``bytes_per_day`` x its days) fits in 25% of memory."""
    budget = memory_bytes * MEMORY_SHARE
    for label, days in candidates:
        if bytes_per_day * days <= budget:
            return label
    return candidates[-1][0]


def physical_memory_bytes() -> int:
    """Main memory of this host (the database is assumed local; set CHUNK_INTERVAL otherwise)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class TimescaleOptions:
    """Values the TimescaleDB migrations are rendered with (PostgreSQL interval strings)."""

    ticks_chunk_interval: str = "1 day"
    bars_chunk_interval: str = "7 days"
    events_chunk_interval: str = EVENTS_INTERVAL
    compress_after: str = "7 days"
    tick_retention: str | None = None
    refresh_1m_start_offset: str = "2 days"

    @classmethod
    def from_settings(cls, settings: Settings, memory_bytes: int | None = None) -> TimescaleOptions:
        """Options sized by the rule above for the configured symbol count, with overrides applied."""
        memory = memory_bytes or physical_memory_bytes()
        symbols = len(settings.symbols) or settings.max_symbols
        ticks = chunk_interval_for(symbols * TICKS_PER_SYMBOL_DAY * TICK_ROW_BYTES, memory, TICK_INTERVALS)
        bars = chunk_interval_for(symbols * BARS_PER_SYMBOL_DAY * BAR_ROW_BYTES, memory, BAR_INTERVALS)
        return cls(
            ticks_chunk_interval=settings.chunk_interval or ticks,
            bars_chunk_interval=bars,
            compress_after=settings.compress_after,
            tick_retention=settings.tick_retention,
        )

    def template_values(self) -> dict[str, str | None]:
        """Placeholder name -> value, for rendering migration files."""
        return asdict(self)


async def database_mode(executor: Executor) -> Mode:
    """'timescaledb' when the OHLCV rollups exist (the Timescale migrations ran), else 'postgresql'."""
    async with connection(executor) as conn:
        rollups = await conn.fetchval("SELECT to_regclass('ohlcv_1m') IS NOT NULL")
    return "timescaledb" if rollups else "postgresql"


async def _policy_jobs(conn: asyncpg.Connection, proc_name: str, tables: Sequence[str] | None = None) -> list[int]:
    """The scheduled policy jobs running ``proc_name`` (on ``tables``, when given)."""
    if not await conn.fetchval("SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL"):
        return []
    rows = await conn.fetch(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = $1 AND scheduled "
        "AND ($2::text[] IS NULL OR hypertable_name = ANY($2::text[]))",
        proc_name,
        None if tables is None else list(tables),
    )
    return [row["job_id"] for row in rows]


@asynccontextmanager
async def _jobs_paused(
    executor: Executor, jobs_of: str, tables: Sequence[str] | None = None
) -> AsyncIterator[list[int]]:
    async with connection(executor) as conn:
        jobs = await _policy_jobs(conn, jobs_of, tables)
        for job_id in jobs:
            await conn.execute("SELECT alter_job($1, scheduled => false)", job_id)
    if jobs:
        log.info("%s paused (jobs %s)", jobs_of, jobs)
    try:
        yield jobs
    finally:
        async with connection(executor) as conn:
            for job_id in jobs:
                await conn.execute("SELECT alter_job($1, scheduled => true)", job_id)
        if jobs:
            log.info("%s resumed", jobs_of)


@asynccontextmanager
async def compression_paused(executor: Executor, tables: Sequence[str] = ("ticks", "bars")) -> AsyncIterator[None]:
    """Pause the compression policies of ``tables`` for a bulk backfill; no-op on plain PostgreSQL.

    Inserting into already compressed chunks works on TimescaleDB >= 2.11 (unique checks decompress
    the affected segments), but a bulk backfill is faster with the policy paused: the chunks it
    writes stay uncompressed until the policy resumes and compresses them in one pass.
    """
    async with _jobs_paused(executor, "policy_compression", tables):
        yield


# A policy job's worker shows in pg_stat_activity under its job's name from the moment it is forked
# (its backend type) until it exits, between its transactions too.
_REFRESH_RUNNING = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN timescaledb_information.jobs j "
    "ON j.application_name IN (a.backend_type, a.application_name) "
    "WHERE j.proc_name = 'policy_refresh_continuous_aggregate' AND a.datname = current_database())"
)


@asynccontextmanager
async def refreshes_paused(executor: Executor, poll: float = 0.1) -> AsyncIterator[None]:
    """Pause the rollups' refresh policies and wait for a refresh job still running to end; no-op on
    plain PostgreSQL. For deleting ticks: a policy job that read the ticks before they went writes
    their rollup rows back after our own refresh emptied them (CI saw a daily row come back after
    ``tradebot reset`` about once in six runs)."""
    async with _jobs_paused(executor, "policy_refresh_continuous_aggregate") as jobs:
        if jobs:
            async with connection(executor) as conn:
                for polls in itertools.count():
                    if not await conn.fetchval(_REFRESH_RUNNING):
                        break
                    if polls == 0:
                        log.info("waiting for a running rollup refresh to finish")
                    await asyncio.sleep(poll)
        yield


# The timeframes whose rollups bars query runs on its generic plan. Planned per request (PostgreSQL
# keeps choosing custom plans for it), the 1m query's plan cost ~1.2 ms of its ~6 ms of backend CPU on
# the bench's 10M-tick table, for the same plan every time (an index range over one materialized
# chunk, the real-time part past the watermark); at 5m, 1h and 1d the generic plan saved nothing.
# Results do not depend on the plan, and TimescaleDB fixes the watermark into either kind; see
# docs/BENCHMARKS.md "Eighth round, tsdb".
GENERIC_PLAN_TIMEFRAMES = ("1m",)


@asynccontextmanager
async def generic_plans(conn: asyncpg.Connection, wanted: bool) -> AsyncIterator[None]:
    """With ``wanted``, the statements inside run in a transaction in which prepared statements use
    their generic plan (planned once per connection, not per execution); otherwise as they are."""
    if not wanted:
        yield
        return
    # BEGIN and the setting as one simple query: one round trip (asyncpg's transaction() sends
    # BEGIN alone). Read-only statements: a commit and a rollback end it alike.
    await conn.execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


# TimescaleDB 2.2x refreshes a window in small batches of buckets by default (each its own DELETE
# and INSERT on the materialization): over the bench's three years of minutes that was >13 minutes
# for 2M ticks, against under 10 s as one batch. "buckets_per_batch": 0 makes the window one batch;
# versions before the ``options`` argument refresh in one batch anyway.
ONE_BATCH = '{"buckets_per_batch": 0}'


async def _refresh_takes_options(conn: asyncpg.Connection) -> bool:
    takes: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'refresh_continuous_aggregate' "
        "AND 'options' = ANY(proargnames))"
    )
    return takes


# Over a large window the planner groups the refresh with a hash aggregate, which writes the
# materialization's rows in hash order: after a refresh over all time one symbol's 1,000
# consecutive minutes lay on ~900 heap pages (the bench's 2M-tick table), a page read per bar of
# every /history 1m request. Grouped by sorting instead (each chunk along the ticks' primary key,
# then merged), the rows are written in (symbol, bucket) order and the same read touches ~25 pages;
# see docs/BENCHMARKS.md "Fifth round, TimescaleDB history". Only this session's refresh.
SORTED_REFRESH = "SET enable_hashagg = off"


async def refresh_aggregate(conn: asyncpg.Connection, view: str, attempts: int = 100) -> None:
    """Refresh a continuous aggregate over all time, in one batch, its rows written in (symbol,
    bucket) order. A refresh already running on its window (the refresh policy's background job,
    which starts as soon as the policy exists) makes this one fail with LockNotAvailableError
    instead of waiting, so wait for it to end and try again."""
    options = f", options => '{ONE_BATCH}'" if await _refresh_takes_options(conn) else ""
    await conn.execute(SORTED_REFRESH)
    try:
        for attempt in range(1, attempts + 1):
            try:
                await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL{options})")
                return
            except asyncpg.LockNotAvailableError:
                if attempt == attempts:
                    raise
                if attempt == 1:
                    log.info("%s: a refresh is already running; waiting for it to finish", view)
                await asyncio.sleep(0.1)
    finally:
        await conn.execute("RESET enable_hashagg")
