"""Position sizing modes, the NYSE calendar, and the risk stage's running totals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tradebot.broker.paper import Position
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.execution.risk_stage import new_engine
from tradebot.execution.service import BrokerPartition
from tradebot.risk.calendar import NyseHours
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio
from tradebot.risk.sizing import TradeStats, round_quantity, size
from tradebot.strategy.book import read_strategies_file
from tradebot.strategy.catalog import StrategyError

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def buy(price: float = 50.0, quantity: float = 10, symbol: str = "AAPL") -> Order:
    return Order(
        id="co-1", symbol=symbol, timestamp=T0, side="buy", quantity=quantity, reference_price=price, signal_id="s"
    )


def sell(quantity: float = 10) -> Order:
    return buy().model_copy(update={"side": "sell", "quantity": quantity})


EQUITY = Portfolio(cash=100_000.0)


@pytest.mark.parametrize(
    ("mode", "extra", "shares"),
    [
        ("fixed_quantity", {}, 10),
        ("fixed_notional", {"sizing_notional": 5_000.0}, 100),  # 5,000 / 50
        ("fixed_fractional", {"sizing_risk_pct": 0.01, "sizing_stop_pct": 0.02}, 1_000),  # 1,000 at risk / $1 stop
        ("equal_risk", {"max_gross_exposure_pct": 0.9, "max_open_positions": 20}, 90),  # 4,500 each
        ("kelly", {"sizing_risk_pct": 0.01, "sizing_kelly_cap": 0.1}, 20),  # too few trades: 1 % of equity
    ],
)
def test_buy_sizes(mode: str, extra: dict, shares: float) -> None:
    limits = RiskLimits(sizing=mode, **extra)
    assert size(buy(), EQUITY, MarketState(), limits, TradeStats()) == shares


def test_atr_sizing_risks_the_share_over_the_atr_stop() -> None:
    limits = RiskLimits(sizing="atr", sizing_risk_pct=0.01, sizing_atr_multiple=2.0)
    # 1,000 at risk; a stop 2 ATR = $5 away: 200 shares
    assert size(buy(), EQUITY, MarketState(atr={"AAPL": 2.5}), limits, TradeStats()) == 200
    assert size(buy(), EQUITY, MarketState(), limits, TradeStats()) == 1_000  # no ATR yet: fixed fractional


def test_kelly_follows_the_record_with_a_cap() -> None:
    stats = TradeStats()
    for pnl in [2.0] * 6 + [-1.0] * 4:  # W = 0.6, R = 2: Kelly 0.4, half Kelly 0.2, capped at 0.1
        stats.record(pnl)
    limits = RiskLimits(sizing="kelly", sizing_kelly_fraction=0.5, sizing_kelly_cap=0.1)
    assert stats.kelly() == pytest.approx(0.4)
    assert size(buy(), EQUITY, MarketState(), limits, stats) == 200  # 10,000 / 50
    losing = TradeStats()
    for pnl in [1.0] * 3 + [-1.0] * 7:
        losing.record(pnl)
    assert size(buy(), EQUITY, MarketState(), limits, losing) == 0  # Kelly says do not bet


def test_sells_close_the_position_and_never_exceed_it() -> None:
    held = Portfolio(cash=0.0, positions={"AAPL": Position(quantity=7, average_cost=50, last_price=50)})
    assert size(sell(10), held, MarketState(), RiskLimits(), TradeStats()) == 7
    assert size(sell(3), held, MarketState(), RiskLimits(), TradeStats()) == 3
    assert size(sell(3), held, MarketState(), RiskLimits(sizing="fixed_notional"), TradeStats()) == 7


@pytest.mark.parametrize(("time_in_force", "shares"), [("day", 2.5), ("gtc", 2), ("ioc", 2)])
def test_a_sell_capped_at_a_part_of_a_share_stays_an_order_that_may_be_sent(time_in_force: str, shares: float) -> None:
    # A broker's position mid-way through a partial fill: only a day order may carry the fraction
    # (the order model refuses a fractional gtc or ioc order; the broker chaos run found one built).
    held = Portfolio(cash=0.0, positions={"AAPL": Position(quantity=2.5, average_cost=50, last_price=50)})
    order = sell(5).model_copy(update={"time_in_force": time_in_force})
    quantity = size(order, held, MarketState(), RiskLimits(), TradeStats())
    assert quantity == shares
    Order.model_validate(order.model_dump() | {"quantity": quantity})  # a valid order


def test_whole_shares_unless_fractional() -> None:
    assert round_quantity(12.9999, fractional=False) == 12
    assert round_quantity(12.3456789, fractional=True) == pytest.approx(12.345678)
    limits = RiskLimits(sizing="fixed_notional", sizing_notional=100.0, fractional_shares=True)
    assert size(buy(price=30.0), EQUITY, MarketState(), limits, TradeStats()) == pytest.approx(3.333333)


def test_nyse_sessions_holidays_and_early_closes() -> None:
    nyse = NyseHours()
    new_york = timedelta(hours=-5)  # EST dates below

    def at(day: date, hour: int, minute: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) - new_york

    monday = date(2026, 3, 2)
    assert not nyse.is_open(at(monday, 9, 29))
    assert nyse.is_open(at(monday, 9, 30))
    assert nyse.is_open(at(monday, 15, 59))
    assert not nyse.is_open(at(monday, 16, 0))
    assert not nyse.is_open(at(date(2026, 2, 28), 12))  # a Saturday
    assert not nyse.is_open(at(date(2025, 12, 25), 12))  # Christmas
    black_friday = date(2025, 11, 28)  # the day after Thanksgiving closes at 13:00
    assert nyse.is_open(at(black_friday, 12, 59))
    assert not nyse.is_open(at(black_friday, 13, 0))


def test_the_stage_keeps_the_same_totals_as_a_fresh_sum() -> None:
    settings = Settings(_env_file=None, risk_duplicate_window_s=0.0)
    account = BrokerPartition(settings)
    orders = [
        buy(price=10.0 + n, quantity=3, symbol=symbol).model_copy(
            update={
                "id": f"co-{n}-{symbol}",
                "side": "buy" if n % 3 else "sell",
                "timestamp": T0 + timedelta(seconds=n),
            }
        )
        for n in range(30)
        for symbol in ("AAPL", "MSFT", "NVDA")
    ]
    account.risk.begin_batch()
    for order in orders:
        account._execute(order)
    kept = account.risk.portfolio(account.broker).totals()
    fresh = Portfolio(account.broker.cash, account.broker.positions).totals()
    assert kept == fresh  # exactly: integer micro-dollars


def test_a_strategy_can_choose_its_own_sizing_mode(tmp_path: Path) -> None:
    path = tmp_path / "strategies.toml"
    path.write_text(
        '[[strategy]]\nname = "steady"\nclass = "MovingAverageCrossover"\n'
        '[[strategy]]\nname = "bold"\nclass = "MovingAverageCrossover"\n'
        'sizing = { quantity = 10, position_sizing = "fixed_notional" }\n'
    )
    settings = Settings(strategies_file=path, position_sizing="fixed_quantity", sizing_notional=5_000.0)
    limits = new_engine(settings).limits
    assert limits.sizing_by_strategy == {"bold": "fixed_notional"}
    bold, steady = (buy().model_copy(update={"strategy": name}) for name in ("bold", "steady"))
    assert size(bold, EQUITY, MarketState(), limits, TradeStats()) == 100  # 5,000 / 50
    assert size(steady, EQUITY, MarketState(), limits, TradeStats()) == 10  # POSITION_SIZING
    path.write_text(path.read_text().replace('"fixed_notional"', '"martingale"'))
    with pytest.raises(StrategyError, match="position_sizing 'martingale' is not one of fixed_quantity"):
        read_strategies_file(path)
