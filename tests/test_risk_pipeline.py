"""Through the workers: a limit trips exactly at its threshold, the denial is stored with its
reason and listed by the API beside the audit trail, the equity curve and the portfolio."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import Order
from tradebot.common.streams import EQUITY_SAMPLES, ORDER_EVENTS, ORDERS_NEW
from tradebot.execution import service as execution
from tradebot.execution.equity import equity_sample, grid_time
from tradebot.risk import control
from tradebot.risk.views import read_checkpoint
from tradebot.storage import timeseries_service as storage

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def buy(n: int, symbol: str, quantity: float, price: float) -> Order:
    return Order(
        id=f"co-{n}",
        symbol=symbol,
        side="buy",
        quantity=quantity,
        reference_price=price,
        signal_id=f"s-{n}",
        timestamp=T0 + timedelta(seconds=n),
    )


@pytest.mark.timeout(240)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_a_denial_at_the_threshold_is_stored_and_listed(
    bus: Bus, settings: Settings, clean_database: str
) -> None:
    limited = settings.model_copy(update={"burst": True, "risk_max_order_notional": 1_000.0})
    at_limit, beyond = buy(1, "AAPL", 10, 100.0), buy(2, "MSFT", 10, 100.01)
    await bus.publish([(ORDERS_NEW, at_limit), (ORDERS_NEW, beyond)])
    await asyncio.wait_for(execution.run(limited, stop=asyncio.Event(), counters=Counter()), timeout=60)
    await control.apply_action(bus, "reduce", actor="tester", reason="end of the day")
    checkpoint = await read_checkpoint(bus.redis)
    assert checkpoint is not None
    sample = equity_sample(checkpoint, grid_time(T0.timestamp(), 60))
    await bus.publish([(EQUITY_SAMPLES, sample), (EQUITY_SAMPLES, sample)])  # two replicas sampled the same minute
    await asyncio.wait_for(storage.run(limited, stop=asyncio.Event(), counters=Counter()), timeout=60)

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api,
    ):
        denied = (await api.get("/risk/denied")).json()
        assert [(d["client_order_id"], d["code"]) for d in denied] == [(beyond.id, "max_order_notional")]
        assert "RISK_MAX_ORDER_NOTIONAL" in denied[0]["reason"]
        audit = (await api.get("/control/events")).json()
        assert [(e["action"], e["state"], e["actor"]) for e in audit] == [("reduce", "REDUCING", "tester")]
        curve = (await api.get("/equity", params={"start": "2026-03-02"})).json()["points"]
        assert len(curve) == 1
        assert curve[0]["equity"] == sample.equity
        positions = (await api.get("/positions")).json()
        assert [(p["symbol"], p["quantity"]) for p in positions] == [("AAPL", 10)]
        portfolio = (await api.get("/portfolio")).json()
        assert portfolio["open_positions"] == 1
        assert portfolio["gross_exposure"] == 1_000.0
        assert all(portfolio[k] == round(portfolio[k], 2) for k in ("cash", "equity", "realised_pnl"))  # to the cent
        risk = (await api.get("/risk")).json()
        assert risk["state"] == "REDUCING"
        assert risk["usage"]["open_positions"] == 1
        assert risk["reason"] == "end of the day"  # what the dashboard shows beside the state
        assert (await api.get("/equity", params={"start": "2026-03-03", "end": "2026-03-02"})).status_code == 422


OFF = {
    name: 0
    for name in (
        "risk_max_order_notional",
        "risk_max_position_pct",
        "risk_max_gross_exposure_pct",
        "risk_max_open_positions",
        "risk_max_orders_per_second",
        "risk_max_orders_per_minute",
        "risk_max_symbol_orders_per_second",
        "risk_max_symbol_orders_per_minute",
        "risk_duplicate_window_s",
        "risk_price_collar_pct",
        "risk_daily_loss_pct",
        "risk_max_drawdown_pct",
        "slippage_bps",
        "commission_per_share",
    )
}


def at(seconds: float, side: str, symbol: str, quantity: float, price: float) -> Order:
    return Order(
        id=f"co-{symbol}-{side}-{seconds}-{quantity}-{price}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        reference_price=price,
        signal_id="s",
        timestamp=T0 + timedelta(seconds=seconds),
    )


LIMIT_CASES = {
    "max_order_notional": (
        {"risk_max_order_notional": 1_000.0},
        [at(0, "buy", "AAPL", 10, 100.0), at(1, "buy", "MSFT", 10, 100.01)],
    ),
    "max_position": (
        {"risk_max_position_pct": 0.01},  # 1,000 of 100,000
        [at(0, "buy", "AAPL", 10, 100.0), at(1, "buy", "AAPL", 1, 100.0)],
    ),
    "max_gross_exposure": (
        {"risk_max_gross_exposure_pct": 0.02},
        [at(0, "buy", "AAPL", 10, 100.0), at(1, "buy", "MSFT", 10, 100.0), at(2, "buy", "NVDA", 1, 100.0)],
    ),
    "max_open_positions": (
        {"risk_max_open_positions": 2},
        [at(0, "buy", "AAPL", 1, 100.0), at(1, "buy", "MSFT", 1, 100.0), at(2, "buy", "NVDA", 1, 100.0)],
    ),
    "symbol_rate_per_second": (
        {"risk_max_symbol_orders_per_second": 2},
        [at(0, "buy", "AAPL", 1, 100.0), at(0.5, "buy", "AAPL", 2, 100.0), at(0.9, "buy", "AAPL", 3, 100.0)],
    ),
    "duplicate_order": (
        {"risk_duplicate_window_s": 2.0},
        [at(0, "buy", "AAPL", 1, 100.0), at(2, "buy", "AAPL", 2, 100.0), at(3.999, "buy", "AAPL", 3, 100.0)],
    ),
    "price_collar": (
        {"risk_price_collar_pct": 0.05},
        [at(0, "buy", "AAPL", 1, 100.0), at(1, "buy", "AAPL", 1, 105.0), at(2, "buy", "AAPL", 1, 110.26)],
    ),
    "buying_power": (
        {"starting_cash": 1_000.0},
        [at(0, "buy", "AAPL", 10, 100.0), at(1, "buy", "MSFT", 1, 1.0)],
    ),
    "reducing": (  # the daily loss limit: 3 % down since the session opened turns trading REDUCING
        {"risk_daily_loss_pct": 0.03},
        [at(0, "buy", "AAPL", 1_000, 100.0), at(1, "sell", "AAPL", 1, 97.0), at(2, "buy", "MSFT", 1, 1.0)],
    ),
    "halted": (  # the drawdown limit: 15 % from the peak halts
        {"risk_max_drawdown_pct": 0.15},
        [at(0, "buy", "AAPL", 1_000, 100.0), at(1, "sell", "AAPL", 1, 85.0), at(2, "sell", "AAPL", 1, 85.0)],
    ),
}


async def test_each_limit_trips_at_its_threshold_through_the_execution_worker(bus: Bus, settings: Settings) -> None:
    for code, (limit, orders) in LIMIT_CASES.items():
        await bus.redis.flushdb()
        await bus.publish((ORDERS_NEW, order) for order in orders)
        run = settings.model_copy(update={**OFF, **limit, "burst": True})
        await asyncio.wait_for(execution.run(run, stop=asyncio.Event(), counters=Counter()), timeout=60)
        events = [decode(fields) for _, fields in await bus.redis.xrange(ORDER_EVENTS)]
        statuses = [(e.status, (e.reason or "").split(":")[0] or None) for e in events]  # type: ignore[attr-defined]
        assert statuses == [("filled", None)] * (len(orders) - 1) + [("denied", code)], code
