"""Control through the API and the execution role: tokens, bad input, halt, reduce and flatten."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import Order, OrderEvent
from tradebot.common.streams import CONTROL_EVENTS, ORDER_EVENTS, ORDERS_NEW
from tradebot.execution import service
from tradebot.execution.account import read_account
from tradebot.risk import control
from tradebot.risk.state import TradingState
from tradebot.risk.store import read_record

TOKEN = "test-control-token"
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
_numbers = iter(range(1_000_000))


def order(side: str, symbol: str = "AAPL", quantity: float = 10, price: float = 100.0) -> Order:
    n = next(_numbers)
    return Order(
        id=f"co-{n}",
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        reference_price=price,
        signal_id=f"sig-{n}",
        timestamp=T0 + timedelta(seconds=10 * n),
    )


@pytest.fixture
async def api(bus: Bus, settings: Settings, clean_database: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def execute(bus: Bus, settings: Settings, *events: object) -> list[OrderEvent]:
    """Publish onto orders.new, run the execution worker until drained; the order events it added."""
    before = await bus.redis.xlen(ORDER_EVENTS)
    await bus.publish((ORDERS_NEW, event) for event in events)  # type: ignore[misc]
    burst = settings.model_copy(update={"burst": True, "risk_duplicate_window_s": 0.0})
    await asyncio.wait_for(service.run(burst, stop=asyncio.Event(), counters=Counter()), timeout=60)
    entries = await bus.redis.xrange(ORDER_EVENTS)
    return [decode(fields) for _, fields in entries[before:]]  # type: ignore[misc]


async def nothing_changed(bus: Bus) -> None:
    record, _ = await read_record(bus.redis)
    assert (record.state, record.version) == (TradingState.ACTIVE, 0)
    assert await bus.redis.xlen(CONTROL_EVENTS) == 0


async def test_control_is_403_until_an_api_token_is_set(bus: Bus, settings: Settings, clean_database: str) -> None:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        reply = await client.post("/control/halt", json={"reason": "test"}, headers={"Authorization": "Bearer x"})
    assert reply.status_code == 403
    assert "set API_TOKEN" in reply.json()["detail"]
    await nothing_changed(bus)


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "says"),
    [
        ("/control/halt", {}, {"reason": "x"}, 401, "Authorization: Bearer"),
        ("/control/halt", {"Authorization": "Bearer nope"}, {"reason": "x"}, 401, "wrong bearer token"),
        ("/control/halt", {"Authorization": TOKEN}, {"reason": "x"}, 401, "missing bearer token"),
        ("/control/explode", {"Authorization": f"Bearer {TOKEN}"}, {"reason": "x"}, 404, "choose one of: halt"),
        ("/control/halt", {"Authorization": f"Bearer {TOKEN}"}, {}, 422, "reason"),
        ("/control/halt", {"Authorization": f"Bearer {TOKEN}"}, {"reason": ""}, 422, "reason"),
        ("/control/halt", {"Authorization": f"Bearer {TOKEN}"}, {"reason": "x", "force": True}, 422, "force"),
    ],
)
async def test_bad_control_input_is_a_4xx_and_changes_nothing(
    api: httpx.AsyncClient, bus: Bus, path: str, headers: dict, body: dict, status: int, says: str
) -> None:
    reply = await api.post(path, json=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["detail"]
    await nothing_changed(bus)


async def test_halt_through_the_api_is_audited_and_shown(api: httpx.AsyncClient, bus: Bus) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = await api.post("/control/halt", json={"reason": "broker outage", "actor": "alice"}, headers=auth)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["state"], reply.json()["version"]) == ("HALTED", 1)
    record, _ = await read_record(bus.redis)
    assert (record.state, record.actor, record.reason) == (TradingState.HALTED, "alice", "broker outage")
    audit = [decode(fields) for _, fields in await bus.redis.xrange(CONTROL_EVENTS)]
    assert [(e.action, e.actor, e.reason) for e in audit] == [("halt", "alice", "broker outage")]  # type: ignore[attr-defined]
    risk = (await api.get("/risk")).json()
    assert risk["state"] == "HALTED"
    assert risk["limits"]["max_position_pct"] == 0.15


async def test_halt_denies_everything_and_resume_lets_orders_through(bus: Bus, settings: Settings) -> None:
    await control.apply_action(bus, "halt", actor="test", reason="test")
    events = await execute(bus, settings, order("buy"))
    assert [(e.status, (e.reason or "").split(":")[0]) for e in events] == [("denied", "halted")]
    await control.apply_action(bus, "resume", actor="test", reason="test")
    assert [e.status for e in await execute(bus, settings, order("buy"))] == ["filled"]


async def test_reduce_refuses_growth_and_passes_shrink(bus: Bus, settings: Settings) -> None:
    assert [e.status for e in await execute(bus, settings, order("buy", quantity=20))] == ["filled"]
    await control.apply_action(bus, "reduce", actor="test", reason="test")
    grow, shrink = order("buy", quantity=1), order("sell", quantity=5)
    events = await execute(bus, settings, grow, shrink)
    assert [(e.client_order_id, e.status) for e in events] == [(grow.id, "denied"), (shrink.id, "filled")]
    assert (events[0].reason or "").startswith("reducing: ")
    account = await read_account(bus.redis)
    assert account is not None
    assert account["positions"]["AAPL"]["quantity"] == 15


async def test_flatten_closes_every_position_and_stays_reducing(bus: Bus, settings: Settings) -> None:
    buys = [order("buy", symbol) for symbol in ("AAPL", "MSFT", "NVDA")]
    assert [e.status for e in await execute(bus, settings, *buys)] == ["filled"] * 3
    await control.apply_action(bus, "flatten", actor="test", reason="end of test")
    events = await execute(bus, settings, order("buy", "AAPL"))
    assert sorted((e.symbol, e.side, e.status) for e in events) == [
        ("AAPL", "buy", "denied"),  # after the flatten: REDUCING
        ("AAPL", "sell", "filled"),
        ("MSFT", "sell", "filled"),
        ("NVDA", "sell", "filled"),
    ]
    account = await read_account(bus.redis)
    assert account is not None
    assert all(p["quantity"] == 0 for p in account["positions"].values())
    assert (await read_record(bus.redis))[0].state is TradingState.REDUCING


async def test_flatten_cancels_the_paper_brokers_resting_orders_first(bus: Bus, settings: Settings) -> None:
    held = order("buy")
    resting = order("buy", "MSFT").model_copy(
        update={"id": "co-resting", "order_type": "limit", "limit_price": 90.0, "time_in_force": "gtc"}
    )
    assert [e.status for e in await execute(bus, settings, held, resting)] == ["filled", "accepted"]
    flatten = await control.apply_action(bus, "flatten", actor="test", reason="end of test")
    events = await execute(bus, settings, flatten, flatten)  # and a redelivered copy
    assert [(e.client_order_id, e.status) for e in events if e.symbol == "MSFT"] == [
        ("co-resting", "cancel_requested"),
        ("co-resting", "canceled"),
    ]
    assert [(e.symbol, e.side, e.status) for e in events if e.symbol == "AAPL"] == [("AAPL", "sell", "filled")]
    account = await read_account(bus.redis)
    assert account is not None
    assert all(p["quantity"] == 0 for p in account["positions"].values())


async def test_a_repeated_flatten_or_order_is_decided_once(bus: Bus, settings: Settings) -> None:
    buy = order("buy")
    await execute(bus, settings, buy)
    event = await control.apply_action(bus, "flatten", actor="test", reason="test")
    first = await execute(bus, settings, event)  # the flatten itself plus a redelivered copy
    again = await execute(bus, settings, event, buy)
    assert [e.status for e in first] == ["filled"]
    assert again == []


async def test_unknown_actions_and_bad_reasons_never_reach_redis(bus: Bus) -> None:
    with pytest.raises(control.ControlError, match="choose one of"):
        await control.apply_action(bus, "explode", actor="test", reason="x")
    with pytest.raises(control.ControlError, match="reason"):
        await control.apply_action(bus, "halt", actor="test", reason="")
    await nothing_changed(bus)
