"""The paper account as the execution worker last committed it (read by the API's GET /account).

The account is the execution partition's checkpoint in Redis (in parts: broker/checkpoint.py);
reading it needs the broker's snapshot format, not the worker, so the API depends on this module only.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from tradebot.broker.checkpoint import read_account_snapshot
from tradebot.broker.paper import PaperBroker


async def read_account(redis: aioredis.Redis) -> dict[str, Any] | None:
    """Cash, equity, P&L and positions of the paper account, or None before the first order."""
    saved = await read_account_snapshot(redis)
    if saved is None:
        return None
    broker = PaperBroker(starting_cash=0.0)  # every figure that matters comes from the snapshot
    broker.restore(saved)
    return broker.account()
