"""/account as shown: open positions only (closed on request), money to the cent, prices as quoted."""

from __future__ import annotations

from datetime import UTC, datetime

from tradebot.api.routes_account import account_out
from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Order

NOW = datetime(2026, 12, 1, 15, tzinfo=UTC)


def _order(n: int, symbol: str, side: str, price: float) -> Order:
    return Order(
        id=f"co-{n}", symbol=symbol, side=side, quantity=3, reference_price=price, signal_id=f"s{n}", timestamp=NOW
    )


def _account() -> dict:
    broker = PaperBroker(100_000.0, slippage_bps=1.0, commission_per_share=0.005)
    for order in (_order(1, "AAPL", "buy", 220.1234), _order(2, "T", "buy", 22.37), _order(3, "T", "sell", 22.91)):
        broker.execute(order)
    return broker.account()


def test_closed_positions_are_left_out_unless_asked_for() -> None:
    shown = account_out(_account(), include_closed=False)
    assert [p.symbol for p in shown.positions] == ["AAPL"]
    assert shown.closed_positions == 1
    with_closed = account_out(_account(), include_closed=True)
    assert [(p.symbol, p.quantity) for p in with_closed.positions] == [("AAPL", 3), ("T", 0)]


def test_money_is_shown_to_the_cent_and_prices_as_quoted() -> None:
    raw = _account()
    shown = account_out(raw, include_closed=True)
    assert raw["cash"] != round(raw["cash"], 2)  # the broker keeps full precision
    assert shown.cash == round(raw["cash"], 2)
    for name in ("equity", "realised_pnl", "unrealised_pnl", "commissions"):
        assert getattr(shown, name) == round(raw[name], 2), name
    aapl = shown.positions[0]
    assert aapl.average_cost == round(raw["positions"]["AAPL"]["average_cost"], 2)
    assert aapl.market_value == round(3 * 220.1234, 2)
