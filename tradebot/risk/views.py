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


Holdings = dict[str, dict[str, float]]


def held_if_not_active(checkpoint: dict[str, Any] | None) -> Holdings | None:
    """What the account holds for each strategy (strategy → symbol → shares), when the execution
    role's last commit left trading REDUCING or HALTED (a tripped rule, the operator's word, a
    flatten); None while it is ACTIVE or the commit has no P&L per strategy.

    From such a commit on, every BUY the risk stage decides is denied until the operator's next
    action reaches it, so a BUY a strategy sent that the account does not show was denied or will
    be: the strategy drops it from its book instead of selling it later (StrategyBook.forget_unheld).
    A BUY resting on paper (a limit or stop order, taken before) counts as held: it may still fill.
    None for a real broker's account, where a BUY taken before may stay open at the broker for long
    and only its fills are in the commit."""
    if checkpoint is None or not checkpoint.get("risk") or checkpoint.get("pnl") is None:
        return None
    if checkpoint.get("broker") == "alpaca":  # as_paper_snapshot's mark of a real broker's account
        return None
    engine = RiskEngine(RiskLimits())
    engine.restore(checkpoint["risk"])
    if engine.state is TradingState.ACTIVE:
        return None
    held = {
        strategy: {symbol: saved[0] for symbol, saved in book.items()} for strategy, book in checkpoint["pnl"].items()
    }
    for order in checkpoint.get("resting", []):
        if order["side"] == "buy" and order.get("strategy"):
            mine = held.setdefault(order["strategy"], {})
            mine[order["symbol"]] = mine.get(order["symbol"], 0.0) + float(order["quantity"])
    return held
