"""GET /signals, /orders and /fills against a real database: filters, pages, newest first, 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.storage_fixtures import migrated_database
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings
from tradebot.common.models import Order, OrderEvent, Signal
from tradebot.storage.writer import write_events

DAY = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)


def _activity() -> list:
    """Two strategies trading three symbols, one signal a minute over two days; every fifth order rejected."""
    events: list = []
    for i in range(30):
        moment = DAY + timedelta(minutes=i) + (timedelta(days=1) if i >= 20 else timedelta())
        strategy = "ma_crossover_5_20" if i % 2 == 0 else "ma_crossover_10_50"
        signal = Signal(
            id=f"sig-{i:02d}",
            symbol=("AAPL", "MSFT", "PENNY")[i % 3],
            timestamp=moment,
            side="buy" if i % 4 < 2 else "sell",
            price=0.123456 if i % 3 == 2 else 220.123456,
            confidence=0.5,
            strategy=strategy,
            tick_id=f"tick-{i}",
        )
        order = Order.from_signal(signal, quantity=10)
        rejected = i % 5 == 0
        denied = i == 29  # the risk stage's refusal: an order event like the broker's
        fill = OrderEvent(
            id=f"fill-{i:02d}",
            symbol=signal.symbol,
            timestamp=moment,
            client_order_id=order.id,
            status="denied" if denied else "rejected" if rejected else "filled",
            side=signal.side,
            quantity=10,
            price=None if rejected or denied else signal.price * 1.0001,
            commission=0.0 if rejected or denied else 0.05000001,
            reason="max_gross_exposure: …" if denied else "insufficient cash: …" if rejected else None,
        )
        events += [signal, order, fill]
    return events


@pytest.fixture(scope="module")
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    dsn = await migrated_database(database_url, "activity_api_test")
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, _activity())
    finally:
        await conn.close()
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def get(client: httpx.AsyncClient, url: str, status: int = 200) -> dict:
    response = await client.get(url)
    assert response.status_code == status, response.text
    return response.json()


async def test_signals_come_newest_first_with_prices_as_quoted(api: httpx.AsyncClient) -> None:
    body = await get(api, "/signals")
    times = [s["timestamp"] for s in body["signals"]]
    assert body["count"] == 30
    assert times == sorted(times, reverse=True)
    assert body["next_cursor"] is None
    prices = {s["symbol"]: s["price"] for s in body["signals"]}
    assert prices == {"AAPL": 220.12, "MSFT": 220.12, "PENNY": 0.1235}


async def test_filters_by_symbol_strategy_and_time(api: httpx.AsyncClient) -> None:
    body = await get(api, "/signals?symbol=aapl&strategy=ma_crossover_5_20")
    assert body["count"] == 5
    assert {(s["symbol"], s["strategy"]) for s in body["signals"]} == {("AAPL", "ma_crossover_5_20")}
    first_day = await get(api, "/orders?end=2026-12-01")  # a date alone: the whole day
    assert first_day["count"] == 20
    assert {o["strategy"] for o in first_day["orders"]} == {"ma_crossover_5_20", "ma_crossover_10_50"}
    window = await get(api, "/fills?start=2026-12-01T14:35:00Z&end=2026-12-01T14:40:00Z")
    assert [f["id"] for f in window["fills"]] == [f"fill-{i:02d}" for i in range(9, 4, -1)]


async def test_fills_filter_by_status_and_show_money_to_the_cent(api: httpx.AsyncClient) -> None:
    rejected = await get(api, "/fills?status=rejected")
    assert rejected["count"] == 6
    assert all(f["reason"] and f["price"] is None for f in rejected["fills"])
    filled = await get(api, "/fills?status=filled&symbol=AAPL")
    assert {f["commission"] for f in filled["fills"]} == {0.05}
    assert {f["price"] for f in filled["fills"]} == {220.15}
    assert all(f["strategy"] for f in filled["fills"])


async def test_pages_follow_the_cursor_without_gaps_or_repeats(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    url = "/fills?limit=7"
    pages = 0
    while url:
        body = await get(api, url)
        seen += [f["id"] for f in body["fills"]]
        pages += 1
        url = f"/fills?limit=7&cursor={body['next_cursor']}" if body["next_cursor"] else ""
    assert pages == 5
    assert seen == [f"fill-{i:02d}" for i in range(29, -1, -1)]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/signals?limit=0", "limit: Input should be greater than or equal to 1"),
        ("/orders?limit=1001", "limit: Input should be less than or equal to 1000"),
        ("/fills?status=open", "status: Input should be 'submitted', 'accepted'"),
        ("/fills?cursor=garbage", "cursor 'garbage' is not valid"),
        ("/signals?symbol=1BAD", "is not a valid ticker"),
        ("/orders?start=yesterday", "start: Input should be a valid datetime"),
        ("/signals?start=2026-12-02&end=2026-12-01", "is after end"),
    ],
)
async def test_bad_input_gets_a_422_saying_what_to_fix(api: httpx.AsyncClient, url: str, message: str) -> None:
    body = await get(api, url, status=422)
    assert message in body["detail"]


async def test_denied_orders_are_listed_with_their_reason(api: httpx.AsyncClient) -> None:
    body = await get(api, "/fills?status=denied")
    assert [(f["id"], f["status"], f["reason"]) for f in body["fills"]] == [
        ("fill-29", "denied", "max_gross_exposure: …")
    ]
