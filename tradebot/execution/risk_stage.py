"""The risk stage of the execution role: every order is decided here before a broker sees it.

It wraps the pure engine with what the live path needs around it: the operator's state (from the
watcher), the account as the broker holds it (``cash`` and ``positions``), the last price seen per
symbol (the execution role sees no ticks, so the last trade it knows is the previous order's
reference price), closing orders for a flatten, denied order events, the data-gap rule (the gap
records the live feeds committed, read by the worker), and the memory of decided order ids, so a
redelivered or replayed order is never decided twice. Its state is part of the
execution checkpoint, written in the same atomic commit as the broker's account.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from tradebot.broker.paper import event_id
from tradebot.common.config import Settings
from tradebot.common.models import ACCOUNT_SCOPE, ControlEvent, Order, OrderChange, OrderEvent, stable_id
from tradebot.risk import reasons
from tradebot.risk.calendar import nyse_hours
from tradebot.risk.engine import RiskEngine
from tradebot.risk.gaps import DataGapRule
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio, Totals
from tradebot.risk.state import TradingState
from tradebot.risk.store import OperatorRecord
from tradebot.strategy.book import read_strategies_file, sizing_modes, traded_symbols
from tradebot.strategy.catalog import StrategyError

REMEMBERED_DECISIONS = 1_000


class Account(Protocol):
    """What the stage reads of a broker."""

    cash: float
    positions: dict[str, Any]


def new_engine(settings: Settings, *, broker_clock: bool = False) -> RiskEngine:
    """The engine the settings describe; the NYSE calendar is loaded only when market hours are enforced.

    ``broker_clock``: a real broker's own clock decides market hours (and lets gtc/opg/cls orders
    wait for the open), so the engine does not check them a second time."""
    limits = RiskLimits.from_settings(settings, real_broker=settings.execution_broker != "paper")
    limits = replace(limits, sizing_by_strategy=strategy_sizing(settings))
    if broker_clock:
        limits = replace(limits, enforce_market_hours=False)
    return RiskEngine(limits, market_hours=nyse_hours() if limits.enforce_market_hours else None)


def strategy_sizing(settings: Settings) -> dict[str, str]:
    """The sizing modes strategies of STRATEGIES_FILE choose for themselves (``sizing.position_sizing``)."""
    if settings.strategies_file is None:
        return {}
    try:
        return sizing_modes(read_strategies_file(settings.strategies_file))
    except StrategyError:
        return {}  # the strategy role stops on it; here, POSITION_SIZING for all


def new_gap_rule(settings: Settings) -> DataGapRule:
    """RISK_DATA_GAP_STATE over the symbols the strategies trade (every symbol without a strategies file)."""
    traded = None
    if settings.strategies_file is not None:
        try:
            traded = traded_symbols(read_strategies_file(settings.strategies_file))
        except StrategyError:
            traded = None  # the strategy role stops on it; here, every symbol counts
    return DataGapRule(settings.risk_data_gap_state, traded)


Records = Mapping[str, Mapping[str, Any]]


class RiskStage:
    """Decides orders for one account; see the module docstring."""

    def __init__(
        self,
        engine: RiskEngine,
        operator: Callable[[], OperatorRecord],
        gaps: Callable[[], Records] = dict,
        gap_rule: DataGapRule | None = None,
    ):
        self.engine = engine
        self.operator = operator
        self.gaps = gaps
        self.gap_rule = gap_rule or DataGapRule("off")
        self.marks: dict[str, float] = {}
        self._decided: deque[str] = deque(maxlen=REMEMBERED_DECISIONS)
        self._decided_set: set[str] = set()
        # The account's totals, moved order by order instead of a pass over every position per
        # order; in integer micro-dollars, so they equal a fresh sum exactly (a replay in other
        # batches decides the same) and are summed afresh at every batch all the same.
        self._totals: Totals | None = None

    def begin_batch(self) -> None:
        """Take in the operator's latest state before deciding a batch."""
        self._totals = None
        record = self.operator()
        self.engine.set_operator(record.state, record.version)

    def watch_gaps(self, account: Account, now: datetime | None = None) -> None:
        """Trip the data-gap rule for each new gap record that hits a held or traded symbol."""
        held = [symbol for symbol, position in account.positions.items() if position.quantity]
        for state, reason in self.gap_rule.check(self.gaps(), held, now or datetime.now(UTC)):
            self.engine.impose(state, reasons.DATA_GAP, reason, now or datetime.now(UTC))

    def screen(self, order: Order, account: Account) -> Order | OrderEvent | None:
        """The order to send (resized by the sizing mode), a denied event, or None if decided before."""
        if order.id in self._decided_set:
            return None
        self._remember(order.id)
        market = MarketState(last_prices=self.marks)
        decision = self.engine.check(order, self.portfolio(account), market)
        self.marks[order.symbol] = order.reference_price
        if not decision.approved:
            return denied_event(order, f"{decision.code}: {decision.reason}")
        if decision.quantity == order.quantity:
            return order
        if order.notional is not None:  # sized in dollars: the dollars follow the shares
            notional = round(decision.quantity * order.reference_price, 2)
            return order.model_copy(update={"quantity": decision.quantity, "notional": notional})
        return order.model_copy(update={"quantity": decision.quantity})

    @property
    def decided(self) -> set[str]:
        """The order ids decided lately (a redelivered order among them is not decided again)."""
        return self._decided_set

    def account_moved(self) -> None:
        """The broker changed the account outside an order's check (a resting order filled)."""
        self._totals = None

    def replace_refusal(self, account: Account) -> Callable[[Order, Order], str | None]:
        """Why a replace must not go ahead, or None: one that grows exposure is checked like a new order."""

        def refusal(target: Order, replacement: Order) -> str | None:
            if not OrderChange.grows_exposure(target, replacement):
                return None
            decision = self.engine.check(replacement, self.portfolio(account), MarketState(last_prices=self.marks))
            if not decision.approved:
                return f"{decision.code}: {decision.reason}"
            if decision.quantity != replacement.quantity:
                return f"{decision.code}: the risk stage allows {decision.quantity:g} of {replacement.quantity:g}"
            return None

        return refusal

    def portfolio(self, account: Account) -> Portfolio:
        """The account as the engine reads it, with the totals kept here."""
        if self._totals is None:
            self._totals = Portfolio(account.cash, account.positions).totals()
        return Portfolio(account.cash, account.positions, self._totals)

    def before_broker(self, order: Order, account: Account) -> tuple[float, float]:
        """What the broker call may change of the symbol: its worth and its realised P&L."""
        held = account.positions.get(order.symbol)
        if held is None:
            return 0.0, 0.0
        return held.quantity * (held.last_price or held.average_cost), held.realised_pnl

    def after_broker(self, order: Order, result: OrderEvent, before: tuple[float, float], account: Account) -> None:
        """Move the totals by what the broker did; a filled sell feeds the protections and Kelly."""
        worth_before, realised_before = before
        held = self.moved(order, worth_before, account)
        if result.status == "filled" and order.side == "sell":
            realised = getattr(held, "realised_pnl", 0.0) - realised_before
            self.engine.record_close(order.symbol, realised, order.timestamp)

    def moved(self, order: Order, worth_before: float, account: Account) -> Any:
        """Move the totals by what became of the order's symbol (worth ``worth_before`` before); its holding."""
        held = account.positions.get(order.symbol)
        worth_after = held.quantity * (held.last_price or held.average_cost) if held is not None else 0.0
        if self._totals is not None:
            self._totals = self._totals.moved(account.cash, worth_before, worth_after)
        return held

    def flatten(self, event: ControlEvent, account: Account) -> list[Order]:
        """REDUCING from here on, and one closing order per open position."""
        self._totals = None
        if event.version > self.engine.operator_version:  # else the watcher has already seen it, or newer
            self.engine.set_operator(TradingState(event.state), event.version)
        closing = []
        for symbol, held in sorted(account.positions.items()):
            if held.quantity <= 0:
                continue
            closing.append(
                Order(
                    id=f"co-{stable_id('flatten', event.id, symbol)}",
                    symbol=symbol,
                    timestamp=event.timestamp,
                    side="sell",
                    quantity=held.quantity,
                    reference_price=held.last_price or held.average_cost,
                    signal_id=event.id,
                )
            )
        return closing

    def rule_events(self) -> list[ControlEvent]:
        """Control events for the rules that tripped since the last call."""
        trips, self.engine.trips = self.engine.trips, []
        return [
            ControlEvent(
                id=f"rule-{stable_id(trip.code, trip.at.isoformat())}",
                symbol=ACCOUNT_SCOPE,
                timestamp=trip.at,
                action="rule",
                state=trip.state.value,
                actor=f"risk:{trip.code}",
                reason=trip.reason,
                version=self.engine.operator_version,
            )
            for trip in trips
        ]

    def _remember(self, order_id: str) -> None:
        if len(self._decided) == self._decided.maxlen:
            self._decided_set.discard(self._decided[0])
        self._decided.append(order_id)
        self._decided_set.add(order_id)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.engine.snapshot(),
            "marks": self.marks,
            "decided": list(self._decided),
            "gaps": self.gap_rule.snapshot(),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.engine.restore(snapshot)
        self.marks = dict(snapshot["marks"])
        self._decided = deque(snapshot["decided"], maxlen=REMEMBERED_DECISIONS)
        self._decided_set = set(self._decided)
        self.gap_rule.restore(snapshot.get("gaps", []))


def denied_event(order: Order, reason: str) -> OrderEvent:
    """The one event a denied order gets (same id scheme as a broker's event: one per order)."""
    return OrderEvent(
        id=event_id(order.id),
        symbol=order.symbol,
        timestamp=order.timestamp,
        client_order_id=order.id,
        status="denied",
        side=order.side,
        quantity=order.quantity,
        price=None,
        commission=0.0,
        reason=reason,
    )
