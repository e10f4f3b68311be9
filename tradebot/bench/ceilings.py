"""Ceilings: what the same Redis and PostgreSQL do with no tradebot code in the way, measured in the same run.

Shared machines move absolute figures by ±30 % from run to run, so every throughput figure is
also shown as a share of the ceiling it is bound by, measured minutes apart on the same servers:

* raw XADD: one tick's wire fields, already encoded, appended in pipelined batches;
* raw XREADGROUP + XACK: those entries read by one consumer in batches and acked, never decoded;
* raw COPY: ready-made tick rows COPYed (binary, asyncpg) into a temporary table without indexes.

A pipeline figure is bound by the lowest ceiling of the steps each tick takes (every tick is
XADDed, read and acked by storage, and COPYed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from tradebot.bench.report import Figure
from tradebot.bench.target import BENCH_DATABASE, BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import encode
from tradebot.common.db import recreate_database
from tradebot.common.models import Tick
from tradebot.storage.writer import TABLES

STREAM = "bench.ceiling"
GROUP = "bench-ceiling"
BATCH = 500
MESSAGES = 20_000
COPY_ROWS = 50_000


@dataclass(frozen=True)
class Ceilings:
    """Entries or rows per second of the bare servers."""

    xadd: float
    read_ack: float
    copy: float

    def pipeline(self) -> tuple[float, str]:
        """The ceiling of a stored tick: the lowest of its steps, and which one it is."""
        return min((self.xadd, "raw XADD"), (self.read_ack, "raw XREADGROUP+XACK"), (self.copy, "raw COPY"))


async def raw_redis(redis_url: str, messages: int, batch: int = BATCH) -> tuple[float, float]:
    """XADD and XREADGROUP+XACK entries/s of one tick's pre-encoded fields, one client, batches of ``batch``."""
    stamp = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    fields = encode(Tick.create("AAPL", 200.0, 100, stamp, trade_id=1))
    bus = Bus(connect(redis_url))
    redis = bus.redis
    try:
        await redis.delete(STREAM)
        await bus.ensure_group(STREAM, GROUP)
        messages = max(batch, messages // batch * batch)
        began = time.perf_counter()
        for _ in range(0, messages, batch):
            await bus.publish_fields(STREAM, [fields] * batch)
        xadd = messages / (time.perf_counter() - began)
        began, read = time.perf_counter(), 0
        while read < messages:
            reply = await redis.xreadgroup(GROUP, "ceiling", {STREAM: ">"}, count=batch)
            ids = [entry_id for _, rows in reply for entry_id, _ in rows]
            await redis.xack(STREAM, GROUP, *ids)
            read += len(ids)
        read_ack = messages / (time.perf_counter() - began)
        await redis.delete(STREAM)
    finally:
        await bus.close()
    return xadd, read_ack


async def raw_copy(database_url: str, rows: int, batch: int = BATCH) -> float:
    """Rows/s of binary COPY of tick rows into an index-less temporary table, one connection."""
    table = TABLES[Tick]
    stamp = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    sample = [table.row(Tick.create("AAPL", 200.0, 100, stamp, source="bench", trade_id=i)) for i in range(batch)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE bench_ceiling (symbol text NOT NULL, ts timestamptz NOT NULL, id text NOT NULL, "
            "price double precision NOT NULL, size double precision NOT NULL, source text NOT NULL)"
        )
        rows = max(batch, rows // batch * batch)
        began = time.perf_counter()
        for _ in range(0, rows, batch):
            await conn.copy_records_to_table("bench_ceiling", records=sample, columns=table.columns)
        return rows / (time.perf_counter() - began)
    finally:
        await conn.close()


async def measure_ceilings(target: BenchTarget, messages: int = MESSAGES, rows: int = COPY_ROWS) -> Ceilings:
    """The three ceilings, one after the other, on the bench's own Redis and PostgreSQL databases."""
    assert target.settings.database_url
    await recreate_database(target.settings.database_url, BENCH_DATABASE)
    xadd, read_ack = await raw_redis(target.redis_url, messages)
    return Ceilings(xadd, read_ack, await raw_copy(target.database_url, rows))


def ceiling_figures(ceilings: Ceilings, section: str) -> list[Figure]:
    """The ceilings themselves, as the first figures of the ``section`` they were measured for."""
    method = {
        "raw XADD": f"copies of one tick's encoded fields, pipelined batches of {BATCH}, one client",
        "raw XREADGROUP+XACK": f"those entries read (COUNT {BATCH}) and acked per batch by one consumer, not decoded",
        "raw COPY": f"ready tick rows, binary COPY in batches of {BATCH} into an index-less temp table, one connection",
    }
    values = {"raw XADD": ceilings.xadd, "raw XREADGROUP+XACK": ceilings.read_ack, "raw COPY": ceilings.copy}
    return [Figure(section, f"ceiling: {name}", value, "/s", method[name]) for name, value in values.items()]


# Which ceiling bounds which figure: (section, start of the figure's name) -> ceiling name.
BOUNDS = {
    ("bus", "publish"): "raw XADD",
    ("bus", "consume"): "raw XREADGROUP+XACK",
    ("end to end", "ticks stored/s"): "pipeline",
    ("end to end", "ticks published/s"): "raw XADD",
    ("storage", "ingest, write_events"): "raw COPY",
    ("storage", "ingest, storage worker"): "pipeline",
}


def with_ceilings(figures: list[Figure], ceilings: Ceilings) -> list[Figure]:
    """Each bounded figure with its ceiling and its share of it (in its detail and its method)."""
    named = {"raw XADD": ceilings.xadd, "raw XREADGROUP+XACK": ceilings.read_ack, "raw COPY": ceilings.copy}
    shown = []
    for figure in figures:
        bound = next(
            (c for (s, start), c in BOUNDS.items() if figure.section == s and figure.name.startswith(start)), None
        )
        if bound is None or figure.value is None or not figure.unit.endswith("/s"):  # a share is no rate
            shown.append(figure)
            continue
        ceiling, name = ceilings.pipeline() if bound == "pipeline" else (named[bound], bound)
        share = 100 * figure.value / ceiling
        detail = {**figure.detail, "ceiling": name, "ceiling_per_s": ceiling, "percent_of_ceiling": share}
        method = f"= {share:.0f} % of {name} ({ceiling:,.0f}/s, same run). {figure.method}"
        shown.append(replace(figure, method=method, detail=detail))
    return shown
