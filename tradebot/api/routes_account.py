"""GET /account: the paper broker's cash, equity, P&L and positions (its checkpoint in Redis)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from tradebot.api.deps import RedisDep
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS
from tradebot.execution.account import read_account

router = APIRouter(tags=["account"])


@router.get("/account", summary="Paper account: cash, equity, realised/unrealised P&L, positions")
async def account(redis: RedisDep) -> dict[str, Any]:
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
    return snapshot
