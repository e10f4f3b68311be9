"""The trading state as the risk stage will apply it next, read from Redis (for status and the API)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from tradebot.broker.checkpoint import read_account_snapshot
from tradebot.risk.engine import RiskEngine
from tradebot.risk.limits import RiskLimits
from tradebot.risk.state import TradingState
from tradebot.risk.store import OperatorRecord


async def read_checkpoint(redis: aioredis.Redis) -> dict[str, Any] | None:
    """The execution role's last committed checkpoint (account and risk memory), or None before any order."""
    return await read_account_snapshot(redis)


def trading_state(
    record: OperatorRecord, checkpoint: dict[str, Any] | None
) -> tuple[TradingState, dict[str, Any] | None]:
    """The state the risk stage applies to the next order, and the rule it keeps (if any)."""
    engine = RiskEngine(RiskLimits())
    if checkpoint is not None and checkpoint.get("risk"):
        engine.restore(checkpoint["risk"])
    engine.set_operator(record.state, record.version)
    return engine.state, engine.rule
