"""The default demo (mock data, crossover strategy, paper broker) through the risk stage: the broker
never sees an order it must reject (no buy beyond the cash, no sell of a symbol not held)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.execution.service import BrokerPartition
from tradebot.market_data.mock_feed import MockFeed, step_for
from tradebot.strategy.moving_average import MovingAverageCrossover
from tradebot.universe.resolver import curated_symbols

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
TICKS = 90_000  # three minutes of the demo at its default 500 ticks/s


def run_demo(count: int) -> tuple[Counter, float, BrokerPartition]:
    """``count`` ticks of the default demo through the strategy, the risk stage and the paper broker:
    the order events by status (denials by their code), the lowest cash, and the account."""
    settings = Settings(_env_file=None)
    symbols = curated_symbols(settings.symbol_mode)[: settings.max_symbols]
    ticks = MockFeed(symbols, settings.mock_seed, clock=lambda: START, step=step_for(settings.mock_ticks_per_second))
    strategy = MovingAverageCrossover(settings.short_window, settings.long_window)
    account = BrokerPartition(settings)
    statuses: Counter = Counter()
    lowest_cash = settings.starting_cash
    for tick in ticks.take(count):
        orders = [Order.from_signal(signal, settings.order_quantity) for signal in strategy.on_tick(tick)]
        for _, event in account.apply(orders) if orders else []:
            status = getattr(event, "status", "control")
            statuses[status if status != "denied" else (event.reason or "").split(":")[0]] += 1  # type: ignore[attr-defined]
        lowest_cash = min(lowest_cash, account.broker.cash)
    return statuses, lowest_cash, account


def test_the_default_demo_never_runs_out_of_cash_nor_sells_what_it_does_not_hold() -> None:
    statuses, lowest_cash, account = run_demo(TICKS)
    assert statuses["filled"] > 1000, statuses
    assert statuses["rejected"] == 0, statuses  # the broker never had to refuse an order
    assert lowest_cash >= 0
    held = {symbol for symbol, position in account.broker.positions.items() if position.quantity > 0}
    assert held, "the demo still holds positions"
