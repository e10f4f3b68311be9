"""GET /risk (state, limits, usage), /risk/denied (denied orders and why) and /control/events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query

from tradebot.api.deps import PoolDep, RedisDep, SettingsDep
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.db import connection
from tradebot.execution import portfolio as views

router = APIRouter(tags=["risk"])


@router.get("/risk", summary="Trading state, every limit, and how much of each is used")
async def risk(redis: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    if redis is None:
        raise HTTPException(status_code=503, detail="REDIS_URL is not configured; the trading state lives in Redis")
    try:
        return await views.risk(redis, settings)
    except RECOVERABLE_REDIS_ERRORS as error:
        raise HTTPException(status_code=503, detail=f"Redis unavailable: {error}") from None


@router.get("/risk/denied", summary="Orders the risk stage denied, newest first, with the reason code and why")
async def denied(pool: PoolDep, limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT ts, client_order_id, symbol, side, quantity, reason FROM fills WHERE status = 'denied' "
            "ORDER BY ts DESC LIMIT $1",
            limit,
        )
    return [
        {"timestamp": r["ts"], **{k: r[k] for k in ("client_order_id", "symbol", "side", "quantity")}, **_split(r)}
        for r in rows
    ]


def _split(row: Any) -> dict[str, str]:
    code, _, why = (row["reason"] or "").partition(": ")
    return {"code": code, "reason": why}


@router.get("/control/events", summary="The audit trail: every change of trading state, newest first")
async def control_events(pool: PoolDep, limit: int = Query(100, ge=1, le=10_000)) -> list[dict[str, Any]]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT ts, id, action, state, actor, reason, version FROM control_events ORDER BY ts DESC LIMIT $1", limit
        )
    return [{"timestamp": r["ts"], **{k: v for k, v in r.items() if k != "ts"}} for r in rows]
