"""The pure risk engine: every check trips exactly at its threshold, with its reason code."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tradebot.broker.paper import Position
from tradebot.common.models import Order
from tradebot.risk import reasons
from tradebot.risk.engine import RiskEngine
from tradebot.risk.limits import RiskLimits
from tradebot.risk.portfolio import MarketState, Portfolio
from tradebot.risk.state import TradingState

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
_counter = iter(range(1_000_000))


def order(side: str = "buy", quantity: float = 10, price: float = 100.0, symbol: str = "AAPL", at: datetime = T0):
    n = next(_counter)
    return Order(
        id=f"co-{n}",
        symbol=symbol,
        timestamp=at,
        side=side,
        quantity=quantity,
        reference_price=price,
        signal_id=f"s{n}",
    )


def cash(amount: float = 100_000.0, **positions: tuple[float, float]) -> Portfolio:
    """A portfolio with cash and positions given as SYMBOL=(quantity, price)."""
    held = {s: Position(quantity=q, average_cost=p, last_price=p) for s, (q, p) in positions.items()}
    return Portfolio(cash=amount, positions=held)


def engine(**limits: object) -> RiskEngine:
    return RiskEngine(RiskLimits(**limits))  # type: ignore[arg-type]


def test_no_limits_approves_a_buy_with_its_quantity():
    decision = engine().check(order(quantity=7), cash())
    assert (decision.approved, decision.code, decision.quantity) == (True, reasons.APPROVED, 7)


def test_max_order_notional_allows_the_limit_and_denies_beyond():
    risk = engine(max_order_notional=1_000.0)
    assert risk.check(order(quantity=10, price=100.0), cash()).approved
    denied = risk.check(order(quantity=10, price=100.01, symbol="MSFT"), cash())
    assert (denied.approved, denied.code) == (False, reasons.MAX_ORDER_NOTIONAL)
    assert "RISK_MAX_ORDER_NOTIONAL" in denied.reason


def test_max_position_share_of_equity():
    risk = engine(max_position_pct=0.15)  # equity 100,000: at most 15,000 in one symbol
    portfolio = cash(95_000.0, AAPL=(50, 100.0))  # holds 5,000 already
    assert risk.check(order(quantity=100, price=100.0), portfolio).approved
    assert risk.check(order(quantity=101, price=100.0, at=T0 + timedelta(seconds=5)), portfolio).code == (
        reasons.MAX_POSITION
    )


def test_max_gross_exposure():
    risk = engine(max_gross_exposure_pct=0.9)
    portfolio = cash(20_000.0, MSFT=(800, 100.0))  # equity 100,000, gross 80,000
    assert risk.check(order(quantity=100, price=100.0), portfolio).approved
    assert risk.check(order(quantity=101, price=100.0, symbol="NVDA"), portfolio).code == reasons.MAX_GROSS_EXPOSURE


def test_max_open_positions_counts_new_symbols_only():
    risk = engine(max_open_positions=2)
    portfolio = cash(AAPL=(1, 100.0), MSFT=(1, 100.0))
    assert risk.check(order(symbol="AAPL"), portfolio).approved  # adding to a held symbol
    assert risk.check(order(symbol="NVDA"), portfolio).code == reasons.MAX_OPEN_POSITIONS
    assert risk.check(order(symbol="NVDA"), cash(AAPL=(1, 100.0))).approved


def test_buying_power_counts_slippage_and_commission():
    risk = engine(slippage_bps=100.0, commission_per_share=0.5)  # 10 shares at 100: 1,010 + 5
    assert risk.check(order(quantity=10), cash(1_015.0)).approved
    assert risk.check(order(quantity=10, symbol="MSFT"), cash(1_014.99)).code == reasons.BUYING_POWER


def test_no_short_selling_and_sells_are_capped_at_the_position():
    risk = engine()
    assert risk.check(order("sell", quantity=5), cash()).code == reasons.NO_POSITION
    capped = risk.check(order("sell", quantity=50), cash(AAPL=(20, 100.0)))
    assert (capped.approved, capped.quantity) == (True, 20)


@pytest.mark.parametrize(
    ("limit", "code", "symbols"),
    [
        ("max_orders_per_second", reasons.RATE_PER_SECOND, ["A", "B", "C", "D"]),
        ("max_symbol_orders_per_second", reasons.SYMBOL_RATE_PER_SECOND, ["A", "A", "A", "A"]),
    ],
)
def test_rate_per_second(limit: str, code: str, symbols: list[str]):
    risk = engine(**{limit: 3})
    decisions = [
        risk.check(order(symbol=s, at=T0 + timedelta(milliseconds=100 * i)), cash()) for i, s in enumerate(symbols)
    ]
    assert [d.code for d in decisions] == [reasons.APPROVED] * 3 + [code]
    assert risk.check(order(symbol="A", at=T0 + timedelta(seconds=1)), cash()).approved  # the first left the window


@pytest.mark.parametrize(
    ("limit", "code", "same_symbol"),
    [
        ("max_orders_per_minute", reasons.RATE_PER_MINUTE, False),
        ("max_symbol_orders_per_minute", reasons.SYMBOL_RATE_PER_MINUTE, True),
    ],
)
def test_rate_per_minute(limit: str, code: str, same_symbol: bool):
    risk = engine(**{limit: 5})
    symbols = ["A"] * 6 if same_symbol else ["A", "B", "C", "D", "E", "F"]
    decisions = [risk.check(order(symbol=s, at=T0 + timedelta(seconds=10 * i)), cash()) for i, s in enumerate(symbols)]
    assert [d.code for d in decisions] == [reasons.APPROVED] * 5 + [code]


def test_duplicate_order_within_the_window():
    risk = engine(duplicate_window_s=2.0)
    assert risk.check(order(), cash()).approved
    assert risk.check(order(at=T0 + timedelta(seconds=1.999)), cash()).code == reasons.DUPLICATE_ORDER
    assert risk.check(order("sell", at=T0 + timedelta(seconds=1)), cash(AAPL=(1, 100.0))).approved  # other side
    assert risk.check(order(at=T0 + timedelta(seconds=2)), cash()).approved


def test_a_buy_after_a_sell_is_a_new_round_trip_not_a_duplicate():
    risk = engine(duplicate_window_s=2.0)
    assert risk.check(order(), cash()).approved
    assert risk.check(order("sell", at=T0 + timedelta(seconds=0.2)), cash(AAPL=(1, 100.0))).approved
    assert risk.check(order(at=T0 + timedelta(seconds=0.4)), cash()).approved  # buy, sell, buy
    assert risk.check(order(at=T0 + timedelta(seconds=0.6)), cash()).code == reasons.DUPLICATE_ORDER


def test_price_collar_against_the_last_trade():
    risk = engine(price_collar_pct=0.05)
    market = MarketState(last_prices={"AAPL": 100.0})
    assert risk.check(order(price=105.0), cash(), market).approved
    assert risk.check(order(price=105.01, at=T0 + timedelta(seconds=1)), cash(), market).code == reasons.PRICE_COLLAR
    assert risk.check(order(price=94.99, at=T0 + timedelta(seconds=2)), cash(), market).code == reasons.PRICE_COLLAR


def test_daily_loss_trips_reducing_at_the_limit_and_resets_next_session():
    risk = engine(daily_loss_pct=0.03)
    assert risk.check(order(), cash(100_000.0)).approved  # session starts at equity 100,000
    assert risk.check(order(symbol="MSFT"), cash(97_000.01)).approved  # a loss just under 3 %
    assert risk.check(order(symbol="NVDA"), cash(97_000.0)).code == reasons.REDUCING
    assert risk.state is TradingState.REDUCING
    assert risk.trips[-1].code == reasons.DAILY_LOSS
    assert risk.check(order("sell", symbol="AAPL"), cash(97_000.0, AAPL=(1, 100.0))).approved  # exits pass
    tomorrow = T0 + timedelta(days=1)
    assert risk.check(order(symbol="NVDA", at=tomorrow), cash(97_000.0)).approved
    assert risk.state is TradingState.ACTIVE


def test_drawdown_halts_at_the_limit_until_the_operator_resumes():
    risk = engine(max_drawdown_pct=0.15)
    assert risk.check(order(), cash(120_000.0)).approved  # the peak
    assert risk.check(order(symbol="MSFT"), cash(102_000.01)).approved
    halted = risk.check(order("sell", symbol="AAPL"), cash(101_999.0, AAPL=(1, 1.0)))
    assert halted.code == reasons.HALTED
    assert risk.trips[-1].code == reasons.MAX_DRAWDOWN
    assert risk.check(order(at=T0 + timedelta(days=1)), cash(102_000.0)).code == reasons.HALTED
    risk.set_operator(TradingState.ACTIVE, version=1)  # resume: the peak starts again from here
    assert risk.check(order(symbol="NVDA"), cash(102_000.0)).approved


def test_operator_states():
    risk = engine()
    risk.set_operator(TradingState.REDUCING, 1)
    assert risk.check(order(), cash()).code == reasons.REDUCING
    assert risk.check(order("sell"), cash(AAPL=(5, 100.0))).approved
    risk.set_operator(TradingState.HALTED, 2)
    assert risk.check(order("sell", at=T0 + timedelta(seconds=9)), cash(AAPL=(5, 100.0))).code == reasons.HALTED


class _Closed:
    def is_open(self, at: datetime) -> bool:
        return False


def test_market_hours_only_when_enforced():
    assert RiskEngine(RiskLimits(), market_hours=_Closed()).check(order(), cash()).approved
    enforced = RiskEngine(RiskLimits(enforce_market_hours=True), market_hours=_Closed())
    assert enforced.check(order(), cash()).code == reasons.MARKET_CLOSED


def test_cooldown_after_a_losing_close():
    risk = engine(cooldown_s=60.0)
    risk.record_close("AAPL", -1.0, T0)
    assert risk.check(order(at=T0 + timedelta(seconds=59.9)), cash()).code == reasons.COOLDOWN
    assert risk.check(order(symbol="MSFT", at=T0 + timedelta(seconds=59.9)), cash()).approved
    assert risk.check(order(at=T0 + timedelta(seconds=60)), cash()).approved
    risk.record_close("MSFT", +1.0, T0)
    assert risk.check(order(symbol="MSFT", at=T0 + timedelta(seconds=61)), cash()).approved  # a win: no cooldown


def test_lock_after_n_losses_within_the_window():
    risk = engine(loss_lock_count=3, loss_lock_window_s=100.0, loss_lock_s=50.0)
    risk.record_close("A", -1.0, T0)
    risk.record_close("B", -1.0, T0 + timedelta(seconds=10))
    assert risk.check(order(at=T0 + timedelta(seconds=11)), cash()).approved
    risk.record_close("C", -1.0, T0 + timedelta(seconds=20))
    assert risk.check(order(symbol="D", at=T0 + timedelta(seconds=21)), cash()).code == reasons.LOSS_LOCK
    assert risk.check(order(symbol="D", at=T0 + timedelta(seconds=70)), cash()).approved


def test_losses_outside_the_window_do_not_lock():
    risk = engine(loss_lock_count=2, loss_lock_window_s=100.0, loss_lock_s=50.0)
    risk.record_close("A", -1.0, T0)
    risk.record_close("B", -1.0, T0 + timedelta(seconds=100))
    assert risk.check(order(at=T0 + timedelta(seconds=101)), cash()).approved


def test_snapshot_restores_every_memory():
    limits = RiskLimits(max_symbol_orders_per_second=1, duplicate_window_s=5, cooldown_s=30, daily_loss_pct=0.5)
    first = RiskEngine(limits)
    first.check(order(), cash())
    first.record_close("MSFT", -5.0, T0)
    first.set_operator(TradingState.REDUCING, 3)
    second = RiskEngine(limits)
    second.restore(json.loads(json.dumps(first.snapshot())))
    assert second.snapshot() == first.snapshot()
    later = T0 + timedelta(seconds=0.5)
    probe = [order("sell", at=later), order(symbol="MSFT", at=later), order(symbol="NVDA", at=later)]
    assert [first.check(o, cash(AAPL=(1, 100.0))) for o in probe] == [
        second.check(o, cash(AAPL=(1, 100.0))) for o in probe
    ]


def test_an_injected_clock_replaces_the_order_time():
    risk = RiskEngine(RiskLimits(duplicate_window_s=10.0), clock=lambda: T0)
    assert risk.check(order(at=T0), cash()).approved
    assert risk.check(order(at=T0 + timedelta(hours=1)), cash()).code == reasons.DUPLICATE_ORDER


def test_limits_from_settings_follow_market_hours_and_names():
    from tradebot.common.config import Settings

    settings = Settings(risk_max_order_notional=123.0, position_sizing="fixed_notional")
    limits = RiskLimits.from_settings(settings)
    assert (limits.max_order_notional, limits.sizing, limits.enforce_market_hours) == (123.0, "fixed_notional", False)
    assert RiskLimits.from_settings(settings, real_broker=True).enforce_market_hours
    assert RiskLimits.from_settings(replace_settings(settings, market_hours="enforce")).enforce_market_hours


def replace_settings(settings, **changes):  # type: ignore[no-untyped-def]
    return settings.model_copy(update=changes)


def test_limits_are_frozen():
    with pytest.raises(AttributeError):
        RiskLimits().max_order_notional = 5  # type: ignore[misc]
    assert replace(RiskLimits(), max_order_notional=5).max_order_notional == 5


def test_an_older_operator_version_is_adopted_but_keeps_a_tripped_rule():
    risk = engine(daily_loss_pct=0.03)
    risk.set_operator(TradingState.HALTED, 5)
    risk.check(order(), cash(100_000.0))
    risk.check(order(symbol="MSFT"), cash(97_000.0))  # trips the daily loss
    risk.set_operator(TradingState.ACTIVE, 0)  # Redis lost the record: the operator's word is ACTIVE again
    assert risk.state is TradingState.REDUCING  # but the rule still holds
    risk.set_operator(TradingState.ACTIVE, 1)
    assert risk.state is TradingState.ACTIVE
