"""Idempotent batch writes: COPY into a staging table, then INSERT ... ON CONFLICT, in one transaction.

Each table's conflict target is the event's natural key, so a redelivered batch writes nothing new.
Ticks, signals, orders and order events are immutable: a repeat is skipped (DO NOTHING). Bars are
the exception: a provider may correct a bar it sent before (late trades), so a bar with the same
(symbol, timeframe, ts, source) replaces the stored one, but only when its ``version`` is larger:
whatever order the versions arrive in (a correction reclaimed after a crash, two storage workers,
a backfill racing the live feed), the newest is what stays. Rows are inserted in key order so two
workers writing overlapping batches lock in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from tradebot.common.db import Executor, connection
from tradebot.common.models import (
    Bar,
    ControlEvent,
    EquitySample,
    Event,
    Gap,
    Order,
    OrderChange,
    OrderEvent,
    Signal,
    Tick,
)

BACKFILL_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Table:
    """How one event type maps onto its table."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    row: Callable[[Any], tuple[Any, ...]]
    version: str | None = None  # a row replaces a stored one with the same key only if this is larger

    @property
    def staging(self) -> str:
        return f"staging_{self.name}"

    def key_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The natural-key values of a row."""
        return tuple(row[self.columns.index(column)] for column in self.key)

    def newer(self, row: tuple[Any, ...], than: tuple[Any, ...]) -> bool:
        """Whether ``row`` replaces ``than`` (same key): only a versioned table's larger version does."""
        if self.version is None:
            return False
        index = self.columns.index(self.version)
        return bool(row[index] > than[index])

    def insert_sql(self) -> str:
        """INSERT from the staging table, skipping existing keys (or, if versioned, replacing older versions).

        A versioned insert returns how many rows are new or changed in value: a newer version with
        the same values still takes its place (so an older one arriving later cannot win), but it
        is not counted as written. The ``before`` snapshot is the rows as the statement found them.
        """
        columns, key = ", ".join(self.columns), ", ".join(self.key)
        insert = (
            f"INSERT INTO {self.name} ({columns}) SELECT {columns} FROM {self.staging} "
            f"ORDER BY {key} ON CONFLICT ({key}) "
        )
        if self.version is None:
            return insert + "DO NOTHING"
        values = [c for c in self.columns if c not in self.key and c != self.version]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*values, self.version))
        stored, joined = ", ".join(f"t.{c}" for c in values), " AND ".join(f"t.{c} = s.{c}" for c in self.key)
        return (
            f"WITH before AS (SELECT {', '.join(f't.{c}' for c in self.key)}, ({stored}) AS v "
            f"FROM {self.name} t JOIN {self.staging} s ON {joined}), "
            f"written AS ({insert}DO UPDATE SET {assignments} "
            f"WHERE {self.name}.{self.version} < EXCLUDED.{self.version} RETURNING {key}, ({', '.join(values)}) AS v) "
            f"SELECT count(*) FROM written w LEFT JOIN before b USING ({key}) WHERE b.v IS DISTINCT FROM w.v"
        )


TABLES: dict[type[Event], Table] = {
    Tick: Table(
        "ticks",
        ("symbol", "ts", "id", "price", "size", "source"),
        ("symbol", "ts", "id"),
        lambda t: (t.symbol, t.timestamp, t.id, t.price, t.size, t.source),
    ),
    Bar: Table(
        "bars",
        (
            "symbol",
            "timeframe",
            "ts",
            "source",
            "id",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "trade_count",
            "vwap",
            "version",
        ),
        ("symbol", "timeframe", "ts", "source"),
        lambda b: (
            b.symbol,
            b.timeframe,
            b.timestamp,
            b.source,
            b.id,
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            b.trade_count,
            b.vwap,
            b.version,
        ),
        version="version",
    ),
    Signal: Table(
        "signals",
        ("id", "ts", "symbol", "side", "price", "confidence", "strategy", "tick_id"),
        ("id", "ts"),
        lambda s: (s.id, s.timestamp, s.symbol, s.side, s.price, s.confidence, s.strategy, s.tick_id),
    ),
    Order: Table(
        "orders",
        ("id", "ts", "symbol", "side", "quantity", "order_type", "signal_id", "strategy"),
        ("id", "ts"),
        lambda o: (o.id, o.timestamp, o.symbol, o.side, o.quantity, o.order_type, o.signal_id, o.strategy),
    ),
    OrderChange: Table(
        "order_changes",
        ("id", "ts", "symbol", "action", "target", "quantity", "limit_price", "stop_price", "strategy"),
        ("id", "ts"),
        lambda c: (
            c.id,
            c.timestamp,
            c.symbol,
            c.action,
            c.target,
            c.quantity,
            c.limit_price,
            c.stop_price,
            c.strategy,
        ),
    ),
    OrderEvent: Table(
        "fills",
        ("id", "ts", "client_order_id", "symbol", "status", "side", "quantity", "price", "commission", "reason"),
        ("id", "ts"),
        lambda e: (
            e.id,
            e.timestamp,
            e.client_order_id,
            e.symbol,
            e.status,
            e.side,
            e.quantity,
            e.price,
            e.commission,
            e.reason,
        ),
    ),
    Gap: Table(
        "gaps",
        ("id", "symbol", "first_ts", "last_ts", "source", "dropped"),
        ("id",),
        lambda g: (g.id, g.symbol, g.timestamp, g.last, g.source, g.dropped),
    ),
    ControlEvent: Table(
        "control_events",
        ("id", "ts", "action", "state", "actor", "reason", "version"),
        ("id", "ts"),
        lambda c: (c.id, c.timestamp, c.action, c.state, c.actor, c.reason, c.version),
    ),
    EquitySample: Table(
        "equity_samples",
        ("ts", "cash", "equity", "gross_exposure", "realised_pnl", "unrealised_pnl", "drawdown"),
        ("ts",),
        lambda q: (q.timestamp, q.cash, q.equity, q.gross_exposure, q.realised_pnl, q.unrealised_pnl, q.drawdown),
    ),
}


def group_rows(events: Sequence[Event]) -> dict[Table, list[tuple[Any, ...]]]:
    """Rows per table, one per natural key: the first, or for a versioned table the newest."""
    groups: dict[Table, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for event in events:
        table = TABLES[type(event)]
        row = table.row(event)
        rows = groups.setdefault(table, {})
        key = table.key_of(row)
        if key not in rows or table.newer(row, rows[key]):
            rows[key] = row
    return {table: list(rows.values()) for table, rows in groups.items()}


async def write_events(executor: Executor, events: Sequence[Event]) -> Counter[str]:
    """Persist a batch of any event types in one transaction; returns rows written per table."""
    written: Counter[str] = Counter()
    groups = group_rows(events)
    if not groups:
        return written
    async with connection(executor) as conn, conn.transaction():
        for table, rows in groups.items():
            written[table.name] += await _copy_and_insert(conn, table, rows)
        await _record_sources(conn, events)
    return written


async def _record_sources(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Note which (symbol, source) pairs hold market data, in key order (no deadlock between writers)."""
    pairs = sorted({(e.symbol, e.source) for e in events if isinstance(e, Tick | Bar)})
    if pairs:
        symbols, sources = zip(*pairs, strict=True)
        await conn.execute(
            "INSERT INTO symbol_sources (symbol, source) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT DO NOTHING",
            list(symbols),
            list(sources),
        )


async def write_bars(executor: Executor, bars: Sequence[Bar]) -> int:
    """Store backfilled or provider bars (idempotent); returns how many rows were new or changed.

    Large backfills are written in batches of ``BACKFILL_BATCH_ROWS``, each its own transaction, so
    an interrupted backfill keeps its progress and simply repeats the rest.
    """
    if not all(isinstance(bar, Bar) for bar in bars):
        raise TypeError("write_bars takes Bar events only")
    total = 0
    for start in range(0, len(bars), BACKFILL_BATCH_ROWS):
        written = await write_events(executor, bars[start : start + BACKFILL_BATCH_ROWS])
        total += written["bars"]
    return total


async def _copy_and_insert(conn: asyncpg.Connection, table: Table, rows: list[tuple[Any, ...]]) -> int:
    # A temp table per session, emptied at every commit: no catalog churn per batch.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table.staging} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(table.staging, records=rows, columns=table.columns)
    if table.version is not None:
        changed: int = await conn.fetchval(table.insert_sql())
        return changed
    status = await conn.execute(table.insert_sql())
    return int(status.rsplit(" ", 1)[-1])
