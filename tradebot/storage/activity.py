"""Read side of trading activity: signals, orders and fills (order events), newest first.

Pages are keyset-paginated on (ts, id): a page ends where the next one starts, so rows stored while
someone pages through never shift or repeat a page the way an offset would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

from tradebot.common.db import Executor, connection

Kind = Literal["signals", "orders", "fills"]

# Orders carry their signal's id and fills their order's id: the strategy is found through them.
_SELECT: dict[Kind, str] = {
    "signals": "SELECT s.id, s.ts, s.symbol, s.side, s.price, s.confidence, s.strategy, s.tick_id FROM signals s",
    "orders": "SELECT o.id, o.ts, o.symbol, o.side, o.quantity, o.order_type, o.signal_id, s.strategy "
    "FROM orders o LEFT JOIN signals s ON s.id = o.signal_id",
    "fills": "SELECT f.id, f.ts, f.client_order_id, f.symbol, f.status, f.side, f.quantity, f.price, "
    "f.commission, f.reason, s.strategy FROM fills f "
    "LEFT JOIN orders o ON o.id = f.client_order_id LEFT JOIN signals s ON s.id = o.signal_id",
}
_ALIAS: dict[Kind, str] = {"signals": "s", "orders": "o", "fills": "f"}


@dataclass(frozen=True)
class ActivityFilter:
    """Which rows: every field is optional; ``before`` is the (ts, id) the previous page ended at."""

    symbol: str | None = None
    strategy: str | None = None
    status: str | None = None  # fills only: filled or rejected
    start: datetime | None = None  # ts >= start
    end: datetime | None = None  # ts < end
    before: tuple[datetime, str] | None = None


def activity_sql(kind: Kind, where: ActivityFilter) -> tuple[str, list[object]]:
    """The query of one page (its LIMIT is the last parameter) and its parameters."""
    table = _ALIAS[kind]
    clauses: list[str] = []
    params: list[object] = []

    def add(clause: str, *values: object) -> None:
        params.extend(values)
        numbers = tuple(f"${len(params) - len(values) + i + 1}" for i in range(len(values)))
        clauses.append(clause.format(*numbers))

    if where.symbol:
        add(f"{table}.symbol = {{}}", where.symbol)
    if where.strategy:
        add("s.strategy = {}", where.strategy)
    if where.status and kind == "fills":
        add("f.status = {}", where.status)
    if where.start:
        add(f"{table}.ts >= {{}}", where.start)
    if where.end:
        add(f"{table}.ts < {{}}", where.end)
    if where.before:
        add(f"({table}.ts, {table}.id) < ({{}}, {{}})", *where.before)
    sql = _SELECT[kind]
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += f" ORDER BY {table}.ts DESC, {table}.id DESC LIMIT ${len(params) + 1}"
    return sql, params


async def activity(executor: Executor, kind: Kind, where: ActivityFilter, limit: int) -> Sequence[asyncpg.Record]:
    """Up to ``limit`` rows of ``kind`` matching ``where``, newest first."""
    sql, params = activity_sql(kind, where)
    async with connection(executor) as conn:
        rows: Sequence[asyncpg.Record] = await conn.fetch(sql, *params, limit)
        return rows
