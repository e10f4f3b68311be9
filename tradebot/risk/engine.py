"""The risk engine: one order, the portfolio and the market in, one decision out. No I/O.

Time is the order's own timestamp unless a clock is injected, so a replay of the same order
sequence gives the same decisions as the live run. The engine keeps what checks need to remember
(recent orders for rates and duplicates, peak and session-start equity, losses for protections, a
tripped rule) and hands it out as JSON-ready data for the execution role's checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tradebot.common.models import Order
from tradebot.risk import checks, reasons
from tradebot.risk.calendar import AlwaysOpen, MarketHours, NewYorkDay
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio, Totals
from tradebot.risk.sizing import TradeStats, size, sizing_mode
from tradebot.risk.state import TradingState, strictest
from tradebot.risk.windows import RateWindows

NO_MARKET = MarketState()


@dataclass(frozen=True, slots=True)
class Decision:
    """Approved with the quantity to send, or denied with a reason code and a sentence."""

    approved: bool
    code: str
    reason: str = ""
    quantity: float = 0.0


@dataclass(frozen=True, slots=True)
class Trip:
    """A rule that changed the trading state: daily loss (REDUCING), drawdown (HALTED), a data gap
    (RISK_DATA_GAP_STATE) or a broker mismatch (HALTED)."""

    state: TradingState
    code: str
    reason: str
    at: datetime


def _deny(code: str, reason: str) -> Decision:
    return Decision(False, code, reason)


class RiskEngine:
    """Pre-trade checks in a fixed order; the first that fails decides (see docs/RISK.md)."""

    def __init__(
        self, limits: RiskLimits, clock: Callable[[], datetime] | None = None, market_hours: MarketHours | None = None
    ):
        self.limits = limits
        self.clock = clock
        self.market_hours = market_hours or AlwaysOpen()
        self.operator_state, self.operator_version = TradingState.ACTIVE, 0
        self.rule: dict[str, Any] | None = None  # {"state", "code", "reason", "session"} of a tripped rule
        self.peak_equity: float | None = None
        self.session: str | None = None
        self.session_start_equity = 0.0
        self.windows = RateWindows()
        self._day: NewYorkDay | None = None  # the New York day of the last order (its session)
        self.stats = TradeStats()
        self.trips: list[Trip] = []  # drained by the caller, which publishes them as control events

    @property
    def state(self) -> TradingState:
        """The operator's state, or a tripped rule's when that is stricter."""
        ruled = TradingState(self.rule["state"]) if self.rule else TradingState.ACTIVE
        return strictest(self.operator_state, ruled)

    def set_operator(self, state: TradingState, version: int) -> None:
        """Adopt the operator's current word. A newer version clears an earlier rule trip (and a
        drawdown halt rebases the peak); an older one (Redis lost its record) keeps the trip."""
        if version > self.operator_version:
            if self.rule and self.rule["code"] == reasons.MAX_DRAWDOWN:
                self.peak_equity = None
            self.rule = None
        self.operator_state, self.operator_version = state, version

    def check(self, order: Order, portfolio: Portfolio, market: MarketState = NO_MARKET) -> Decision:
        """Decide one order; an approval is remembered (rates, duplicates) as sent."""
        now = self.clock() if self.clock else order.timestamp
        totals = portfolio.totals()
        self._watch_losses(totals.equity, now)
        decision = self._decide(order, portfolio, market, totals, now)
        if decision.approved:
            self.windows.record(order.symbol, order.side, now.timestamp())
        return decision

    def _decide(
        self, order: Order, portfolio: Portfolio, market: MarketState, totals: Totals, now: datetime
    ) -> Decision:
        grows = order.side == "buy"  # long only: a buy grows exposure, a sell shrinks it
        state = self.state
        if state is TradingState.HALTED:
            return _deny(reasons.HALTED, f"trading is HALTED ({self._why()}); only cancels pass")
        if state is TradingState.REDUCING and grows:
            return _deny(
                reasons.REDUCING, f"trading is REDUCING ({self._why()}); only orders that shrink exposure pass"
            )
        if self.limits.enforce_market_hours and not self.market_hours.is_open(now):
            return _deny(reasons.MARKET_CLOSED, f"the NYSE is closed at {now.isoformat()} (MARKET_HOURS=enforce)")
        quantity = size(order, portfolio, market, self.limits, self.stats)
        if not grows and quantity <= 0:
            return _deny(reasons.NO_POSITION, f"no {order.symbol} held to sell (short selling is not supported)")
        if quantity <= 0:
            return _deny(
                reasons.SIZE_ZERO,
                f"{sizing_mode(order, self.limits)} sizing gives less than one share of {order.symbol}",
            )
        at = now.timestamp()
        # Closing a whole position is never a duplicate: a repeat of it finds nothing left to sell.
        closes_all = not grows and quantity >= portfolio.quantity(order.symbol)
        denial = (self.windows.protection(order.symbol, at) if grows else None) or self.windows.throttle(
            order.symbol, order.side, at, self.limits, duplicates=not closes_all
        )
        denial = denial or checks.price_collar(order, market, self.limits)
        if grows:
            denial = denial or checks.exposure(order, quantity, portfolio, totals, self.limits)
        if denial:
            return _deny(*denial)
        return Decision(True, reasons.APPROVED, "", quantity)

    def _why(self) -> str:
        return self.rule["reason"] if self.rule else f"set by the operator, version {self.operator_version}"

    def _watch_losses(self, equity: float, now: datetime) -> None:
        """Trip the daily-loss and drawdown rules; the daily loss resets at the next session."""
        if self._day is None or not self._day.holds(now.timestamp()):
            self._day = NewYorkDay.of(now)
        session = self._day.day.isoformat()
        if session != self.session:
            self.session, self.session_start_equity = session, equity
            if self.rule and self.rule["code"] == reasons.DAILY_LOSS:
                self.rule = None
        if self.peak_equity is None or equity > self.peak_equity:
            self.peak_equity = equity
        if self.rule and self.rule["code"] == reasons.MAX_DRAWDOWN:
            return
        limits = self.limits
        drawdown = 1 - equity / self.peak_equity if self.peak_equity > 0 else 0.0
        daily = 1 - equity / self.session_start_equity if self.session_start_equity > 0 else 0.0
        if limits.max_drawdown_pct and drawdown >= limits.max_drawdown_pct * (1 - checks.TOLERANCE):
            self._trip(
                TradingState.HALTED,
                reasons.MAX_DRAWDOWN,
                f"drawdown {drawdown:.2%} from peak equity "
                f"${self.peak_equity:,.2f} reached RISK_MAX_DRAWDOWN_PCT {limits.max_drawdown_pct:.2%}",
                now,
            )
        elif not self.rule and limits.daily_loss_pct and daily >= limits.daily_loss_pct * (1 - checks.TOLERANCE):
            self._trip(
                TradingState.REDUCING,
                reasons.DAILY_LOSS,
                f"loss {daily:.2%} since the session opened at "
                f"${self.session_start_equity:,.2f} reached RISK_DAILY_LOSS_PCT {limits.daily_loss_pct:.2%}",
                now,
            )

    def impose(self, state: TradingState, code: str, reason: str, now: datetime) -> bool:
        """A rule found broken outside the order path (a data gap, a broker mismatch) changes the
        state like a tripped limit, unless a stricter rule already holds; True if it did."""
        if self.rule and TradingState(self.rule["state"]).strictness > state.strictness:
            return False
        self._trip(state, code, reason, now)
        return True

    def _trip(self, state: TradingState, code: str, reason: str, now: datetime) -> None:
        self.rule = {"state": state.value, "code": code, "reason": reason, "session": self.session}
        self.trips.append(Trip(state, code, reason, now))

    def record_close(self, symbol: str, realised_pnl: float, at: datetime) -> None:
        """A sell was filled with this realised P&L: feeds Kelly sizing, cooldowns and the loss lock."""
        self.stats.record(realised_pnl)
        if realised_pnl < 0:
            self.windows.record_loss(symbol, at.timestamp(), self.limits)

    def usage(self, portfolio: Portfolio) -> dict[str, Any]:
        """How much of each account-level limit is used, for /risk."""
        totals = portfolio.totals()
        equity = totals.equity
        peak = self.peak_equity or equity
        return {
            "equity": equity,
            "gross_exposure_pct": totals.gross_exposure / equity if equity > 0 else None,
            "open_positions": totals.open_positions,
            "drawdown_pct": 1 - equity / peak if peak > 0 else 0.0,
            "daily_loss_pct": 1 - equity / self.session_start_equity if self.session_start_equity > 0 else 0.0,
            "session": self.session,
            "peak_equity": peak,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the engine remembers, as JSON-ready data."""
        return {
            "operator": [self.operator_state.value, self.operator_version],
            "rule": self.rule,
            "peak_equity": self.peak_equity,
            "session": [self.session, self.session_start_equity],
            "windows": self.windows.snapshot(),
            "stats": [self.stats.wins, self.stats.losses, self.stats.won, self.stats.lost],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the memory with a snapshot (limits stay as built: they apply from now on)."""
        state, self.operator_version = snapshot["operator"]
        self.operator_state = TradingState(state)
        self.rule = snapshot["rule"]
        self.peak_equity = snapshot["peak_equity"]
        self.session, self.session_start_equity = snapshot["session"]
        self.windows.restore(snapshot["windows"])
        self.stats = TradeStats(*snapshot["stats"])
