"""Pre-trade risk: a pure engine (orders, portfolio and market in, decisions out), sizing, exits,
the trading state and the operator's control surface. See docs/RISK.md."""

from tradebot.risk.engine import Decision, RiskEngine
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio

__all__ = ["Decision", "MarketState", "Portfolio", "RiskEngine", "RiskLimits"]
