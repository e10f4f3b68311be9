"""Idempotent batch writes: one INSERT ... SELECT per table, in one statement (see write_batch).

A batch is a single statement with one round trip: every table's INSERT (ticks, signals, orders,
order events …) is a data-modifying CTE of it, no staging table is created or filled, and the
``symbol_sources`` note rides in the same statement. A single statement is atomic on its own, so
the batch needs no BEGIN / COMMIT either; only bars (versioned, below) get a statement of their own,
and a batch holding them is one transaction. (Before: BEGIN, CREATE TEMP TABLE, COPY, INSERT,
sources INSERT, COMMIT; then one statement per table, in a transaction.) The rows of a table go to
the server as one array parameter per column (binary, asyncpg), except the ticks': they go as one
JSON document of rows, which the server unpacks (:func:`tick_rows_json` says why).

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
from operator import attrgetter
from typing import Any

import asyncpg

from tradebot.common.codec import WIRE_MODELS, WireEvent, WireRow, encode_row_values
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
_symbol_and_source = attrgetter("symbol", "source")
TickValues = WireRow | Tick  # what a tick row is built from: a Tick, or a decoded row of a tick-batch entry
EventValues = Event | WireEvent  # what another row is built from: the event, or its strict decoding (codec.wire_event)
# The ticks' rows as the server unpacks them from the JSON document of tick_rows_json (each row the
# tick's values in the Tick's field order; ``n``: its place, so the first of a repeated key is kept).
_TICKS_STAGED = (
    "staged (symbol, ts, id, price, size, source, n) AS (SELECT r->>1, (r->>2)::timestamptz, r->>0, "
    "(r->>3)::float8, (r->>4)::float8, r->>5, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS rows (r, n))"
)


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

    def staged_sql(self, first: int = 1, name: str | None = None) -> str:
        """The CTE (``name``, default ``staged``) of the batch's rows: $first.. are one array per column."""
        arrays = ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(self.types, start=first))
        return f"{name or self.staging} ({', '.join(self.columns)}) AS (SELECT * FROM unnest({arrays}))"

    def insert_cte(self, name: str, staged: str, *, then: str = "", skip_stored: bool) -> str:
        """An unversioned table's insert as the CTE ``name`` of a larger statement: the rows of the
        CTE ``staged`` in key order (``then`` orders rows of one key: the first is written), each
        written row returning 1; ``skip_stored`` skips keys already stored (ON CONFLICT DO NOTHING),
        without it a stored key fails the statement (UniqueViolationError)."""
        assert self.version is None, "a versioned table's insert counts changed rows: insert_sql"
        columns, key = ", ".join(self.columns), ", ".join(self.key)
        conflict = f"ON CONFLICT ({key}) DO NOTHING " if skip_stored else ""
        return (
            f"{name} AS (INSERT INTO {self.name} ({columns}) SELECT {columns} FROM {staged} "
            f"ORDER BY {self.byte_order()}{then} {conflict}RETURNING 1)"
        )

    def byte_order(self) -> str:
        """The key as an ORDER BY list, its text columns compared byte by byte (``COLLATE "C"``).

        Any one order serves (every writer of the table sorts alike, so two lock keys in the same
        order and cannot deadlock); the byte order's sort costs a fraction of a locale's (memcmp and
        abbreviated keys instead of strcoll: ~0.5 µs a tick of PostgreSQL in a 2,400-tick batch)."""
        types = dict(zip(self.columns, self.types, strict=True))
        return ", ".join(f'{column} COLLATE "C"' if types[column] == "text" else column for column in self.key)

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
        """A versioned table's statement: INSERT the staged rows (:meth:`staged_sql`), replacing
        older versions, returning how many rows it wrote; ``extra_ctes`` run in the same statement.
        (Unversioned tables are written by :meth:`insert_cte`.)

        It counts the rows that are new or changed in value: a newer version with the same values
        still takes its place (so an older one arriving later cannot win), but it is not counted as
        written. The ``before`` snapshot is the rows as the statement found them.
        """
        assert self.version is not None, "an unversioned table is written by insert_cte"
        columns, key = ", ".join(self.columns), ", ".join(self.key)
        insert = f"INSERT INTO {self.name} ({columns}) SELECT {columns} FROM {self.staging} ORDER BY {key} "
        insert += f"ON CONFLICT ({key}) "
        values = [c for c in self.columns if c not in self.key and c != self.version]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*values, self.version))
        stored, joined = ", ".join(f"t.{c}" for c in values), " AND ".join(f"t.{c} = s.{c}" for c in self.key)
        return (
            f"WITH {self.staged_sql()}{extra_ctes}, "
            f"before AS (SELECT {', '.join(f't.{c}' for c in self.key)}, ({stored}) AS v "
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


# The table of each kind of event values: a strictly decoded event's is its model's (the same fields).
_TABLE_OF: dict[type[EventValues], Table] = {
    **{model: table for model, table in TABLES.items()},
    **{wire: TABLES[model] for wire, model in WIRE_MODELS.items()},
}


def group_rows(events: Sequence[EventValues]) -> dict[Table, list[tuple[Any, ...]]]:
    """Rows per table, one per natural key: the first, or for a versioned table the newest."""
    groups: dict[Table, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for event in events:
        table = _TABLE_OF[type(event)]
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


async def write_batch(executor: Executor, ticks: Sequence[TickValues], events: Sequence[EventValues]) -> Counter[str]:
    """Persist ticks (as values: Ticks or the storage reader's decoded rows) and other events (or
    their strict decodings) atomically; returns rows written per table.

    The rows of the unversioned tables (ticks above all) are first inserted as new, without ON
    CONFLICT: its check of each key before the insert costs PostgreSQL ~2 µs a tick, nearly as
    much as the insert itself, and a batch holds a stored row only when it is read again (after a
    crash or a handover, a writer racing, a tick twice in the batch). Such a batch fails whole on
    the first stored key and is written again skipping the stored rows: nothing is written twice
    either way. A caller's own transaction (which the failed statement would abort) gets the
    skipping insert at once.
    """
    async with connection(executor) as conn:
        if conn.is_in_transaction():
            return await _write(conn, ticks, events, skip_stored=True)
        try:
            return await _write(conn, ticks, events, skip_stored=False)
        except asyncpg.UniqueViolationError:
            return await _write(conn, ticks, events, skip_stored=True)


async def _write(
    conn: asyncpg.Connection, ticks: Sequence[TickValues], events: Sequence[EventValues], *, skip_stored: bool
) -> Counter[str]:
    written: Counter[str] = Counter()
    tables = [
        (table, [list(column) for column in zip(*rows, strict=True)]) for table, rows in group_rows(events).items()
    ]
    if not ticks and not tables:
        return written
    statements = _statements(ticks, tables, _source_pairs(events), skip_stored=skip_stored)
    if len(statements) == 1:  # one statement is its own transaction: no BEGIN / COMMIT round trips
        names, sql, args = statements[0]
        written.update(dict(zip(names, await conn.fetchrow(sql, *args), strict=True)))
        return written
    async with conn.transaction():
        if ticks and any(type(e) is Bar for e in events):
            # two statements would each lock history version rows (one order for both)
            symbols = {t.symbol for t in ticks}.union(e.symbol for e in events if type(e) is Bar)
            await conn.execute(_LOCK_HISTORY_SQL, sorted(symbols))
        for names, sql, args in statements:
            written.update(dict(zip(names, await conn.fetchrow(sql, *args), strict=True)))
    return written


def tick_rows_json(ticks: Sequence[TickValues]) -> str:
    """The ticks as one JSON array of rows, each the tick's values in the Tick's field order: the
    rows of tick-batch entries, in their fixed encoding (tradebot/common/codec.py).

    Why JSON for the table written most: asyncpg encodes an array parameter element by element,
    with a Python-level type check per element and ~0.9 µs per timestamp, which cost the storage
    worker ~2.4 µs a tick for the six column arrays; this encoding costs it ~0.2 µs, and the
    server's unpacking (jsonb, a cast per value) costs PostgreSQL ~0.5-1 µs a tick more than the
    arrays did. The values arrive exactly: each timestamp is written to the microsecond with its
    offset and each float as its shortest repr, which PostgreSQL reads back as the same instant
    and the same double (tests/test_storage_writer.py compares the stored rows).
    """
    return encode_row_values(
        [t if type(t) is WireRow else (t.id, t.symbol, t.timestamp, t.price, t.size, t.source) for t in ticks]
    )


def _source_pairs(events: Sequence[EventValues]) -> list[tuple[str, str]]:
    """The (symbol, source) pairs of the events holding market data (the ticks' are added in
    _statements)."""
    return sorted({(e.symbol, e.source) for e in events if isinstance(e, Tick | Bar)})


def _statements(
    ticks: Sequence[TickValues],
    tables: list[tuple[Table, list[list[Any]]]],
    pairs: list[tuple[str, str]],
    *,
    skip_stored: bool,
) -> list[tuple[tuple[str, ...], str, list[Any]]]:
    """(tables, SQL, arguments) of the batch's statements, each returning the rows it wrote per
    table: one statement for the ticks and every unversioned table (their inserts as CTEs, each
    table's rows as its column arrays; one round trip and no transaction of its own), then one per
    versioned table (``skip_stored``: see write_batch). The first also notes the batch's
    ``symbol_sources`` (the ticks' pairs and ``pairs``), in key order (no deadlock between writers)."""
    if ticks:  # the ticks' pairs found here: the server's own UNION over the staged rows cost it ~0.3 µs a tick
        pairs = sorted(set(map(_symbol_and_source, ticks)).union(pairs))
    symbols, sources = [symbol for symbol, _ in pairs], [source for _, source in pairs]
    ctes: list[str] = []
    args: list[Any] = []
    names: list[str] = []
    if ticks:
        args += [tick_rows_json(ticks)]
        ctes += [
            _TICKS_STAGED,
            _noted_sql(2),
            TABLES[Tick].insert_cte("written_ticks", "staged", then=", n", skip_stored=skip_stored),
        ]
        args += [symbols, sources]
        names.append(TABLES[Tick].name)
    for table, columns in tables:
        if table.version is None:
            ctes.append(table.staged_sql(len(args) + 1, f"staged_{table.name}"))
            ctes.append(table.insert_cte(f"written_{table.name}", f"staged_{table.name}", skip_stored=skip_stored))
            args += columns
            names.append(table.name)
    statements: list[tuple[tuple[str, ...], str, list[Any]]] = []
    if names:
        if pairs and not ticks:
            ctes.append(_noted_sql(len(args) + 1))
            args += [symbols, sources]
        counts = ", ".join(f"(SELECT count(*) FROM written_{name})" for name in names)
        statements.append((tuple(names), f"WITH {', '.join(ctes)} SELECT {counts}", args))
    for table, columns in tables:
        if table.version is not None:
            extra, versioned_args = "", list(columns)
            if pairs and not statements:
                extra = f", {_noted_sql(len(versioned_args) + 1)}"
                versioned_args += [symbols, sources]
            statements.append(((table.name,), table.insert_sql(extra), versioned_args))
    return statements


def _noted_sql(first: int) -> str:
    """The CTE noting the (symbol, source) pairs given as two arrays, $first and the next."""
    return (
        "noted AS (INSERT INTO symbol_sources (symbol, source) "
        f"SELECT * FROM unnest(${first}::text[], ${first + 1}::text[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING)"
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
