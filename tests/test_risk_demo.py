"""The default demo (mock data, crossover strategy, paper broker) through the risk stage: the broker
never sees an order it must reject (no buy beyond the cash), and the strategy never even asks to
sell a symbol the account does not hold (long only by its own orders, buys withheld while the
account is not ACTIVE)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed, step_for
from tradebot.risk.state import TradingState
from tradebot.risk.store import poll_interval
from tradebot.strategy.service import StrategyPartition, book_factory
from tradebot.universe.resolver import curated_symbols

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
TICKS = 90_000  # three minutes of the demo at its default 500 ticks/s


def run_demo(count: int) -> tuple[Counter, float, BrokerPartition, dict[TradingState, int]]:
    """``count`` ticks of the default demo through the strategy worker's partition (its book and its
    trading-state gate, fed the account's state as the worker polls it: every third of a lease
    period of tick time), the risk stage and the paper broker: the order events by status (denials
    by their code; ``unheld sell``: a sell of a symbol not held when it reached the risk stage), the
    lowest cash, the account, and the ticks seen in each state."""
    settings = Settings(_env_file=None)
    symbols = curated_symbols(settings.symbol_mode)[: settings.max_symbols]
    ticks = MockFeed(symbols, settings.mock_seed, clock=lambda: START, step=step_for(settings.mock_ticks_per_second))
    account = BrokerPartition(settings)
    polled = [TradingState.ACTIVE]  # the state as the strategy worker last read it
    poll_ticks = round(poll_interval(settings.lease_ttl_ms) * settings.mock_ticks_per_second)
    strategy = StrategyPartition(book_factory(settings), settings.order_quantity, lambda: polled[0])
    statuses: Counter = Counter()
    states: Counter = Counter()
    lowest_cash = settings.starting_cash
    for number, tick in enumerate(ticks.take(count)):
        if number % poll_ticks == 0:
            polled[0] = account.risk.engine.state
        states[account.risk.engine.state] += 1
        orders = [event for _, event in strategy.apply([tick]) if isinstance(event, Order)]
        positions = account.broker.positions
        statuses["unheld sell"] += sum(
            1 for o in orders if o.side == "sell" and not (o.symbol in positions and positions[o.symbol].quantity > 0)
        )
        for _, event in account.apply(orders) if orders else []:
            status = getattr(event, "status", "control")
            statuses[status if status != "denied" else (event.reason or "").split(":")[0]] += 1  # type: ignore[attr-defined]
        lowest_cash = min(lowest_cash, account.broker.cash)
    return statuses, lowest_cash, account, dict(states)


def test_the_default_demo_never_runs_out_of_cash_nor_sells_what_it_does_not_hold() -> None:
    statuses, lowest_cash, account, _ = run_demo(TICKS)
    assert statuses["filled"] > 1000, statuses
    assert statuses["rejected"] == 0, statuses  # the broker never had to refuse an order
    assert statuses["unheld sell"] == 0, statuses  # the strategy never asked to sell what is not held
    assert set(statuses) == {"filled", "unheld sell"}, statuses  # no order denied: every BUY sent was taken
    assert lowest_cash >= 0
    held = {symbol for symbol, position in account.broker.positions.items() if position.quantity > 0}
    assert held, "the demo still holds positions"
