"""TradingView alert webhooks: a valid alert becomes one signal and one order on the bus; a bad
secret, a bad signature, a malformed body or a replayed alert changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.storage_fixtures import migrated_database
from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode
from tradebot.common.config import Settings
from tradebot.common.models import Order, Signal
from tradebot.common.streams import ORDERS_NEW, signal_stream

SIGNALS = signal_stream(0)  # where webhook signals go: execution's slot, with the alert's key

SECRET = "tv-shared-secret"
ALERT = {"secret": SECRET, "alert_id": "2026-03-02T15:00:00Z-1", "symbol": "aapl", "side": "BUY", "price": 187.5}


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def dsn(database_url: str) -> str:
    return await migrated_database(database_url, "webhooks_test")


@pytest.fixture
async def api(dsn: str, redis_url: str, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(_env_file=None, database_url=dsn, redis_url=redis_url, webhook_secret=SECRET)
    async for client in serve(settings):
        yield client


async def published(bus: Bus) -> dict[str, list]:
    return {
        stream: [decode(fields) for _, fields in await bus.redis.xrange(stream)] for stream in (SIGNALS, ORDERS_NEW)
    }


async def test_an_alert_becomes_one_signal_and_one_order(api: httpx.AsyncClient, bus: Bus) -> None:
    response = await api.post("/webhooks/tradingview", json={**ALERT, "quantity": 3})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] is True
    assert body["duplicate"] is False
    streams = await published(bus)
    [signal], [order] = streams[SIGNALS], streams[ORDERS_NEW]
    assert isinstance(signal, Signal)
    assert isinstance(order, Order)
    assert (signal.symbol, signal.side, signal.price, signal.strategy) == ("AAPL", "buy", 187.5, "tradingview")
    assert (order.id, order.signal_id, order.quantity) == (body["order_id"], signal.id, 3)


async def test_a_replayed_alert_is_not_traded_twice(api: httpx.AsyncClient, bus: Bus) -> None:
    first = (await api.post("/webhooks/tradingview", json=ALERT)).json()
    again = await api.post("/webhooks/tradingview", json=ALERT)
    assert again.status_code == 202
    assert again.json() == {**first, "accepted": False, "duplicate": True}
    streams = await published(bus)
    assert len(streams[SIGNALS]) == len(streams[ORDERS_NEW]) == 1


async def test_a_valid_signature_passes_and_a_bad_one_is_401(api: httpx.AsyncClient, bus: Bus) -> None:
    body = json.dumps(ALERT).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    bad = await api.post("/webhooks/tradingview", content=body, headers={"X-Signature": "sha256=00"})
    assert bad.status_code == 401
    assert "X-Signature" in bad.json()["detail"]
    assert await published(bus) == {SIGNALS: [], ORDERS_NEW: []}
    ok = await api.post("/webhooks/tradingview", content=body, headers={"X-Signature": good})
    assert ok.status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**ALERT, "secret": "nope"}, 401, "wrong secret"),
        ({**ALERT, "side": "hold"}, 400, "side"),
        ({**ALERT, "price": -1}, 400, "price"),
        ({**ALERT, "symbol": "not a ticker"}, 400, "symbol"),
        ({**ALERT, "alert_id": ""}, 400, "alert_id"),
        ({**ALERT, "leverage": 10}, 400, "leverage"),
        ({k: v for k, v in ALERT.items() if k != "price"}, 400, "price"),
        ("not json", 400, "invalid alert"),
    ],
)
async def test_bad_input_is_a_4xx_with_the_reason_and_changes_nothing(
    api: httpx.AsyncClient, bus: Bus, body: object, status: int, says: str
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = await api.post("/webhooks/tradingview", content=content)
    assert response.status_code == status
    assert says in response.json()["detail"]
    assert await published(bus) == {SIGNALS: [], ORDERS_NEW: []}


async def test_without_a_configured_secret_webhooks_are_403(dsn: str, redis_url: str, bus: Bus) -> None:
    async for client in serve(Settings(_env_file=None, database_url=dsn, redis_url=redis_url)):
        response = await client.post("/webhooks/tradingview", json=ALERT)
        assert response.status_code == 403
        assert "set WEBHOOK_SECRET" in response.json()["detail"]


async def test_alerts_over_the_rate_limit_get_429_with_retry_after(dsn: str, redis_url: str, bus: Bus) -> None:
    settings = Settings(
        _env_file=None, database_url=dsn, redis_url=redis_url, webhook_secret=SECRET, webhook_rate_per_minute=2
    )
    async for client in serve(settings):
        codes = [
            (await client.post("/webhooks/tradingview", json={**ALERT, "alert_id": f"a{i}"})).status_code
            for i in range(3)
        ]
        assert codes == [202, 202, 429]
        limited = await client.post("/webhooks/tradingview", json={**ALERT, "alert_id": "a9"})
        assert int(limited.headers["retry-after"]) >= 1
    assert len((await published(bus))[ORDERS_NEW]) == 2
