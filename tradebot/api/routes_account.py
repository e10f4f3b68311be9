"""GET /account: the paper broker's cash, equity, P&L and positions (its checkpoint in Redis)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from tradebot.api.deps import RedisDep
from tradebot.api.schemas_trading import AccountOut, PositionOut
from tradebot.common import rounding
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.execution.account import read_account

router = APIRouter(tags=["account"])


def account_out(snapshot: dict[str, Any], *, include_closed: bool) -> AccountOut:
    """The account as shown: money to the cent, prices as quoted, flat positions only on request."""
    positions = []
    closed = 0
    for symbol, held in sorted(snapshot["positions"].items()):
        if held["quantity"] == 0:
            closed += 1
            if not include_closed:
                continue
        mark = held["last_price"] if held["last_price"] is not None else held["average_cost"]
        positions.append(
            PositionOut(
                symbol=symbol,
                quantity=held["quantity"],
                average_cost=rounding.price(held["average_cost"]),  # type: ignore[arg-type]
                last_price=rounding.price(held["last_price"]),
                market_value=rounding.money(held["quantity"] * mark),  # type: ignore[arg-type]
                realised_pnl=rounding.money(held["realised_pnl"]),  # type: ignore[arg-type]
                unrealised_pnl=rounding.money(held["unrealised_pnl"]),  # type: ignore[arg-type]
            )
        )
    money = {
        name: rounding.money(snapshot[name])
        for name in ("starting_cash", "cash", "equity", "realised_pnl", "unrealised_pnl", "commissions")
    }
    return AccountOut(**money, positions=positions, closed_positions=closed)  # type: ignore[arg-type]


@router.get("/account", response_model=AccountOut, summary="Paper account: cash, equity, P&L and open positions")
async def account(
    redis: RedisDep,
    closed: Annotated[bool, Query(description="also list positions that are now flat (quantity 0)")] = False,
) -> AccountOut:
    """The account as of the execution worker's last commit."""
    if redis is None:
        raise HTTPException(status_code=503, detail="REDIS_URL is not configured; the account lives in Redis")
    try:
        snapshot = await read_account(redis)
    except RECOVERABLE_REDIS_ERRORS as error:
        raise HTTPException(status_code=503, detail=f"Redis unavailable: {error}") from None
    if snapshot is None:
        raise HTTPException(
            status_code=404,
            detail="no order has been executed yet; the account starts at STARTING_CASH with no positions",
        )
    return account_out(snapshot, include_closed=closed)
