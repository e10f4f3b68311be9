"""The paper account as the execution worker last committed it (read by the API's GET /account).

The account is the execution partition's checkpoint in Redis; reading it needs the broker's
snapshot format, not the worker, so the API depends on this module only.
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from tradebot.broker.paper import PaperBroker
from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key

ACCOUNT_PARTITION = 0


async def read_account(redis: aioredis.Redis) -> dict[str, Any] | None:
    """Cash, equity, P&L and positions of the paper account, or None before the first order."""
    saved = await redis.get(checkpoint_key(EXECUTION_ROLE, ACCOUNT_PARTITION))
    if saved is None:
        return None
    broker = PaperBroker(starting_cash=0.0)  # every figure that matters comes from the snapshot
    broker.restore(json.loads(saved))
    return broker.account()
