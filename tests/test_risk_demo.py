"""The default demo (mock data, crossover strategy, paper broker) through the risk stage: the broker
never sees an order it must reject (no buy beyond the cash), the strategy never even asks to sell
a symbol the account does not hold (long only by its own orders, buys withheld while the account is
not ACTIVE, and the BUYs the risk stage denied dropped from its book once it reads the account),
and it pays costs small enough that the daily loss limit does not stop it within the hour
(tests/measure_demo.py runs the hour)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed, step_for
from tradebot.risk.state import TradingState
from tradebot.risk.store import poll_interval
from tradebot.risk.views import Holdings, held_if_not_active
from tradebot.strategy.service import StrategyPartition, book_factory
from tradebot.universe.resolver import curated_symbols

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
TICKS = 90_000  # three minutes of the demo at its default 500 ticks/s


@dataclass
class Demo:
    """What ``count`` ticks of the demo did: the order events by status (denials by their code;
    ``unheld sell``: a sell of a symbol not held when it reached the risk stage, ``unheld sell
    after a poll``: one sent after the strategy worker read the account not ACTIVE), fills by side
    in the last tenth of the run, the lowest cash, the ticks seen in each state, the account."""

    account: BrokerPartition
    strategy: StrategyPartition
    statuses: Counter[str] = field(default_factory=Counter)
    late_fills: Counter[str] = field(default_factory=Counter)
    states: Counter[TradingState] = field(default_factory=Counter)
    lowest_cash: float = 0.0


def run_demo(count: int, **overrides: Any) -> Demo:
    """``count`` ticks of the default demo (with ``overrides`` of its settings) through the strategy
    worker's partition (its book and its trading-state gate, fed what the worker polls every third of
    a lease period of tick time: the state and, while it is not ACTIVE, the account's holdings per
    strategy), the risk stage and the paper broker."""
    settings = Settings(_env_file=None, **overrides)
    symbols = curated_symbols(settings.symbol_mode)[: settings.max_symbols]
    ticks = MockFeed(symbols, settings.mock_seed, clock=lambda: START, step=step_for(settings.mock_ticks_per_second))
    polled: list[tuple[TradingState, Holdings | None]] = [(TradingState.ACTIVE, None)]  # as the worker last read it
    poll_ticks = round(poll_interval(settings.lease_ttl_ms) * settings.mock_ticks_per_second)
    strategy = StrategyPartition(
        book_factory(settings), settings.order_quantity, lambda: polled[0][0], account_held=lambda: polled[0][1]
    )
    demo = Demo(BrokerPartition(settings), strategy, lowest_cash=settings.starting_cash)
    account = demo.account
    for number in range(count):
        tick = ticks.next_tick()  # one at a time: an hour is 1.8 M of them
        if number % poll_ticks == 0:
            state = account.risk.engine.state
            committed = {**account.broker.snapshot(), "risk": account.risk.snapshot(), "pnl": account.pnl.snapshot()}
            polled[0] = (state, held_if_not_active(committed) if state is not TradingState.ACTIVE else None)
        demo.states[account.risk.engine.state] += 1
        orders = [event for _, event in strategy.apply([tick]) if isinstance(event, Order)]
        positions = account.broker.positions
        for order in orders:
            if order.side == "sell" and not (order.symbol in positions and positions[order.symbol].quantity > 0):
                demo.statuses["unheld sell"] += 1
                demo.statuses["unheld sell after a poll"] += polled[0][1] is not None
        for _, event in account.apply(orders) if orders else []:
            status = getattr(event, "status", "control")
            demo.statuses[status if status != "denied" else (event.reason or "").split(":")[0]] += 1  # type: ignore[attr-defined]
            if status == "filled" and number >= count * 0.9:
                demo.late_fills[event.side] += 1  # type: ignore[attr-defined]
        demo.lowest_cash = min(demo.lowest_cash, account.broker.cash)
    return demo


def test_the_default_demo_trades_all_along_never_runs_out_of_cash_nor_sells_what_it_does_not_hold() -> None:
    demo = run_demo(TICKS)
    statuses = demo.statuses
    assert statuses["filled"] > 1000, statuses
    assert statuses["rejected"] == 0, statuses  # the broker never had to refuse an order
    assert statuses["unheld sell"] == 0, statuses  # the strategy never asked to sell what is not held
    assert set(statuses) == {"filled"}, statuses  # no order denied: every BUY sent was taken
    assert demo.lowest_cash >= 0
    assert set(demo.states) == {TradingState.ACTIVE}, demo.states  # the loss limits (on) never tripped
    assert demo.late_fills["buy"] > 0, demo.late_fills  # still trading at the end: buying
    assert demo.late_fills["sell"] > 0, demo.late_fills  # and selling
    held = {symbol for symbol, position in demo.account.broker.positions.items() if position.quantity > 0}
    assert held, "the demo still holds positions"


def test_after_the_daily_loss_limit_trips_the_demo_only_sells_what_it_holds() -> None:
    # a limit the default demo reaches within its three minutes (it loses about 0.09 % in them)
    demo = run_demo(TICKS, risk_daily_loss_pct=0.0003)
    statuses = demo.statuses
    assert demo.states[TradingState.REDUCING] > TICKS // 4, demo.states  # it tripped, well before the end
    assert statuses["control"] == 1, statuses  # the one rule event
    assert statuses["reducing"] > 0, statuses  # BUYs sent before the worker read the trip: denied
    # ... and forgotten at the next poll: no SELL of them after it (only one sent before it could find
    # one nothing held, a whipsaw within the poll interval)
    assert statuses["unheld sell after a poll"] == 0, statuses
    assert statuses["no_position"] == statuses["unheld sell"], statuses
    assert statuses["rejected"] == 0, statuses
    # REDUCING: it sold what it held and bought nothing since; its book and the account agree (empty)
    assert demo.late_fills["buy"] == 0, demo.late_fills
    assert not any(position.quantity for position in demo.account.broker.positions.values())
    assert demo.strategy.book.positions == {name: {} for name in demo.strategy.book.names}
