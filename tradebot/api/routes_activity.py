"""What the bot did: GET /signals, /orders and /fills, newest first, filtered and paginated.

They read the tables the storage worker fills, so a row shows a moment after its event was
published (``tradebot activity`` follows the bus itself, with no such delay).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query

from tradebot.api.deps import ReadPoolDep, TimeRangeDep, normalized_symbol, unprocessable
from tradebot.api.schemas import ErrorOut
from tradebot.api.schemas_trading import FillOut, FillsOut, OrderOut, OrdersOut, SignalOut, SignalsOut
from tradebot.common import rounding
from tradebot.common.models import SYMBOL_PATTERN_ANY_CASE, OrderStatus
from tradebot.storage.activity import ActivityFilter, Kind, activity

DEFAULT_PAGE = 100
MAX_PAGE = 1000
ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "invalid symbol, dates, limit or cursor: the detail says which"}
}

router = APIRouter(tags=["activity"])


def encode_cursor(ts: datetime, row_id: str) -> str:
    """Where a page ended, as an opaque token."""
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (ts, id) a cursor names; a 422 if it is not one we gave out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, row_id = text.split("|", 1)
        parsed = datetime.fromisoformat(ts)
        if parsed.tzinfo is None or not row_id:
            raise ValueError
        return parsed, row_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise unprocessable(f"cursor {cursor!r} is not valid: pass the next_cursor of a previous page") from None


async def activity_filter(
    window: TimeRangeDep,
    symbol: Annotated[
        str | None,
        Query(
            description="only this ticker (case-insensitive)", json_schema_extra={"pattern": SYMBOL_PATTERN_ANY_CASE}
        ),
    ] = None,
    strategy: Annotated[str | None, Query(description="only this strategy, e.g. ma_crossover_5_20")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ActivityFilter:
    """The filters every activity endpoint shares."""
    return ActivityFilter(
        symbol=normalized_symbol(symbol) if symbol is not None else None,
        strategy=strategy,
        start=window.start,
        end=window.end,
        before=decode_cursor(cursor) if cursor else None,
    )


FilterDep = Annotated[ActivityFilter, Depends(activity_filter)]
LimitDep = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page, newest first")]


async def _page(
    pool: asyncpg.Pool, kind: Kind, where: ActivityFilter, limit: int
) -> tuple[list[asyncpg.Record], str | None]:
    # One row more than asked says whether another page exists.
    rows = list(await activity(pool, kind, where, limit + 1))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last["ts"], last["id"])


@router.get("/signals", response_model=SignalsOut, responses=ERRORS)
async def signals(pool: ReadPoolDep, where: FilterDep, limit: LimitDep = DEFAULT_PAGE) -> SignalsOut:
    """Signals the strategies emitted, newest first."""
    rows, cursor = await _page(pool, "signals", where, limit)
    found = [SignalOut(**{**dict(r), "timestamp": r["ts"], "price": rounding.price(r["price"])}) for r in rows]
    return SignalsOut(count=len(found), next_cursor=cursor, signals=found)


@router.get("/orders", response_model=OrdersOut, responses=ERRORS)
async def orders(pool: ReadPoolDep, where: FilterDep, limit: LimitDep = DEFAULT_PAGE) -> OrdersOut:
    """Orders sent to the broker (one per signal), newest first."""
    rows, cursor = await _page(pool, "orders", where, limit)
    found = [OrderOut(**{**dict(r), "timestamp": r["ts"]}) for r in rows]
    return OrdersOut(count=len(found), next_cursor=cursor, orders=found)


@router.get("/fills", response_model=FillsOut, responses=ERRORS)
async def fills(
    pool: ReadPoolDep,
    where: FilterDep,
    limit: LimitDep = DEFAULT_PAGE,
    status: Annotated[
        OrderStatus | None, Query(description="only order events of this status (filled, rejected, denied, ...)")
    ] = None,
) -> FillsOut:
    """What the broker did with each order: fills (price, commission) and rejections (reason), newest first."""
    rows, cursor = await _page(pool, "fills", replace(where, status=status), limit)
    found = [
        FillOut(
            **{
                **dict(r),
                "timestamp": r["ts"],
                "price": rounding.price(r["price"]),
                "commission": rounding.money(r["commission"]),
            }
        )
        for r in rows
    ]
    return FillsOut(count=len(found), next_cursor=cursor, fills=found)
