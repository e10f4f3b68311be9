"""POST /control/{halt,reduce,resume,flatten}: the kill switch, behind the API's bearer token.

Without API_TOKEN the endpoints answer 403 saying what to set; a missing or wrong token (401), an
unknown action (404) or a bad body (422) gets a 4xx that says what is wrong, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from tradebot.api.auth import TokenDep
from tradebot.api.deps import RedisDep, SettingsDep
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.risk import control

router = APIRouter(tags=["control"])


class ControlRequest(BaseModel):
    """Why (kept in the audit record), and optionally who."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    actor: str | None = Field(None, min_length=1, max_length=100)


@router.post("/control/{action}", summary="halt, reduce, resume or flatten: changes the trading state for every worker")
async def control_action(
    action: str,
    body: ControlRequest,
    request: Request,
    redis: RedisDep,
    settings: SettingsDep,
    _token: TokenDep,
) -> dict[str, Any]:
    if action not in control.ACTIONS:
        raise HTTPException(
            status_code=404, detail=f"unknown action {action!r}; choose one of: {', '.join(control.ACTIONS)}"
        )
    if redis is None:
        raise HTTPException(status_code=503, detail="REDIS_URL is not configured; the trading state lives in Redis")
    client = request.client.host if request.client else "unknown"
    try:
        event = await control.apply_action(
            Bus(redis, min_replicas=settings.redis_min_replicas),
            action,
            actor=body.actor or f"api@{client}",
            reason=body.reason,
        )
    except control.ControlError as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    except RECOVERABLE_REDIS_ERRORS as error:
        raise HTTPException(status_code=503, detail=f"Redis unavailable: {error}") from None
    return event.model_dump(mode="json")
