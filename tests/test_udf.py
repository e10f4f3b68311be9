"""TradingView UDF datafeed: the documented responses (../shared/reference/protocols.md §4), the
same bars as /history, and errors as ``s: error`` with a 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.storage_fixtures import DAYS, RANGE_END, RANGE_START, migrated_database, reference_bars, session_ticks
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings
from tradebot.common.models import OrderEvent
from tradebot.storage.writer import write_events

AAPL = session_ticks("AAPL", seed=1)
FILL_AT = DAYS[1].replace(hour=11).astimezone(UTC)
FILLS = [
    OrderEvent(
        id=f"ev-{i}",
        symbol="AAPL",
        timestamp=FILL_AT + timedelta(minutes=i),
        client_order_id=f"co-{i}",
        status="filled",
        side="buy" if i % 2 == 0 else "sell",
        quantity=10,
        price=101.25,
        commission=0.05,
    )
    for i in range(3)
]


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


@pytest.fixture(scope="module")
async def udf(database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    dsn = await migrated_database(database_url, "udf_test")
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, [*AAPL, *FILLS])
    finally:
        await conn.close()
    app = create_app(Settings(_env_file=None, database_url=dsn, redis_url=redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/udf") as client,
    ):
        yield client


async def test_config_supports_search_time_and_marks_and_not_group_requests(udf: httpx.AsyncClient) -> None:
    config = (await udf.get("/config")).json()
    assert config["supports_search"] is True
    assert config["supports_group_request"] is False
    assert config["supports_time"] is True
    assert config["supports_marks"] is True
    assert config["supported_resolutions"] == ["1", "5", "15", "60", "1D"]


async def test_time_is_a_bare_number_of_seconds(udf: httpx.AsyncClient) -> None:
    response = await udf.get("/time")
    assert abs(int(response.text) - unix(datetime.now(UTC))) < 3600


async def test_symbols_describes_a_stored_symbol(udf: httpx.AsyncClient) -> None:
    info = (await udf.get("/symbols", params={"symbol": "aapl"})).json()
    assert info["name"] == info["ticker"] == "AAPL"
    assert info["timezone"] == "America/New_York"
    assert info["session"] == "0930-1600"
    assert info["pricescale"] == 100
    assert info["minmov"] == 1
    assert info["has_intraday"] is True


@pytest.mark.parametrize(("symbol", "status"), [("ZZZZ", 404), ("a b!", 422)])
async def test_symbols_unknown_or_invalid_is_an_error_object(udf: httpx.AsyncClient, symbol: str, status: int) -> None:
    response = await udf.get("/symbols", params={"symbol": symbol})
    assert response.status_code == status
    assert response.json()["s"] == "error"
    assert response.json()["errmsg"]


async def test_search_returns_an_array_of_matching_symbols(udf: httpx.AsyncClient) -> None:
    found = (await udf.get("/search", params={"query": "AA", "limit": 30})).json()
    assert [item["symbol"] for item in found] == ["AAPL"]
    assert set(found[0]) == {"symbol", "full_name", "description", "exchange", "ticker", "type"}
    assert (await udf.get("/search", params={"query": "QQQQ"})).json() == []


async def test_history_gives_the_same_bars_as_the_reference_in_columns(udf: httpx.AsyncClient) -> None:
    params = {"symbol": "AAPL", "resolution": "5", "from": unix(RANGE_START), "to": unix(RANGE_END)}
    body = (await udf.get("/history", params=params)).json()
    expected = reference_bars(AAPL, "5m")
    assert body["s"] == "ok"
    assert body["t"] == [unix(bar.timestamp) for bar in expected]
    assert body["c"] == pytest.approx([bar.close for bar in expected], rel=1e-12)
    assert body["o"] == pytest.approx([bar.open for bar in expected], rel=1e-12)
    assert body["v"] == pytest.approx([bar.volume for bar in expected], rel=1e-12)
    assert len(body["h"]) == len(body["l"]) == len(expected)


async def test_history_to_is_exclusive(udf: httpx.AsyncClient) -> None:
    first = reference_bars(AAPL, "1m")[0].timestamp
    params = {"symbol": "AAPL", "resolution": "1", "from": unix(first), "to": unix(first) + 60}
    assert (await udf.get("/history", params=params)).json()["t"] == [unix(first)]


async def test_countback_takes_the_last_bars_before_to_and_ignores_from(udf: httpx.AsyncClient) -> None:
    expected = reference_bars(AAPL, "15m")
    params = {"symbol": "AAPL", "resolution": "15", "from": unix(RANGE_END), "to": unix(RANGE_END), "countback": 3}
    body = (await udf.get("/history", params=params)).json()
    assert body["t"] == [unix(bar.timestamp) for bar in expected[-3:]]


async def test_daily_bars_are_stamped_midnight_utc_of_their_session_date(udf: httpx.AsyncClient) -> None:
    params = {"symbol": "AAPL", "resolution": "1D", "from": unix(RANGE_START), "to": unix(RANGE_END)}
    body = (await udf.get("/history", params=params)).json()
    assert body["t"] == [unix(datetime(d.year, d.month, d.day, tzinfo=UTC)) for d in DAYS]


async def test_no_data_points_next_time_at_the_latest_earlier_bar_in_ms(udf: httpx.AsyncClient) -> None:
    after = RANGE_END + timedelta(days=30)
    params = {"symbol": "AAPL", "resolution": "1", "from": unix(after), "to": unix(after) + 3600}
    body = (await udf.get("/history", params=params)).json()
    assert body == {"s": "no_data", "nextTime": unix(reference_bars(AAPL, "1m")[-1].timestamp) * 1000}
    before = {"symbol": "AAPL", "resolution": "1", "from": unix(RANGE_START) - 7200, "to": unix(RANGE_START) - 3600}
    assert (await udf.get("/history", params=before)).json() == {"s": "no_data"}


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"symbol": "AAPL", "resolution": "7", "from": 0, "to": 10}, 422, "resolution"),
        ({"symbol": "AAPL", "resolution": "1", "from": 10, "to": 10}, 422, "before to"),
        ({"symbol": "ZZZZ", "resolution": "1", "from": 0, "to": 10}, 404, "unknown symbol"),
        ({"symbol": "a b", "resolution": "1", "from": 0, "to": 10}, 422, "not a valid ticker"),
    ],
)
async def test_history_errors_say_what_is_wrong(udf: httpx.AsyncClient, params: dict, status: int, says: str) -> None:
    response = await udf.get("/history", params=params)
    assert response.status_code == status
    assert response.json()["s"] == "error"
    assert says in response.json()["errmsg"]


async def test_missing_or_out_of_range_parameters_are_422(udf: httpx.AsyncClient) -> None:
    assert (await udf.get("/history", params={"symbol": "AAPL"})).status_code == 422
    assert (await udf.get("/history", params={"symbol": "AAPL", "resolution": "1", "to": -1})).status_code == 422


async def test_marks_are_the_fills_in_range(udf: httpx.AsyncClient) -> None:
    params = {"symbol": "AAPL", "from": unix(FILL_AT), "to": unix(FILL_AT) + 60, "resolution": "1"}
    marks = (await udf.get("/marks", params=params)).json()
    assert marks["id"] == ["ev-0", "ev-1"]
    assert marks["time"] == [unix(FILL_AT), unix(FILL_AT) + 60]
    assert marks["label"] == ["B", "S"]
    assert marks["color"] == ["green", "red"]
    assert marks["text"][0] == "buy 10 @ 101.25"
