"""Idempotent batch writes: one INSERT ... SELECT FROM unnest(...) ON CONFLICT per table, in one transaction.

Every row of a table goes to the server as one array parameter per column (binary, asyncpg), so a
batch of ticks is a single statement with one round trip: no staging table to create or fill, and
the ``symbol_sources`` note rides in the same statement as a data-modifying CTE. A single statement
is atomic on its own, so a batch of one table needs no BEGIN / COMMIT either; a batch of several
tables is one transaction. (Before: BEGIN, CREATE TEMP TABLE, COPY, INSERT, sources INSERT, COMMIT.)

Each table's conflict target is the event's natural key, so a redelivered batch writes nothing new.
Ticks, signals, orders and order events are immutable: a repeat is skipped (DO NOTHING). Bars are
the exception: a provider may correct a bar it sent before (late trades), so a bar with the same
(symbol, timeframe, ts, source) replaces the stored one, but only when its ``version`` is larger:
whatever order the versions arrive in (a correction reclaimed after a crash, two storage workers,
a backfill racing the live feed), the newest is what stays. Rows are inserted in key order so two
workers writing overlapping batches lock in the same order and cannot deadlock. On plain
PostgreSQL the tables' triggers also lock each written symbol's history version row (the /history
cache's invalidation); a batch of ticks and bars takes all those locks first, in symbol order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tradebot.common.codec import WireRow
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
# A transaction writing ticks and bars locks the symbols' history version rows first, in one
# order (storage/migrations/postgresql/0024_history_versions.sql; a no-op on TimescaleDB).
_LOCK_HISTORY_SQL = "SELECT history_versions_lock($1::text[])"
TickValues = WireRow | Tick  # what a tick row is built from: a Tick, or a decoded row of a tick-batch entry


def _types(names: str) -> tuple[str, ...]:
    return tuple(names.split())


@dataclass(frozen=True)
class Table:
    """How one event type maps onto its table."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # each column's PostgreSQL type: the arrays are cast to them
    key: tuple[str, ...]
    row: Callable[[Any], tuple[Any, ...]]
    version: str | None = None  # a row replaces a stored one with the same key only if this is larger
    staging = "staged"  # the CTE holding the batch's rows

    def staged_sql(self) -> str:
        """The CTE of the batch's rows: $1..$n are one array per column."""
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(self.types, start=1))
        return f"{self.staging} ({', '.join(self.columns)}) AS (SELECT * FROM unnest({arrays}))"

    def key_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The natural-key values of a row."""
        return tuple(row[self.columns.index(column)] for column in self.key)

    def newer(self, row: tuple[Any, ...], than: tuple[Any, ...]) -> bool:
        """Whether ``row`` replaces ``than`` (same key): only a versioned table's larger version does."""
        if self.version is None:
            return False
        index = self.columns.index(self.version)
        return bool(row[index] > than[index])

    def insert_sql(self, extra_ctes: str = "") -> str:
        """One statement: INSERT the staged rows, skipping existing keys (or, if versioned, replacing
        older versions), returning how many rows it wrote; ``extra_ctes`` run in the same statement.

        A versioned insert counts the rows that are new or changed in value: a newer version with
        the same values still takes its place (so an older one arriving later cannot win), but it
        is not counted as written. The ``before`` snapshot is the rows as the statement found them.
        """
        columns, key = ", ".join(self.columns), ", ".join(self.key)
        insert = (
            f"INSERT INTO {self.name} ({columns}) SELECT {columns} FROM {self.staging} "
            f"ORDER BY {key} ON CONFLICT ({key}) "
        )
        head = f"WITH {self.staged_sql()}{extra_ctes}, "
        if self.version is None:
            return f"{head}written AS ({insert}DO NOTHING RETURNING 1) SELECT count(*) FROM written"
        values = [c for c in self.columns if c not in self.key and c != self.version]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*values, self.version))
        stored, joined = ", ".join(f"t.{c}" for c in values), " AND ".join(f"t.{c} = s.{c}" for c in self.key)
        return (
            f"{head}before AS (SELECT {', '.join(f't.{c}' for c in self.key)}, ({stored}) AS v "
            f"FROM {self.name} t JOIN {self.staging} s ON {joined}), "
            f"written AS ({insert}DO UPDATE SET {assignments} "
            f"WHERE {self.name}.{self.version} < EXCLUDED.{self.version} RETURNING {key}, ({', '.join(values)}) AS v) "
            f"SELECT count(*) FROM written w LEFT JOIN before b USING ({key}) WHERE b.v IS DISTINCT FROM w.v"
        )


TABLES: dict[type[Event], Table] = {
    Tick: Table(
        "ticks",
        ("symbol", "ts", "id", "price", "size", "source"),
        _types("text timestamptz text float8 float8 text"),
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
        _types("text text timestamptz text text float8 float8 float8 float8 float8 int8 float8 int8"),
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
        _types("text timestamptz text text float8 float8 text text"),
        ("id", "ts"),
        lambda s: (s.id, s.timestamp, s.symbol, s.side, s.price, s.confidence, s.strategy, s.tick_id),
    ),
    Order: Table(
        "orders",
        ("id", "ts", "symbol", "side", "quantity", "order_type", "signal_id", "strategy"),
        _types("text timestamptz text text float8 text text text"),
        ("id", "ts"),
        lambda o: (o.id, o.timestamp, o.symbol, o.side, o.quantity, o.order_type, o.signal_id, o.strategy),
    ),
    OrderChange: Table(
        "order_changes",
        ("id", "ts", "symbol", "action", "target", "quantity", "limit_price", "stop_price", "strategy"),
        _types("text timestamptz text text text float8 float8 float8 text"),
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
        _types("text timestamptz text text text text float8 float8 float8 text"),
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
        _types("text text timestamptz timestamptz text int8"),
        ("id",),
        lambda g: (g.id, g.symbol, g.timestamp, g.last, g.source, g.dropped),
    ),
    ControlEvent: Table(
        "control_events",
        ("id", "ts", "action", "state", "actor", "reason", "version"),
        _types("text timestamptz text text text text int8"),
        ("id", "ts"),
        lambda c: (c.id, c.timestamp, c.action, c.state, c.actor, c.reason, c.version),
    ),
    EquitySample: Table(
        "equity_samples",
        ("ts", "cash", "equity", "gross_exposure", "realised_pnl", "unrealised_pnl", "drawdown"),
        _types("timestamptz float8 float8 float8 float8 float8 float8"),
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
    """Persist a batch of any event types atomically; returns rows written per table."""
    return await write_batch(
        executor, [e for e in events if type(e) is Tick], [e for e in events if type(e) is not Tick]
    )


async def write_batch(executor: Executor, ticks: Sequence[TickValues], events: Sequence[Event]) -> Counter[str]:
    """Persist ticks (as values: Ticks or the storage reader's decoded rows) and other events
    atomically; returns rows written per table."""
    written: Counter[str] = Counter()
    tables = ([(TABLES[Tick], tick_columns(ticks))] if ticks else []) + [
        (table, [list(column) for column in zip(*rows, strict=True)]) for table, rows in group_rows(events).items()
    ]
    if not tables:
        return written
    statements = _statements(tables, _source_pairs(ticks, events))
    async with connection(executor) as conn:
        if len(statements) == 1:  # one statement is its own transaction: no BEGIN / COMMIT round trips
            name, sql, args = statements[0]
            written[name] += await conn.fetchval(sql, *args)
            return written
        async with conn.transaction():
            if ticks and any(type(e) is Bar for e in events):
                # two statements would each lock history version rows (one order for both)
                await conn.execute(_LOCK_HISTORY_SQL, sorted({symbol for symbol, _ in _source_pairs(ticks, events)}))
            for name, sql, args in statements:
                written[name] += await conn.fetchval(sql, *args)
    return written


def tick_columns(ticks: Sequence[TickValues]) -> list[list[Any]]:
    """The ``ticks`` table's column arrays (symbol, ts, id, price, size, source), one row per
    natural key (the first), built column by column: no row tuple per tick."""
    ids = [t.id for t in ticks]
    if len(set(ids)) != len(ids):  # a tick twice in the batch (rare): keep the first of each key
        firsts: dict[tuple[Any, ...], TickValues] = {}
        for tick in ticks:
            firsts.setdefault((tick.symbol, tick.timestamp, tick.id), tick)
        ticks = list(firsts.values())
        ids = [t.id for t in ticks]
    return [
        [t.symbol for t in ticks],
        [t.timestamp for t in ticks],
        ids,
        [t.price for t in ticks],
        [t.size for t in ticks],
        [t.source for t in ticks],
    ]


def _source_pairs(ticks: Sequence[TickValues], events: Sequence[Event]) -> list[tuple[str, str]]:
    """The (symbol, source) pairs holding market data, in key order (no deadlock between writers)."""
    pairs = {(t.symbol, t.source) for t in ticks}
    return sorted(pairs.union((e.symbol, e.source) for e in events if isinstance(e, Tick | Bar)))


def _statements(
    tables: list[tuple[Table, list[list[Any]]]], pairs: list[tuple[str, str]]
) -> list[tuple[str, str, list[Any]]]:
    """(table, SQL, arguments) per table and its column arrays; the first one also notes the
    batch's ``symbol_sources``."""
    statements: list[tuple[str, str, list[Any]]] = []
    for table, columns in tables:
        args: list[Any] = list(columns)
        extra = ""
        if pairs and not statements:
            first = len(args) + 1
            extra = (
                ", noted AS (INSERT INTO symbol_sources (symbol, source) "
                f"SELECT * FROM unnest(${first}::text[], ${first + 1}::text[]) ON CONFLICT DO NOTHING)"
            )
            args += [[symbol for symbol, _ in pairs], [source for _, source in pairs]]
        statements.append((table.name, table.insert_sql(extra), args))
    return statements


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
