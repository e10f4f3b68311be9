"""Idempotent batch writes: COPY into a staging table, then INSERT ... ON CONFLICT, in one transaction.

Each table's conflict target is the event's natural key, so a redelivered batch writes nothing new.
Ticks, signals, orders and order events are immutable: a repeat is skipped (DO NOTHING). Bars are
the exception: a provider may correct a bar it sent before (late trades), so a bar with the same
(symbol, timeframe, ts, source) replaces the stored values when they differ. Rows are inserted in
key order so two workers writing overlapping batches lock in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from tradebot.common.db import Executor, connection
from tradebot.common.models import Bar, Event, Order, OrderEvent, Signal, Tick

BACKFILL_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Table:
    """How one event type maps onto its table."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    row: Callable[[Any], tuple]
    replace_on_conflict: bool = False

    @property
    def staging(self) -> str:
        return f"staging_{self.name}"

    def key_of(self, row: tuple) -> tuple:
        """The natural-key values of a row."""
        return tuple(row[self.columns.index(column)] for column in self.key)

    def insert_sql(self) -> str:
        """INSERT from the staging table, skipping (or, for bars, refreshing) existing keys."""
        columns, key = ", ".join(self.columns), ", ".join(self.key)
        head = (
            f"INSERT INTO {self.name} ({columns}) SELECT {columns} FROM {self.staging} "
            f"ORDER BY {key} ON CONFLICT ({key}) "
        )
        if not self.replace_on_conflict:
            return head + "DO NOTHING"
        values = [c for c in self.columns if c not in self.key]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in values)
        stored = ", ".join(f"{self.name}.{c}" for c in values)
        incoming = ", ".join(f"EXCLUDED.{c}" for c in values)
        return head + f"DO UPDATE SET {assignments} WHERE ({stored}) IS DISTINCT FROM ({incoming})"


TABLES: dict[type[Event], Table] = {
    Tick: Table(
        "ticks",
        ("symbol", "ts", "id", "price", "size", "source"),
        ("symbol", "ts", "id"),
        lambda t: (t.symbol, t.timestamp, t.id, t.price, t.size, t.source),
    ),
    Bar: Table(
        "bars",
        ("symbol", "timeframe", "ts", "source", "id", "open", "high", "low", "close", "volume", "trade_count", "vwap"),
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
        ),
        replace_on_conflict=True,
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
}


def group_rows(events: Sequence[Event]) -> dict[Table, list[tuple]]:
    """Rows per table, one per natural key (the last event with a key wins: a correction)."""
    groups: dict[Table, dict[tuple, tuple]] = {}
    for event in events:
        table = TABLES[type(event)]
        row = table.row(event)
        groups.setdefault(table, {})[table.key_of(row)] = row
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
    return written


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


async def _copy_and_insert(conn: asyncpg.Connection, table: Table, rows: list[tuple]) -> int:
    # A temp table per session, emptied at every commit: no catalog churn per batch.
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table.staging} (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await conn.copy_records_to_table(table.staging, records=rows, columns=table.columns)
    status = await conn.execute(table.insert_sql())
    return int(status.rsplit(" ", 1)[-1])
