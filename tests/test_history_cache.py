"""The /history cache of encoded closed windows, against real PostgreSQL: a window is served from
the cache only while no write has changed it, whoever writes (a late tick, a stored bar,
retention, tradebot data drop, tradebot reset), and in every API process.

Each write test first shows the window is a cache hit, then writes, then that the next response
is recomputed and equals a fresh app's (with no cache): without the version bump the hit would
serve the old bytes and the test fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.storage_fixtures import migrated_database, minute_bar, session_database
from tradebot.api import deps
from tradebot.api.history_cache import CACHE_HEADER
from tradebot.api.history_service import POOL_SIZE, create_app
from tradebot.common.config import Settings, SettingsError, load_settings
from tradebot.common.db import drop_database
from tradebot.common.models import Tick
from tradebot.maintenance.reset import HISTORY_TABLES
from tradebot.maintenance.sources import drop_source
from tradebot.storage.retention import enforce_tick_retention
from tradebot.storage.writer import write_events

TIMESCALE_DSN = os.environ.get("TEST_TIMESCALE_DSN")
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
OLD = NOW - timedelta(days=3)  # older than the retention tests' "2 days"
RECENT = NOW - timedelta(hours=1)
# 40 ticks 17 s apart from OLD: minutes OLD .. OLD+11; the window asks for the first 5 of them.
WINDOW = f"/history/AAPL?timeframe=1m&limit=5&start={OLD:%Y-%m-%dT%H:%M:%SZ}"


def _ticks(start: datetime, count: int, source: str = "alpaca", symbol: str = "AAPL", first_id: int = 0) -> list[Tick]:
    return [
        Tick.create(
            symbol,
            200 + (i % 7) * 0.37,
            10 + i,
            start + timedelta(seconds=17 * i),
            source=source,
            trade_id=first_id + i,
        )
        for i in range(count)
    ]


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    """A fresh database holding old and recent AAPL ticks."""
    name = session_database("history_cache_test")
    dsn = await migrated_database(database_url, name)
    await _write(dsn, [*_ticks(OLD, 40), *_ticks(RECENT, 20, first_id=1000)])
    yield dsn
    await drop_database(database_url, name)


async def _write(dsn: str, events: list) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, events)
    finally:
        await conn.close()


@asynccontextmanager
async def _client(dsn: str, cache_mb: int = 8) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None, database_url=dsn, history_cache_mb=cache_mb))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


async def _get(client: httpx.AsyncClient, url: str = WINDOW) -> httpx.Response:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response


async def _fresh(dsn: str, url: str = WINDOW) -> bytes:
    """The response an app without a cache gives now."""
    async with _client(dsn, cache_mb=0) as client:
        response = await _get(client, url)
        assert CACHE_HEADER not in response.headers
        return response.content


async def _cached(client: httpx.AsyncClient, url: str = WINDOW) -> bytes:
    """Request ``url`` twice: kept on the first, served from the cache on the second."""
    first = await _get(client, url)
    assert first.headers[CACHE_HEADER] == "miss"
    second = await _get(client, url)
    assert second.headers[CACHE_HEADER] == "hit"
    assert second.content == first.content
    return second.content


async def _assert_recomputed(client: httpx.AsyncClient, dsn: str, before: bytes, changed: bool = True) -> None:
    after = await _get(client)
    assert after.headers[CACHE_HEADER] != "hit"
    assert after.content == await _fresh(dsn)
    if changed:
        assert after.content != before


async def test_a_closed_window_is_served_from_the_cache_as_computed(dsn: str) -> None:
    async with _client(dsn) as client:
        body = await _cached(client)
    assert body == await _fresh(dsn)
    assert [bar["timestamp"][:16] for bar in httpx.Response(200, content=body).json()["bars"]] == [
        f"{OLD + timedelta(minutes=m):%Y-%m-%dT%H:%M}" for m in range(5)
    ]


async def test_a_late_tick_in_the_window_changes_the_next_response(dsn: str) -> None:
    async with _client(dsn) as client:
        before = await _cached(client)
        late = Tick.create("AAPL", 999.0, 5, OLD + timedelta(minutes=2, seconds=1), source="alpaca", trade_id=5000)
        await _write(dsn, [late])
        await _assert_recomputed(client, dsn, before)


async def test_a_stored_bar_in_the_window_changes_the_next_response(dsn: str) -> None:
    async with _client(dsn) as client:
        before = await _cached(client)
        await _write(dsn, [minute_bar("AAPL", OLD + timedelta(minutes=1), "alpaca", 50, 1e6, vwap=50.5)])
        await _assert_recomputed(client, dsn, before)


async def test_a_corrected_bar_changes_the_next_response(dsn: str) -> None:
    bar = minute_bar("AAPL", OLD + timedelta(minutes=1), "alpaca", 50, 1e6, vwap=50.5)
    await _write(dsn, [bar])
    async with _client(dsn) as client:
        before = await _cached(client)
        await _write(dsn, [bar.model_copy(update={"close": 77.0, "high": 80.0, "version": bar.version + 1})])
        await _assert_recomputed(client, dsn, before)


async def test_ticks_and_bars_in_one_batch_change_the_next_response(dsn: str) -> None:
    async with _client(dsn) as client:
        before = await _cached(client)
        late = Tick.create("MSFT", 10.0, 5, OLD, source="alpaca", trade_id=1)
        await _write(dsn, [late, minute_bar("AAPL", OLD + timedelta(minutes=3), "alpaca", 60, 1e6)])
        await _assert_recomputed(client, dsn, before)


async def test_dropping_a_source_changes_the_next_response(dsn: str) -> None:
    await _write(dsn, _ticks(OLD, 40, source="polygon", first_id=2000))
    async with _client(dsn) as client:
        before = await _cached(client)
        conn = await asyncpg.connect(dsn)
        try:
            await drop_source(conn, "polygon", "AAPL")
        finally:
            await conn.close()
        await _assert_recomputed(client, dsn, before)


async def test_deleting_ticks_of_the_window_changes_the_next_response(dsn: str) -> None:
    async with _client(dsn) as client:
        before = await _cached(client)
        conn = await asyncpg.connect(dsn)
        try:  # as psql would: the sources stay the same, only the version tells
            await conn.execute("DELETE FROM ticks WHERE symbol = 'AAPL' AND ts < $1", OLD + timedelta(minutes=2))
        finally:
            await conn.close()
        await _assert_recomputed(client, dsn, before)


async def test_retention_recomputes_the_window(dsn: str) -> None:
    async with _client(dsn) as client:
        before = await _cached(client)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            assert await enforce_tick_retention(pool, "2 days") == 40
        finally:
            await pool.close()
        # the old ticks are 1-minute bars now: the same bars, recomputed from them
        await _assert_recomputed(client, dsn, before, changed=False)


async def test_reset_forgets_the_window(dsn: str) -> None:
    async with _client(dsn) as client:
        await _cached(client)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("TRUNCATE " + ", ".join(HISTORY_TABLES))
            assert await conn.fetchval("SELECT count(*) FROM history_versions") == 0
        finally:
            await conn.close()
        assert (await client.get(WINDOW)).status_code == 404


async def test_ticks_at_the_live_edge_keep_closed_windows_and_show_in_the_open_one(dsn: str) -> None:
    latest = f"/history/AAPL?timeframe=1m&limit=3&end={NOW + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
    async with _client(dsn) as client:
        before = await _cached(client)
        open_window = await _get(client, "/history/AAPL?timeframe=1m&limit=3")
        assert CACHE_HEADER not in open_window.headers  # follows now: never cached
        assert (await _get(client, latest)).headers[CACHE_HEADER] == "fresh"  # ends after the newest tick
        await _write(dsn, _ticks(NOW - timedelta(minutes=10), 3, first_id=3000))  # after the newest
        assert (await _get(client)).headers[CACHE_HEADER] == "hit"
        assert (await _get(client)).content == before == await _fresh(dsn)
        newest = (await _get(client, "/history/AAPL?timeframe=1m&limit=3")).json()["bars"][-1]
        assert newest["timestamp"] == f"{NOW - timedelta(minutes=10):%Y-%m-%dT%H:%M:%SZ}"


async def test_a_window_reaching_past_now_or_the_newest_tick_is_not_kept(dsn: str) -> None:
    tail = f"/history/AAPL?timeframe=1m&limit=1000&start={RECENT:%Y-%m-%dT%H:%M:%SZ}"
    async with _client(dsn) as client:
        for _ in range(2):
            assert (await _get(client, tail)).headers[CACHE_HEADER] == "fresh"


async def test_every_api_process_sees_the_write(dsn: str) -> None:
    async with _client(dsn) as first, _client(dsn) as second:
        before = await _cached(first)
        assert await _cached(second) == before
        await _write(dsn, [Tick.create("AAPL", 1.0, 1, OLD + timedelta(seconds=30), source="alpaca", trade_id=6000)])
        for client in (first, second):
            await _assert_recomputed(client, dsn, before)


async def test_the_cache_holds_at_most_its_size_least_recently_used_out_first(dsn: str) -> None:
    app = create_app(Settings(_env_file=None, database_url=dsn, history_cache_mb=1))
    cache = app.state.history_cache
    minutes = [
        f"/history/AAPL?timeframe=1m&limit=1&start={OLD + timedelta(minutes=m):%Y-%m-%dT%H:%M:%SZ}" for m in range(4)
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        for url in minutes[:3]:
            await _get(client, url)
        assert len(cache) == 3
        cache.max_bytes = cache.size  # room for these three (the responses are the same size)
        assert (await _get(client, minutes[0])).headers[CACHE_HEADER] == "hit"  # now the most recent
        assert (await _get(client, minutes[3])).headers[CACHE_HEADER] == "miss"  # kept: minutes[1] goes
        assert cache.size <= cache.max_bytes
        assert len(cache) == 3
        assert (await _get(client, WINDOW)).headers[CACHE_HEADER] == "fresh"  # larger than the whole cache
        assert (await _get(client, minutes[2])).headers[CACHE_HEADER] == "hit"
        assert (await _get(client, minutes[1])).headers[CACHE_HEADER] == "miss"  # it went


@pytest.mark.timescale
@pytest.mark.skipif(not TIMESCALE_DSN, reason="set TEST_TIMESCALE_DSN to a TimescaleDB server")
async def test_timescaledb_mode_serves_every_response_fresh() -> None:
    # its continuous aggregates change in background refreshes, without a write of ours
    assert TIMESCALE_DSN
    name = session_database("history_cache_timescale_test")
    dsn = await migrated_database(TIMESCALE_DSN, name)
    try:
        await _write(dsn, [*_ticks(OLD, 40), *_ticks(RECENT, 20, first_id=1000)])
        async with _client(dsn) as client:
            for _ in range(2):
                response = await _get(client)
                assert response.json()["mode"] == "timescaledb"
                assert CACHE_HEADER not in response.headers
            # a batch of ticks and bars takes the (here empty) history lock first and is written
            await _write(dsn, [*_ticks(RECENT, 2, first_id=9000), minute_bar("AAPL", OLD, "alpaca", 50, 1e6)])
            assert (await _get(client)).json()["bars"][0]["open"] == 50
    finally:
        await drop_database(TIMESCALE_DSN, name)


async def test_a_moved_clock_never_serves_a_window_not_yet_closed(dsn: str) -> None:
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        await _cached(client)
        app.dependency_overrides[deps.current_time] = lambda: OLD + timedelta(minutes=2)
        assert (await _get(client)).headers[CACHE_HEADER] != "hit"


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_a_bad_cache_size_stops_start_up_with_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HISTORY_CACHE_MB", value)
    with pytest.raises(SettingsError) as stopped:
        load_settings(_env_file=None)
    assert str(stopped.value).startswith("invalid setting HISTORY_CACHE_MB")
    assert "\n" not in str(stopped.value)


async def test_the_api_keeps_few_connections_and_never_jit_compiles(dsn: str) -> None:
    # Each connection keeps its last ~150 KB response buffered (the API's peak RSS); a JIT
    # compile costs a 1d read of the kept series ~500 ms (BENCHMARKS.md, "Tenth round, api").
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with app.router.lifespan_context(app):
        for pool in (app.state.pool, app.state.read_pool):
            assert pool.get_max_size() == POOL_SIZE
            assert await pool.fetchval("SHOW jit") == "off"
