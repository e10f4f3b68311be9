"""P&L per strategy: pure booking against the paper broker, then through the worker and GET /pnl."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tradebot.api.history_service import create_app
from tradebot.broker.paper import PaperBroker
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.streams import ORDERS_NEW
from tradebot.execution import service as execution
from tradebot.execution.attribution import UNATTRIBUTED, StrategyPnL

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def order(n: int, side: str, quantity: float, price: float, strategy: str | None, symbol: str = "AAPL") -> Order:
    return Order(
        id=f"co-{n}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        reference_price=price,
        signal_id=f"s-{n}",
        timestamp=T0 + timedelta(seconds=n),
        strategy=strategy,
    )


def book(orders: list[Order], commission_per_share: float = 0.01) -> tuple[PaperBroker, StrategyPnL]:
    """The orders through a paper broker, each fill booked to its strategy."""
    broker, attribution = PaperBroker(100_000.0, commission_per_share=commission_per_share), StrategyPnL()
    for o in orders:
        event = broker.execute(o)
        assert event is not None
        assert event.status == "filled"
        assert event.price is not None
        attribution.fill(o.strategy, o.symbol, o.side, event.quantity, event.price, event.commission)
    return broker, attribution


def test_a_sell_closes_its_own_strategys_holding_and_books_its_realised_pnl() -> None:
    _, attribution = book(
        [order(1, "buy", 10, 100.0, "fast"), order(2, "buy", 10, 200.0, "slow"), order(3, "sell", 10, 150.0, "fast")],
        commission_per_share=0.0,
    )
    report = attribution.report({"AAPL": 150.0})
    assert report["fast"]["realised_pnl"] == pytest.approx(500.0)
    assert report["fast"]["open_positions"] == 0
    assert report["slow"]["realised_pnl"] == 0.0
    assert report["slow"]["unrealised_pnl"] == pytest.approx(-500.0)
    assert report["slow"]["symbols"]["AAPL"]["quantity"] == 10


def test_an_exit_or_a_flatten_closes_every_holder_in_proportion() -> None:
    _, attribution = book(
        [
            order(1, "buy", 30, 100.0, "fast"),
            order(2, "buy", 10, 100.0, "slow"),
            order(3, "sell", 20, 110.0, "exit:stop_loss"),
        ],
        commission_per_share=0.0,
    )
    report = attribution.report({"AAPL": 110.0})
    assert report["fast"]["symbols"]["AAPL"]["quantity"] == pytest.approx(15)
    assert report["slow"]["symbols"]["AAPL"]["quantity"] == pytest.approx(5)
    assert report["fast"]["realised_pnl"] == pytest.approx(150.0)
    assert report["slow"]["realised_pnl"] == pytest.approx(50.0)
    assert "exit:stop_loss" not in report


def test_the_strategies_pnl_adds_up_to_the_accounts_with_commissions() -> None:
    orders = [
        order(1, "buy", 10, 100.0, "fast"),
        order(2, "buy", 5, 101.0, None),
        order(3, "buy", 7, 99.0, "slow", symbol="MSFT"),
        order(4, "sell", 12, 103.0, "fast"),
        order(5, "buy", 4, 98.0, "slow"),
        order(6, "sell", 7, 95.0, None),
        order(7, "sell", 3, 97.0, "slow", symbol="MSFT"),
    ]
    broker, attribution = book(orders)
    marks = {symbol: held.last_price for symbol, held in broker.positions.items()}
    report = attribution.report(marks)
    account = broker.account()
    total = account["realised_pnl"] + account["unrealised_pnl"]
    assert sum(r["realised_pnl"] + r["unrealised_pnl"] for r in report.values()) == pytest.approx(total)
    assert set(report) == {"fast", "slow", UNATTRIBUTED}
    for symbol, held in broker.positions.items():
        assert sum(r["symbols"].get(symbol, {}).get("quantity", 0) for r in report.values()) == pytest.approx(
            held.quantity
        )
    restored = StrategyPnL()
    restored.restore(attribution.snapshot())
    assert restored.report(marks) == report


async def test_pnl_per_strategy_through_the_worker_and_the_api(bus: Bus, settings: Settings) -> None:
    orders = [
        order(1, "buy", 10, 100.0, "fast"),
        order(2, "buy", 10, 100.0, "slow"),
        order(3, "sell", 5, 110.0, "fast"),
    ]
    await bus.publish((ORDERS_NEW, o) for o in orders)
    run = settings.model_copy(update={"burst": True, "slippage_bps": 0.0, "commission_per_share": 0.0})
    await asyncio.wait_for(execution.run(run, stop=asyncio.Event(), counters=Counter()), timeout=60)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api,
    ):
        by_strategy = (await api.get("/pnl", params={"by": "strategy"})).json()["pnl"]
        assert {name: (row["realised_pnl"], row["unrealised_pnl"]) for name, row in by_strategy.items()} == {
            "fast": (50.0, 50.0),
            "slow": (0.0, 100.0),
        }
        assert by_strategy["fast"]["symbols"]["AAPL"]["quantity"] == 5
        assert (await api.get("/pnl")).json()["pnl"] == by_strategy
        portfolio = (await api.get("/portfolio")).json()
        assert portfolio["pnl_by_strategy"] == {
            "fast": {"realised": 50.0, "unrealised": 50.0},
            "slow": {"realised": 0.0, "unrealised": 100.0},
        }
        by_symbol = (await api.get("/pnl", params={"by": "symbol"})).json()["pnl"]
        assert by_symbol == {"AAPL": {"realised": 50.0, "unrealised": 150.0}}
        bad = await api.get("/pnl", params={"by": "moon"})
        assert bad.status_code == 422
        assert "strategy" in bad.text
