"""GET /portfolio, /pnl, /positions and /equity: the paper account as the risk stage sees it."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query

from tradebot.api.deps import PoolDep, RedisDep, TimeRangeDep
from tradebot.common import rounding
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.db import connection
from tradebot.execution import portfolio as views
from tradebot.risk.views import read_checkpoint

router = APIRouter(tags=["portfolio"])
MAX_SAMPLES = 100_000
# Shown as markets quote them (the account keeps full precision): money to the cent, prices as quoted.
MONEY = {"cash", "equity", "gross_exposure", "realised_pnl", "unrealised_pnl", "commissions", "daily_pnl",
         "peak_equity", "starting_cash", "market_value", "realised", "unrealised"}  # fmt: skip
PRICES = {"average_cost", "last_price"}


def quoted(value: Any) -> Any:
    """``value`` with its money and price fields rounded, however deep they sit."""
    if isinstance(value, dict):
        return {
            key: rounding.money(item) if key in MONEY and isinstance(item, float)
            else rounding.price(item) if key in PRICES and isinstance(item, float)
            else quoted(item)
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [quoted(item) for item in value]
    return value


async def _checkpoint(redis: RedisDep) -> dict[str, Any]:
    if redis is None:
        raise HTTPException(status_code=503, detail="REDIS_URL is not configured; the account lives in Redis")
    try:
        checkpoint = await read_checkpoint(redis)
    except RECOVERABLE_REDIS_ERRORS as error:
        raise HTTPException(status_code=503, detail=f"Redis unavailable: {error}") from None
    if checkpoint is None:
        raise HTTPException(status_code=404, detail="no order has been executed yet; the account is STARTING_CASH")
    return checkpoint


@router.get("/portfolio", summary="Cash, equity, exposure, P&L (total, per symbol, today) and drawdown")
async def portfolio(redis: RedisDep) -> dict[str, Any]:
    shown: dict[str, Any] = quoted(views.portfolio(await _checkpoint(redis)))
    return shown


@router.get("/pnl", summary="Realised and unrealised P&L per strategy (or per symbol), each with its symbols")
async def pnl(
    redis: RedisDep,
    by: Literal["strategy", "symbol"] = Query("strategy", description="strategy: per strategy; symbol: per symbol"),
) -> dict[str, dict[str, Any]]:
    checkpoint = await _checkpoint(redis)
    if by == "symbol":
        return {"pnl": quoted(views.portfolio(checkpoint)["pnl_by_symbol"])}
    return {"pnl": quoted(views.pnl_by_strategy(checkpoint))}


@router.get("/positions", summary="Open positions with value, share of equity and P&L")
async def positions(redis: RedisDep) -> list[dict[str, Any]]:
    shown: list[dict[str, Any]] = quoted(views.positions(await _checkpoint(redis)))
    return shown


@router.get("/equity", summary="The equity curve: one sample a minute (EQUITY_SAMPLE_S), oldest first")
async def equity(
    pool: PoolDep,
    window: TimeRangeDep,
    limit: int = Query(10_000, ge=1, le=MAX_SAMPLES, description="most samples returned (the earliest)"),
) -> dict[str, list[dict[str, Any]]]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT ts, cash, equity, gross_exposure, realised_pnl, unrealised_pnl, drawdown FROM equity_samples "
            "WHERE ($1::timestamptz IS NULL OR ts >= $1) AND ($2::timestamptz IS NULL OR ts < $2) ORDER BY ts LIMIT $3",
            window.start,
            window.end,
            limit,
        )
    return {"points": quoted([{"timestamp": row["ts"], **{k: v for k, v in row.items() if k != "ts"}} for row in rows])}
