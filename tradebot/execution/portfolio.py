"""Read-only views of the execution checkpoint for the API: portfolio, positions, risk usage."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from tradebot.broker.paper import PaperBroker
from tradebot.common.config import Settings
from tradebot.execution.attribution import StrategyPnL
from tradebot.risk.engine import RiskEngine
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import Portfolio
from tradebot.risk.store import read_record
from tradebot.risk.views import read_checkpoint, trading_state


def _account(checkpoint: dict[str, Any]) -> tuple[PaperBroker, RiskEngine]:
    broker = PaperBroker(starting_cash=0.0)  # every figure that matters comes from the snapshot
    broker.restore(checkpoint)
    engine = RiskEngine(RiskLimits())
    if checkpoint.get("risk"):
        engine.restore(checkpoint["risk"])
    return broker, engine


def positions(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """Open positions with their value, share of equity and P&L, largest first."""
    broker, _ = _account(checkpoint)
    equity = broker.account()["equity"]
    rows = []
    for symbol, held in broker.positions.items():
        if held.quantity == 0:
            continue
        mark = held.last_price or held.average_cost
        value = held.quantity * mark
        rows.append(
            {
                "symbol": symbol,
                "quantity": held.quantity,
                "average_cost": held.average_cost,
                "last_price": mark,
                "market_value": value,
                "share_of_equity": value / equity if equity > 0 else None,
                "unrealised_pnl": held.unrealised_pnl,
                "realised_pnl": held.realised_pnl,
            }
        )
    return sorted(rows, key=lambda row: -abs(row["market_value"]))


def portfolio(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Cash, equity, exposure, P&L (total, per symbol, today) and drawdown."""
    broker, engine = _account(checkpoint)
    account = broker.account()
    usage = engine.usage(Portfolio(broker.cash, broker.positions))
    start = engine.session_start_equity or account["equity"]
    return {
        "starting_cash": account["starting_cash"],
        "cash": account["cash"],
        "equity": account["equity"],
        "gross_exposure": Portfolio(broker.cash, broker.positions).gross_exposure(),
        "open_positions": usage["open_positions"],
        "realised_pnl": account["realised_pnl"],
        "unrealised_pnl": account["unrealised_pnl"],
        "commissions": account["commissions"],
        "session": usage["session"],
        "daily_pnl": account["equity"] - start,
        "peak_equity": usage["peak_equity"],
        "drawdown_pct": usage["drawdown_pct"],
        "pnl_by_symbol": {
            symbol: {"realised": held.realised_pnl, "unrealised": held.unrealised_pnl}
            for symbol, held in sorted(broker.positions.items())
        },
        "pnl_by_strategy": {
            strategy: {"realised": row["realised_pnl"], "unrealised": row["unrealised_pnl"]}
            for strategy, row in pnl_by_strategy(checkpoint).items()
        },
    }


def pnl_by_strategy(checkpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Realised and unrealised P&L per strategy, in total and per symbol, at the account's marks."""
    broker, _ = _account(checkpoint)
    attribution = StrategyPnL()
    attribution.restore(checkpoint.get("pnl"))
    return attribution.report({symbol: held.last_price for symbol, held in broker.positions.items()})


async def risk(redis: aioredis.Redis, settings: Settings) -> dict[str, Any]:
    """Trading state, limits and how much of each is used."""
    record, _ = await read_record(redis)
    checkpoint = await read_checkpoint(redis)
    limits = RiskLimits.from_settings(settings, real_broker=settings.execution_broker != "paper")
    usage = None
    if checkpoint is not None:
        broker, engine = _account(checkpoint)
        usage = engine.usage(Portfolio(broker.cash, broker.positions))
    state, rule = trading_state(record, checkpoint)
    return {
        "state": state.value,
        "reason": rule["reason"] if rule else (record.reason if record.version else None),
        "operator": json.loads(record.to_json()),
        "rule": rule,
        "limits": limits.as_dict(),
        "usage": usage,
    }
