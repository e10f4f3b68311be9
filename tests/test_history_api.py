"""The history API against a real database: bars equal an independent aggregation, input errors.

Every test runs against plain PostgreSQL (on-the-fly aggregation), against plain PostgreSQL with
stand-in views for the rollups (the TimescaleDB query path) and, when TEST_TIMESCALE_DSN points at
a TimescaleDB server, against TimescaleDB (continuous aggregates): same tests, same data.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.storage_fixtures import (
    DAYS,
    RANGE_END,
    RANGE_START,
    TIMEFRAMES,
    assert_same_bars,
    migrated_database,
    minute_bar,
    reference_bars,
    session_database,
    session_ticks,
)
from tradebot.api import deps
from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.db import drop_database
from tradebot.common.models import Tick
from tradebot.common.streams import STORAGE_GROUP, heartbeat_key, tick_stream
from tradebot.storage.buckets import bucket_sql
from tradebot.storage.writer import write_events

TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")
# "stand-in-rollups" puts plain views named like TimescaleDB's continuous aggregates over plain
# PostgreSQL, so the API's rollup query path runs here too; the real TimescaleDB run joins only when
# a server is given (tests/test_timescale.py reports the skip).
BACKENDS = ["postgresql", "stand-in-rollups"] + (
    [pytest.param("timescaledb", marks=pytest.mark.timescale)] if TIMESCALE_DSN else []
)
EXPECTED_MODE = {"postgresql": "postgresql", "stand-in-rollups": "timescaledb", "timescaledb": "timescaledb"}

AAPL = session_ticks("AAPL", seed=1)
MSFT = session_ticks("MSFT", seed=2, step_s=53)
MONDAY_10 = DAYS[1].replace(hour=10).astimezone(UTC)
MSFT_BARS = (
    # alpaca covers 10:00-10:09 with more volume than iex, which also has 10:00-10:04 and 11:00-11:01
    [minute_bar("MSFT", MONDAY_10 + timedelta(minutes=i), "alpaca", 200 + i, 1000, vwap=200.5 + i) for i in range(10)]
    + [minute_bar("MSFT", MONDAY_10 + timedelta(minutes=i), "iex", 300 + i, 100, vwap=300.5) for i in range(5)]
    + [minute_bar("MSFT", MONDAY_10 + timedelta(minutes=60 + i), "iex", 400 + i, 50) for i in range(2)]
    # a pre-market minute with no ticks at all, and a daily bar that wins its whole day
    + [minute_bar("MSFT", DAYS[2].replace(hour=8).astimezone(UTC), "alpaca", 250, 40, vwap=250.5)]
    + [minute_bar("MSFT", DAYS[2].astimezone(UTC), "alpaca", 150, 5e6, vwap=150.5, timeframe="1d")]
)
NO_500_PROBES = [
    "/history/%00",
    "/history/%20",
    "/history/AAPL?start=",
    "/history/AAPL?end=1e20",
    "/history/AAPL?limit=-1",
    "/history/AAPL?start=2024-03-08T25:00",
    "/stats/AAPL?end=0",
    "/history/AAPL?timeframe=",
    "/history/AAPL?start=2099-12-31T23:59:59Z",
]


@pytest.fixture(scope="module", params=BACKENDS)
async def api(request: pytest.FixtureRequest, database_url: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a fresh database holding the test market, and a client for it."""
    server = TIMESCALE_DSN if request.param == "timescaledb" else database_url
    assert server
    name = session_database("history_api_test")
    dsn = await migrated_database(server, name)
    await _write(dsn, [*AAPL, *MSFT, *MSFT_BARS])
    async with _serve(dsn, request.param, redis_url) as (client, _):
        yield client
    await drop_database(server, name)


@asynccontextmanager
async def _serve(dsn: str, backend: str, redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app on ``dsn`` (with stand-in rollups for that backend) and a client for it."""
    if backend == "stand-in-rollups":
        await _create_stand_in_rollups(dsn)
    app = create_app(Settings(_env_file=None, database_url=dsn, redis_url=redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        client.headers["x-backend"] = backend
        yield client, app


async def _write(dsn: str, events: list) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, events)
    finally:
        await conn.close()


async def _create_stand_in_rollups(dsn: str) -> None:
    """Plain views with the columns of the ohlcv_* continuous aggregates (slow, but the same rows)."""
    conn = await asyncpg.connect(dsn)
    try:
        for timeframe in TIMEFRAMES:
            await conn.execute(f"""
                CREATE VIEW ohlcv_{timeframe} AS
                SELECT symbol, {bucket_sql("ts", timeframe)} AS bucket,
                       (array_agg(price ORDER BY ts))[1] AS open, max(price) AS high, min(price) AS low,
                       (array_agg(price ORDER BY ts DESC))[1] AS close, sum(size) AS volume,
                       count(*) AS trade_count, sum(price * size) AS notional
                FROM ticks GROUP BY 1, 2""")
    finally:
        await conn.close()


async def get_json(client: httpx.AsyncClient, url: str, status: int = 200) -> dict:
    response = await client.get(url)
    assert response.status_code == status, response.text
    return response.json()


def iso(moment: datetime) -> str:
    """URL-safe ISO 8601 (a literal '+' in a query string would mean a space)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(timeframe: str) -> str:
    return f"timeframe={timeframe}&start={iso(RANGE_START)}&end={iso(RANGE_END)}&limit=10000"


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_history_equals_independent_aggregation_of_stored_ticks(api: httpx.AsyncClient, timeframe: str) -> None:
    body = await get_json(api, f"/history/AAPL?{window(timeframe)}")
    assert body["symbol"] == "AAPL"
    assert body["timeframe"] == timeframe
    assert body["mode"] == EXPECTED_MODE[api.headers["x-backend"]]
    assert_same_bars(body["bars"], reference_bars(AAPL, timeframe))


async def test_daily_bars_are_new_york_days_and_keep_evening_trades_across_utc_midnight(api: httpx.AsyncClient) -> None:
    body = await get_json(api, f"/history/AAPL?{window('1d')}")
    starts = [bar["timestamp"] for bar in body["bars"]]
    # EST before the DST switch (05:00Z), EDT after it (04:00Z)
    assert starts == ["2024-03-08T05:00:00Z", "2024-03-11T04:00:00Z", "2024-03-12T04:00:00Z"]
    friday_trades = sum(1 for tick in AAPL if tick.timestamp < datetime(2024, 3, 9, 5, tzinfo=UTC))
    assert body["bars"][0]["trade_count"] == friday_trades


async def test_daily_bars_carry_their_session_date_and_timeframes_ignore_case(api: httpx.AsyncClient) -> None:
    lower = await get_json(api, f"/history/AAPL?{window('1d')}")
    upper = await get_json(api, f"/history/AAPL?{window('1d').replace('timeframe=1d', 'timeframe=1D')}")
    assert upper == lower
    assert [bar["session_date"] for bar in lower["bars"]] == ["2024-03-08", "2024-03-11", "2024-03-12"]
    minutes = await get_json(api, "/history/AAPL?timeframe=1M&limit=1")
    assert minutes["timeframe"] == "1m"
    assert minutes["bars"][0]["session_date"] is None


async def test_an_end_date_without_a_time_means_the_whole_day(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/history/AAPL?timeframe=1h&start=2024-03-11&end=2024-03-11&limit=10000")
    expected = [b for b in reference_bars(AAPL, "1h") if b.timestamp.date() == datetime(2024, 3, 11, tzinfo=UTC).date()]
    assert expected
    assert len(body["bars"]) == len(expected)
    assert_same_bars(body["bars"], expected)
    day = await get_json(api, "/history/AAPL?timeframe=1d&start=2024-03-11&end=2024-03-11")
    assert [bar["session_date"] for bar in day["bars"]] == ["2024-03-11"]


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_stored_bars_take_precedence_without_double_counting(api: httpx.AsyncClient, timeframe: str) -> None:
    body = await get_json(api, f"/history/MSFT?{window(timeframe)}")
    expected = reference_bars(MSFT, timeframe, MSFT_BARS)
    assert expected != reference_bars(MSFT, timeframe)  # the stored bars do change this series
    assert_same_bars(body["bars"], expected)


async def test_minute_covered_by_two_feeds_takes_the_one_with_more_volume(api: httpx.AsyncClient) -> None:
    start = iso(MONDAY_10)
    body = await get_json(api, f"/history/MSFT?timeframe=1m&start={start}&limit=1")
    assert body["bars"][0]["open"] == 200
    assert body["bars"][0]["volume"] == 1000


async def test_without_start_returns_the_latest_bars_before_end(api: httpx.AsyncClient) -> None:
    end = DAYS[2].replace(hour=10).astimezone(UTC)
    body = await get_json(api, f"/history/AAPL?timeframe=5m&limit=100&end={iso(end)}")
    expected = [bar for bar in reference_bars(AAPL, "5m") if bar.timestamp < end][-100:]
    assert body["count"] == 100  # reaches back over the weekend gap to Friday
    assert_same_bars(body["bars"], expected)


async def test_start_in_a_gap_returns_the_next_bars_after_it(api: httpx.AsyncClient) -> None:
    saturday = datetime(2024, 3, 9, 12, tzinfo=UTC)
    body = await get_json(api, f"/history/AAPL?timeframe=1m&start={iso(saturday)}&limit=5")
    assert_same_bars(body["bars"], [bar for bar in reference_bars(AAPL, "1m") if bar.timestamp >= saturday][:5])


async def test_start_long_before_the_data_returns_its_first_bars(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/history/AAPL?timeframe=1m&start=1970-01-02T00:00:00Z&limit=3")
    assert_same_bars(body["bars"], reference_bars(AAPL, "1m")[:3])


async def test_far_future_end_still_returns_the_latest_bars(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/history/AAPL?timeframe=1d&limit=2&end=2099-01-01T00:00:00Z")
    assert_same_bars(body["bars"], reference_bars(AAPL, "1d")[-2:])


async def test_limit_caps_bars_from_start(api: httpx.AsyncClient) -> None:
    body = await get_json(api, f"/history/AAPL?timeframe=1m&start={iso(RANGE_START)}&limit=7")
    assert_same_bars(body["bars"], reference_bars(AAPL, "1m")[:7])


async def test_symbol_is_case_insensitive_and_offsets_are_honoured(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/history/aapl?timeframe=1h&start=2024-03-08T09:30:00-05:00&limit=1")
    assert body["symbol"] == "AAPL"
    assert body["bars"][0]["timestamp"] == "2024-03-08T15:00:00Z"


async def test_ohlcv_gives_the_history_bars_by_column(api: httpx.AsyncClient) -> None:
    history = await get_json(api, f"/history/MSFT?{window('15m')}")
    columns = await get_json(api, f"/ohlcv/MSFT?{window('15m')}")
    assert columns["count"] == history["count"]
    for name in ("open", "high", "low", "close", "volume", "trade_count", "vwap"):
        assert columns[name] == [bar[name] for bar in history["bars"]]
    assert columns["timestamp"] == [bar["timestamp"] for bar in history["bars"]]


async def test_symbols_lists_time_range_and_counts(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/symbols")
    by_symbol = {entry["symbol"]: entry for entry in body["symbols"]}
    assert body["count"] == 2
    assert set(by_symbol) == {"AAPL", "MSFT"}
    assert by_symbol["AAPL"]["ticks"] == len(AAPL)
    assert by_symbol["AAPL"]["bars"] == 0
    assert by_symbol["MSFT"]["bars"] == len(MSFT_BARS)
    assert by_symbol["AAPL"]["first"] == AAPL[0].timestamp.isoformat().replace("+00:00", "Z")


async def test_stats_summarise_the_daily_series(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/stats/AAPL")
    days = reference_bars(AAPL, "1d")
    assert body["days"] == 3
    assert body["trade_count"] == len(AAPL)
    assert body["open"] == days[0].open
    assert body["close"] == days[-1].close
    assert body["high"] == max(d.high for d in days)
    assert body["low"] == min(d.low for d in days)
    returns = [days[i].close / days[i - 1].close - 1 for i in (1, 2)]
    assert body["mean_daily_return"] == pytest.approx(sum(returns) / 2)
    assert body["change"] == pytest.approx(days[-1].close - days[0].open)
    assert (body["first_session"], body["last_session"]) == ("2024-03-08", "2024-03-12")


VALIDATION_CASES = [
    ("/history/AAPL$", 422, "'AAPL$' is not a valid ticker"),
    ("/history/ABCDEFGHIJK", 422, "is not a valid ticker"),
    ("/history/AAPL?timeframe=2m", 422, "timeframe: Input should be one of 1m, 5m, 15m, 1h, 1d (case-insensitive)"),
    ("/history/AAPL?start=yesterday", 422, "start: Input should be a valid datetime or date"),
    ("/history/AAPL?start=2024-02-30", 422, "start: Input should be a valid datetime or date"),
    (
        "/history/AAPL?start=2024-03-09&end=2024-03-08",
        422,
        "start (2024-03-09T00:00:00+00:00) is after end (2024-03-08, i.e. before 2024-03-09T00:00:00+00:00)",
    ),
    ("/history/AAPL?limit=0", 422, "limit: Input should be greater than or equal to 1"),
    ("/history/AAPL?limit=10001", 422, "limit: Input should be less than or equal to 10000"),
    ("/history/AAPL?limit=ten", 422, "limit: Input should be a valid integer"),
    ("/history/AAPL?start=1900-01-01", 422, "start must be between 1970-01-01 and 2100-01-01"),
    ("/ohlcv/AAPL?timeframe=1w", 422, "timeframe: Input should be"),
    ("/stats/AAPL?start=2024-03-09&end=2024-03-08", 422, "is after end"),
    ("/history/ZZZZ", 404, "no data stored for symbol ZZZZ"),
    ("/ohlcv/ZZZZ", 404, "no data stored for symbol ZZZZ"),
    ("/stats/ZZZZ", 404, "no data stored for symbol ZZZZ"),
]


@pytest.mark.parametrize(("url", "status", "message"), VALIDATION_CASES)
async def test_bad_input_gets_a_status_and_a_message_saying_what_to_fix(
    api: httpx.AsyncClient, url: str, status: int, message: str
) -> None:
    response = await api.get(url)
    assert response.status_code == status
    assert message in response.json()["detail"]


@pytest.mark.parametrize("url", NO_500_PROBES)
async def test_odd_input_never_causes_a_server_error(api: httpx.AsyncClient, url: str) -> None:
    response = await api.get(url)
    assert response.status_code < 500, response.text
    assert isinstance(response.json(), dict)


async def test_empty_range_is_an_empty_list_not_an_error(api: httpx.AsyncClient) -> None:
    body = await get_json(api, "/history/AAPL?start=2024-03-09T12:00:00Z&end=2024-03-09T12:00:00Z")
    assert body["count"] == 0
    assert body["bars"] == []


async def test_health_reports_database_mode_workers_and_stream_backlog(api: httpx.AsyncClient, bus: Bus) -> None:
    beat = {
        "role": "storage",
        "consumer": "host-1",
        "pid": 1,
        "host": "host",
        "counters": {"handled": 3},
        "started_at": datetime.now(UTC).isoformat(),
        "updated_at": datetime.now(UTC).isoformat(),
    }
    await bus.redis.set(heartbeat_key("storage", "host-1"), json.dumps(beat), ex=30)
    await bus.ensure_group(tick_stream(0), STORAGE_GROUP)
    await bus.publish([(tick_stream(0), AAPL[0]), (tick_stream(0), AAPL[1])])
    body = await get_json(api, "/health")
    assert body["status"] == "ok"
    assert body["redis_reachable"] is True
    expected_mode = EXPECTED_MODE[api.headers["x-backend"]]
    assert body["database"] == {"reachable": True, "mode": expected_mode, "replica_reachable": None}
    assert [(w["role"], w["consumer"], w["counters"]) for w in body["workers"]] == [
        ("storage", "host-1", {"handled": 3})
    ]
    storage = next(s for s in body["streams"] if s["stream"] == tick_stream(0) and s["group"] == STORAGE_GROUP)
    assert (storage["length"], storage["pending"], storage["lag"]) == (1, 0, 1)  # entries: one of two ticks


async def test_health_counts_dead_letters_and_shows_redis_memory(api: httpx.AsyncClient, bus: Bus) -> None:
    for entry_id in ("1-1", "1-2"):
        await bus.dead_letter(STORAGE_GROUP, tick_stream(0), entry_id, {"garbage": "x"}, "unsupported schema version")
    body = await get_json(api, "/health")
    assert body["dead_letters"] == {f"dlq.{tick_stream(0)}": 2}
    memory = body["redis_memory"]
    assert memory["used_bytes"] > 0
    assert memory["over_budget"] is (memory["used_bytes"] > memory["budget_bytes"])


async def test_openapi_documents_every_route(api: httpx.AsyncClient) -> None:
    assert (await api.get("/docs")).status_code == 200
    paths = (await get_json(api, "/openapi.json"))["paths"]
    assert {"/history/{symbol}", "/ohlcv/{symbol}", "/stats/{symbol}", "/symbols", "/health"} <= set(paths)
    assert {"/signals", "/orders", "/fills", "/account"} <= set(paths)
    history = {p["name"]: p for p in paths["/history/{symbol}"]["get"]["parameters"]}
    assert "whole day" in history["end"]["description"]
    assert "case-insensitive" in history["timeframe"]["description"]
    assert "real data wins" in history["source"]["description"]


def test_reference_market_is_what_the_tests_assume() -> None:
    assert all(isinstance(t, Tick) for t in AAPL)
    assert len({t.id for t in AAPL}) == len(AAPL)
    assert len({t.timestamp for t in AAPL}) == len(AAPL)  # no ties: open/close are unambiguous


# --- Stored data the aggregation cannot handle, and stored bars of buckets that are still open ---
# A database of its own (the tests above count its symbols), the same backends, and a fixed clock.

MONDAY, TUESDAY = DAYS[1], DAYS[2]  # New York midnights
NOW = TUESDAY.replace(hour=11, minute=40, second=30).astimezone(UTC)
WEDNESDAY = (TUESDAY + timedelta(days=1)).astimezone(UTC)  # Tuesday's New York day has closed


def _at(day: datetime, hour: int, minute: int, second: int = 0) -> datetime:
    return day.replace(hour=hour, minute=minute, second=second).astimezone(UTC)


def _live_ticks() -> list[Tick]:
    """LIVE trades all Monday, and on Tuesday from the open until just before NOW (11:40:30)."""
    moments = [_at(MONDAY, 9, 30) + timedelta(seconds=s) for s in range(0, 390 * 60, 97)]
    moments += [_at(TUESDAY, 9, 30) + timedelta(seconds=s) for s in range(0, 130 * 60, 41)]
    moments += [_at(TUESDAY, 11, 40, 10), _at(TUESDAY, 11, 40, 20)]
    return [
        Tick.create("LIVE", 100 + (i % 17) * 0.25, 1 + i % 7, moment, source="test", trade_id=i)
        for i, moment in enumerate(moments)
    ]


LIVE_TICKS = _live_ticks()
# What a backfill run during Tuesday morning stores: closed buckets and snapshots of open ones.
LIVE_BARS = [
    minute_bar("LIVE", MONDAY.astimezone(UTC), "alpaca", 150, 5e5, vwap=150.5, timeframe="1d"),  # closed
    minute_bar("LIVE", TUESDAY.astimezone(UTC), "alpaca", 170, 300, vwap=170.5, timeframe="1d"),  # open at NOW
    minute_bar("LIVE", _at(TUESDAY, 10, 0), "alpaca", 160, 2000, vwap=160.5, timeframe="1h"),  # closed
    minute_bar("LIVE", _at(TUESDAY, 11, 0), "alpaca", 165, 100, vwap=165.5, timeframe="1h"),  # open at NOW
    minute_bar("LIVE", _at(TUESDAY, 10, 58), "alpaca", 180, 700, vwap=180.5),  # closed minutes
    minute_bar("LIVE", _at(TUESDAY, 10, 59), "alpaca", 181, 700, vwap=181.5),
    minute_bar("LIVE", _at(TUESDAY, 11, 40), "alpaca", 190, 10, vwap=190.5),  # the open minute
]
# Only snapshots of open buckets and nothing finer: they are all there is, so they are shown.
SNAP_BARS = [
    minute_bar("SNAP", TUESDAY.astimezone(UTC), "alpaca", 70, 900, vwap=70.5, timeframe="1d"),
    minute_bar("SNAP", _at(TUESDAY, 11, 0), "alpaca", 71, 90, vwap=71.5, timeframe="1h"),
]
# Rows the event models would reject, stored directly: (symbol, New York time, price, size).
BAD_TICKS = [
    ("BIG", _at(MONDAY, 10, 0), 100.0, 5.0),
    ("BIG", _at(TUESDAY, 10, 0), 1e200, 1e200),
    ("BIG", _at(TUESDAY, 10, 0, 1), 100.0, 5.0),
    ("TINY", _at(TUESDAY, 10, 0), 1e-200, 1e-200),
    ("JUMP", _at(TUESDAY, 10, 0), 1e-310, 1.0),
    ("JUMP", _at(TUESDAY, 15, 0), 1e6, 1.0),
]
OVERFLOW = "value out of range: overflow"


@dataclass
class EdgeApi:
    """A client of the app on the edge-case database, and the clock its requests see."""

    client: httpx.AsyncClient
    now: datetime


@pytest.fixture(scope="module", params=BACKENDS)
async def edge_server(request: pytest.FixtureRequest, database_url: str, redis_url: str) -> AsyncIterator[EdgeApi]:
    server = TIMESCALE_DSN if request.param == "timescaledb" else database_url
    assert server
    name = session_database("history_api_edge_test")
    dsn = await migrated_database(server, name)
    await _write(dsn, [*LIVE_TICKS, *LIVE_BARS, *SNAP_BARS])
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO ticks (symbol, ts, id, price, size, source) "
            "VALUES ($1, $2::timestamptz, $1 || ':' || $2::timestamptz::text, $3, $4, 'sql')",
            BAD_TICKS,
        )
        await conn.execute(
            """INSERT INTO bars VALUES ('BIGBAR', '1m', $1, 'sql', 'sql:BIGBAR', 1e200, 1e200, 1e200,
                                                       1e200, 1e200, 1, 1e200)""",
            _at(TUESDAY, 10, 0),
        )
    finally:
        await conn.close()
    async with _serve(dsn, request.param, redis_url) as (client, app):
        edge = EdgeApi(client, NOW)
        app.dependency_overrides[deps.current_time] = lambda: edge.now
        yield edge
    await drop_database(server, name)


@pytest.fixture
def edge(edge_server: EdgeApi) -> EdgeApi:
    """The edge-case app with its clock at NOW (Tuesday 11:40:30 New York)."""
    edge_server.now = NOW
    return edge_server


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/history/BIG", OVERFLOW),
        ("/history/BIG?timeframe=1d", OVERFLOW),
        ("/ohlcv/BIG?timeframe=1h", OVERFLOW),
        ("/stats/BIG", OVERFLOW),
        ("/history/TINY?timeframe=5m", "value out of range: underflow"),
        ("/history/BIGBAR", OVERFLOW),  # a stored bar: vwap * volume
        ("/history/BIGBAR?timeframe=1d", OVERFLOW),
        ("/stats/JUMP", "change_pct overflows"),  # finite in the database, infinite in JSON
    ],
)
async def test_stored_values_out_of_range_are_a_422_naming_the_symbol_and_the_reason(
    edge: EdgeApi, url: str, reason: str
) -> None:
    symbol = url.split("/")[2].split("?")[0]
    response = await edge.client.get(url)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"stored data for {symbol} cannot be aggregated: {reason}")
    assert "leaves out the offending ticks or bars" in detail


async def test_a_range_without_the_offending_rows_still_answers(edge: EdgeApi) -> None:
    body = await get_json(edge.client, f"/history/BIG?timeframe=1d&end={iso(TUESDAY)}")
    assert [(bar["open"], bar["volume"], bar["vwap"]) for bar in body["bars"]] == [(100.0, 5.0, 100.0)]
    assert (await get_json(edge.client, f"/stats/BIG?end={iso(TUESDAY)}"))["days"] == 1


async def test_a_data_error_on_any_other_read_path_is_a_422_not_a_500(settings: Settings) -> None:
    app = create_app(settings)

    async def unrepresentable() -> None:
        raise asyncpg.exceptions.NumericValueOutOfRangeError("value out of range: overflow")

    app.add_api_route("/unrepresentable", unrepresentable)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/unrepresentable")
    assert response.status_code == 422
    assert response.json() == {"detail": f"stored data cannot be processed: {OVERFLOW}"}


@pytest.mark.parametrize("timeframe", TIMEFRAMES)
async def test_stored_bars_of_open_buckets_give_way_to_the_live_series(edge: EdgeApi, timeframe: str) -> None:
    body = await get_json(edge.client, f"/history/LIVE?{window(timeframe)}")
    expected = reference_bars(LIVE_TICKS, timeframe, LIVE_BARS, now=NOW)
    assert expected != reference_bars(LIVE_TICKS, timeframe, LIVE_BARS)  # the snapshots would change it
    assert_same_bars(body["bars"], expected)
    latest = body["bars"][-1]  # the open bucket: its close is the last tick, not a snapshot's
    assert latest["close"] == LIVE_TICKS[-1].price
    assert latest["volume"] != 10


async def test_open_day_shows_the_live_series_and_closed_buckets_keep_their_stored_bars(edge: EdgeApi) -> None:
    days = (await get_json(edge.client, f"/history/LIVE?{window('1d')}"))["bars"]
    assert (days[0]["open"], days[0]["volume"]) == (150, 5e5)  # Monday: the stored bar
    tuesday_minutes = [m for m in reference_bars(LIVE_TICKS, "1m", LIVE_BARS, now=NOW) if m.timestamp >= TUESDAY]
    assert days[1]["trade_count"] == sum(m.trade_count for m in tuesday_minutes)  # not the snapshot's 30
    hours = (await get_json(edge.client, f"/history/LIVE?{window('1h')}&start={iso(_at(TUESDAY, 10, 0))}"))["bars"]
    assert (hours[0]["open"], hours[0]["volume"]) == (160, 2000)  # 10:00 closed: the stored bar
    assert hours[1]["close"] == LIVE_TICKS[-1].price  # 11:00 still open: ticks and stored minutes
    stats = await get_json(edge.client, "/stats/LIVE")
    assert stats["close"] == LIVE_TICKS[-1].price
    assert stats["days"] == 2


async def test_once_the_bucket_closes_its_stored_bar_wins_again(edge: EdgeApi) -> None:
    edge.now = WEDNESDAY
    for timeframe in TIMEFRAMES:
        body = await get_json(edge.client, f"/history/LIVE?{window(timeframe)}")
        assert_same_bars(body["bars"], reference_bars(LIVE_TICKS, timeframe, LIVE_BARS))
    days = (await get_json(edge.client, f"/history/LIVE?{window('1d')}"))["bars"]
    assert (days[1]["open"], days[1]["volume"]) == (170, 300)


@pytest.mark.parametrize(("timeframe", "expected"), [("1d", [(70, 900)]), ("1h", [(71, 90)]), ("1m", [])])
async def test_a_snapshot_of_an_open_bucket_shows_when_nothing_finer_is_stored(
    edge: EdgeApi, timeframe: str, expected: list
) -> None:
    body = await get_json(edge.client, f"/history/SNAP?{window(timeframe)}")
    assert [(bar["open"], bar["volume"]) for bar in body["bars"]] == expected


def test_reference_series_honours_open_buckets() -> None:
    """The reference itself: the open day is rolled up from minutes, the closed one is the stored bar."""
    days = reference_bars(LIVE_TICKS, "1d", LIVE_BARS, now=NOW)
    assert (days[0].open, days[0].volume) == (150, 5e5)
    assert days[1].open != 170
    assert [d.open for d in reference_bars(LIVE_TICKS, "1d", LIVE_BARS, now=WEDNESDAY)] == [150, 170]
