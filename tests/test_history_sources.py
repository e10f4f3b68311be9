"""Sources kept apart: mock and real data of one symbol never merge; real data wins; ?source= picks
one; `tradebot data drop --source` removes one. On plain PostgreSQL, and TimescaleDB when given."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from tests.storage_fixtures import migrated_database, minute_bar
from tradebot.api.history_service import create_app
from tradebot.cli import app as cli
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.storage.writer import write_events

TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")
BACKENDS = ["postgresql"] + ([pytest.param("timescaledb", marks=pytest.mark.timescale)] if TIMESCALE_DSN else [])
MONDAY = datetime(2024, 3, 11, 14, 30, tzinfo=UTC)


def _ticks(symbol: str, price: float, source: str, count: int = 30) -> list[Tick]:
    return [
        Tick.create(symbol, price + i * 0.01, 100, MONDAY + timedelta(seconds=20 * i), source=source, trade_id=i)
        for i in range(count)
    ]


# MSFT: a backfilled day at ~$140 and live alpaca ticks, plus mock ticks at ~$430 in the same minutes.
MSFT = [
    *_ticks("MSFT", 430.0, "mock"),
    *_ticks("MSFT", 140.0, "alpaca"),
    minute_bar("MSFT", MONDAY.replace(hour=4), "alpaca", 140.0, 5e6, vwap=140.5, timeframe="1d"),
]
AAPL = _ticks("AAPL", 235.0, "mock")


@pytest.fixture(params=BACKENDS)
async def dsn(request: pytest.FixtureRequest, database_url: str) -> str:
    server = TIMESCALE_DSN if request.param == "timescaledb" else database_url
    assert server
    dsn = await migrated_database(server, "sources_test")
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, [*MSFT, *AAPL])
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def bars(api: httpx.AsyncClient, url: str) -> list[dict]:
    response = await api.get(url)
    assert response.status_code == 200, response.text
    return response.json()["bars"]


async def test_the_response_names_its_sources(api: httpx.AsyncClient) -> None:
    assert (await api.get("/history/MSFT")).json()["sources"] == ["alpaca"]
    assert (await api.get("/history/MSFT?source=mock")).json()["sources"] == ["mock"]
    assert (await api.get("/history/AAPL")).json()["sources"] == ["mock"]


async def test_real_data_wins_and_mock_data_never_merges_into_its_bars(api: httpx.AsyncClient) -> None:
    minutes = await bars(api, "/history/MSFT?timeframe=1m&start=2024-03-11")
    assert minutes
    assert all(140 <= b["low"] <= b["high"] < 141 for b in minutes)
    mock = await bars(api, "/history/MSFT?timeframe=1m&start=2024-03-11&source=mock")
    assert mock
    assert all(430 <= b["low"] <= b["high"] < 431 for b in mock)
    assert sum(b["trade_count"] for b in mock) == 30
    hours = await bars(api, "/history/MSFT?timeframe=1h&start=2024-03-11")
    assert hours
    assert all(b["high"] < 141 for b in hours)


async def test_a_symbol_with_only_mock_data_shows_it(api: httpx.AsyncClient) -> None:
    minutes = await bars(api, "/history/AAPL?timeframe=1m&start=2024-03-11")
    assert sum(b["trade_count"] for b in minutes) == 30
    assert minutes[0]["open"] == 235.0
    stats = (await api.get("/stats/MSFT?source=MOCK")).json()
    assert stats["open"] == 430.0


async def test_symbols_list_their_sources_and_an_absent_source_is_a_404(api: httpx.AsyncClient) -> None:
    listed = {s["symbol"]: s["sources"] for s in (await api.get("/symbols")).json()["symbols"]}
    assert listed == {"AAPL": ["mock"], "MSFT": ["alpaca", "mock"]}
    response = await api.get("/history/AAPL?source=polygon")
    assert response.status_code == 404
    assert response.json()["detail"] == "no data of source 'polygon' stored for AAPL; stored sources: mock"
    assert (await api.get("/history/AAPL?source=no%20such")).status_code == 422


async def test_data_drop_removes_one_source_only(dsn: str, api: httpx.AsyncClient) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["data", "drop", "--source", "mock", "--yes"],
        env={"DATABASE_URL": dsn, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 0, result.output
    assert "deleted 60 ticks and 0 bars of source 'mock'" in result.output
    listed = {s["symbol"]: s["sources"] for s in (await api.get("/symbols")).json()["symbols"]}
    assert listed == {"MSFT": ["alpaca"]}
    assert len(await bars(api, "/history/MSFT?timeframe=1m&start=2024-03-11")) > 0
