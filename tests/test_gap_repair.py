"""Gap repair: the minutes a live feed missed come from REST history, so /history has no hole.

The pure rules are unit-tested; then each provider: the Alpaca stream drops for ten minutes of
emulator time, and the Polygon worker is stopped and restarted ten minutes later. The trades of the
missed minutes are repaired too (each stored once, also when repaired twice or when a trade also
arrived live). A repair that
never published (stopped while settling, REST failing) is done after the next restart, and a REST
request that stalls times out and is retried. Emulator time is a fake clock the feed reads when it
(re)connects; the stream and REST emulators serve the same synthetic minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

import asyncpg

from tests.emulators import (
    AlpacaRestEmulator,
    AlpacaStreamEmulator,
    BarDataset,
    Drop,
    Gate,
    PolygonRestEmulator,
    PolygonStreamEmulator,
    Send,
)
from tests.feed_helpers import T0, FakeClock, history, running, store_everything, wait_for_published, when, with_keys
from tests.helpers import tick_count, wait_until
from tradebot.api.routes_health import recorded_gaps
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.config import Settings
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.models import Bar, Tick
from tradebot.common.streams import REPAIRED_TICKS
from tradebot.market_data import live_feed
from tradebot.market_data.gap_repair import (
    MAX_REPAIR_WINDOW,
    PendingRepairs,
    group_by_start,
    repair_starts,
    watermark_after,
    watermark_key,
)
from tradebot.providers import alpaca, polygon

MINUTE = timedelta(minutes=1)
alpaca_feed = partial(live_feed.run_feed, feed=alpaca.LIVE)
polygon_feed = partial(live_feed.run_feed, feed=polygon.LIVE)
SYMBOLS = ["AAPL", "MSFT"]
DATASET = BarDataset.generate(SYMBOLS, T0 - 30 * MINUTE, T0 + 60 * MINUTE, timeframes=("1Min",))


def trades(first: int, last: int) -> list:
    """Dataset trades of both symbols in the minutes T0+first .. T0+last (inclusive)."""
    until = T0 + (last + 1) * MINUTE - timedelta(microseconds=1)
    return [trade for symbol in SYMBOLS for trade in DATASET.trades(symbol, T0 + first * MINUTE, until)]


def minutes(first: int, last: int) -> list:
    """Dataset minute bars of both symbols from T0+first to T0+last minutes (inclusive)."""
    return [bar for symbol in SYMBOLS for bar in DATASET.bars(symbol, "1Min", T0 + first * MINUTE, T0 + last * MINUTE)]


async def assert_no_hole(settings: Settings, first: int, last: int) -> None:
    """/history shows every minute T0+first .. T0+last, each equal to the provider's bar."""
    await store_everything(settings)
    for symbol in SYMBOLS:
        end = T0 + (last + 1) * MINUTE  # later minutes may hold trades repaired up to the reconnect
        bars = await history(settings, symbol, timeframe="1m", start=T0.isoformat(), end=end.isoformat(), limit="100")
        assert [when(bar["timestamp"]) for bar in bars] == [T0 + i * MINUTE for i in range(first, last + 1)]
        for got, want in zip(bars, DATASET.bars(symbol, "1Min", T0 + first * MINUTE, T0 + last * MINUTE), strict=True):
            assert [got["open"], got["high"], got["low"], got["close"], got["volume"]] == [
                want.open,
                want.high,
                want.low,
                want.close,
                want.volume,
            ]


async def stored_trades(dsn: str) -> list[tuple[str, datetime, str]]:
    """Every stored tick as (symbol, ts, id), duplicates included, in order."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT symbol, ts, id FROM ticks ORDER BY symbol, ts, id")
    finally:
        await conn.close()
    return [(row["symbol"], row["ts"], row["id"]) for row in rows]


def expected_trades(source: str, first: int, last: int, exchange: str) -> list[tuple[str, datetime, str]]:
    """The ticks the live feed makes of the dataset trades of those minutes (one per trade)."""
    return sorted(
        (trade.symbol, trade.timestamp, f"{source}:{trade.symbol}:{exchange}-{trade.id}")
        for trade in trades(first, last)
    )


# ----- the rules -----------------------------------------------------------------------------------


def test_a_trade_leaves_its_minute_open_and_a_minute_bar_closes_it() -> None:
    tick = Tick.create("AAPL", 1.0, 1, T0 + timedelta(seconds=30), source="alpaca", trade_id=1)
    bar = Bar(
        id="x", symbol="AAPL", timeframe="1m", timestamp=T0, open=1, high=1, low=1, close=1, volume=1, trade_count=1
    )
    assert watermark_after(tick) == T0
    assert watermark_after(bar) == T0 + MINUTE
    assert watermark_after(bar.model_copy(update={"timeframe": "1d"})) is None


def test_repair_starts_at_each_watermark_and_skips_new_or_complete_symbols() -> None:
    end = T0 + 10 * MINUTE
    marks = {"AAPL": T0, "MSFT": end, "NVDA": T0 - 30 * 24 * 60 * MINUTE}
    starts = repair_starts(marks, ["AAPL", "MSFT", "NVDA", "AMD"], end)
    assert starts == {"AAPL": T0, "NVDA": end - MAX_REPAIR_WINDOW}  # MSFT complete, AMD never seen


def test_symbols_sharing_a_start_share_a_request() -> None:
    assert group_by_start({"MSFT": T0, "AAPL": T0, "NVDA": T0 - MINUTE}) == {
        T0 - MINUTE: ["NVDA"],
        T0: ["AAPL", "MSFT"],
    }


def test_a_repair_marker_lasts_until_no_repair_of_its_symbol_is_pending() -> None:
    repairs = PendingRepairs()
    repairs.load("AAPL", T0 - MINUTE)  # the last run's repair never published
    first = repairs.register({"AAPL": T0 - MINUTE, "MSFT": T0})
    assert repairs.to_commit({}) == {"AAPL": T0 - MINUTE, "MSFT": T0}  # with the next commit, live events or not
    repairs.not_committed(["AAPL", "MSFT"])  # that commit failed: the next one writes them
    assert repairs.to_commit({}) == {"AAPL": T0 - MINUTE, "MSFT": T0}
    repairs.committed({})
    assert repairs.to_commit({}) == {}

    second = repairs.register({"MSFT": T0})  # reconnected before the first repair published
    assert repairs.to_commit({"AAPL": first, "MSFT": first}) == {"AAPL": None, "MSFT": T0}
    repairs.committed({"AAPL": first, "MSFT": first})
    assert repairs.marker("AAPL") is None
    assert repairs.marker("MSFT") == T0
    assert repairs.to_commit({"MSFT": second}) == {"MSFT": None}
    repairs.committed({"MSFT": second})
    assert repairs.marker("MSFT") is None


# ----- the providers -------------------------------------------------------------------------------


async def test_alpaca_drop_for_ten_minutes_is_filled_from_rest(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    gate = Gate()
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    scenario = [Send(minutes(0, 4)), gate, Drop(), Send(minutes(15, 19))]
    with AlpacaRestEmulator(DATASET) as rest:
        async with AlpacaStreamEmulator(scenario) as stream:
            feed_settings = with_keys(settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=10)
                assert rest.requests_to("/v2/stocks/bars") == []  # first start: nothing to repair
                clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)  # ten minutes pass, then the drop
                gate.open()
                _, bars = await wait_for_published(bus, settings.tick_partitions, bars=40)
                assert feed.counters["gap_bars"] == 20
        [request] = rest.requests_to("/v2/stocks/bars")
    assert request.query["symbols"] == "AAPL,MSFT"
    assert request.query["timeframe"] == "1Min"
    assert when(request.query["start"]) == T0 + 5 * MINUTE
    assert when(request.query["end"]) < T0 + 15 * MINUTE
    assert sorted({bar.timestamp for bar in bars}) == [T0 + i * MINUTE for i in range(20)]
    await assert_no_hole(feed_settings, 0, 19)


async def test_polygon_restart_ten_minutes_later_is_filled_from_rest(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    with PolygonRestEmulator(DATASET) as rest:
        async with PolygonStreamEmulator([Send(minutes(0, 4))]) as stream:
            feed_settings = with_keys(
                settings, polygon_stream_host=f"ws://{stream.host_port}", polygon_rest_url=rest.url
            )
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0):
                await wait_for_published(bus, settings.tick_partitions, bars=10)
        assert await bus.redis.get(watermark_key("polygon", "AAPL")) == (T0 + 5 * MINUTE).isoformat()
        assert rest.requests_to("/v2/aggs") == []

        clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)  # restarted ten minutes later
        async with PolygonStreamEmulator([Send(minutes(15, 19))]) as stream:
            feed_settings = feed_settings.model_copy(update={"polygon_stream_host": f"ws://{stream.host_port}"})
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=40)
                assert feed.counters["gap_bars"] == 20
        paths = sorted(request.path for request in rest.requests_to("/v2/aggs"))
    first, last = int((T0 + 5 * MINUTE).timestamp() * 1000), int((T0 + 15 * MINUTE).timestamp() * 1000) - 1
    assert paths == [f"/v2/aggs/ticker/{symbol}/range/1/minute/{first}/{last}" for symbol in SYMBOLS]
    assert await bus.redis.get(watermark_key("polygon", "MSFT")) == (T0 + 20 * MINUTE).isoformat()
    await assert_no_hole(feed_settings, 0, 19)


# ----- trades ---------------------------------------------------------------------------------------


async def test_alpaca_drop_repairs_the_trades_too_and_a_second_repair_doubles_nothing(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    """Trades of minutes 0-4 and 15-19 arrive live, 5-14 are repaired (and 15:01, printed before the
    reconnect, comes both ways); then the watermark is put back and the repair runs again: every
    trade is stored exactly once, with the id its live print has, and only storage read them."""
    gate = Gate()
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    scenario = [Send(trades(0, 4) + minutes(0, 4)), gate, Drop(), Send(trades(15, 19) + minutes(15, 19))]
    with AlpacaRestEmulator(DATASET) as rest:
        async with AlpacaStreamEmulator(scenario) as stream:
            feed_settings = with_keys(settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, ticks=40, bars=10)
                clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)
                gate.open()
                await wait_for_published(bus, settings.tick_partitions, ticks=80, bars=40)
                # minutes 5-14 and the trade at 15:01 (before the reconnect at 15:05)
                await wait_until(lambda: feed.counters["gap_trades"] == 82, what="the trades repaired")
        requests = rest.requests_to("/v2/stocks/trades")
        assert {request.query["symbols"] for request in requests} == {"AAPL,MSFT"}
        assert when(requests[0].query["start"]) == T0 + 5 * MINUTE
        live_ticks, _ = await wait_for_published(bus, settings.tick_partitions)
        assert len(live_ticks) == 80  # the strategies' streams carry only the live prints
        assert await tick_count(bus.redis, [REPAIRED_TICKS]) == 82
        await store_everything(feed_settings)
        want = expected_trades("alpaca", 0, 19, "V")
        assert await stored_trades(clean_database) == want

        for symbol in SYMBOLS:  # as if the watermark were lost: the same minutes are repaired again
            await bus.redis.set(watermark_key("alpaca", symbol), (T0 + 5 * MINUTE).isoformat())
        clock.now = T0 + 20 * MINUTE
        async with AlpacaStreamEmulator() as stream:
            feed_settings = feed_settings.model_copy(update={"alpaca_stream_url": stream.url})
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_until(lambda: feed.counters["gap_trades"] == 120, what="minutes 5-19 repaired again")
    written = await store_everything(feed_settings)
    assert written["rows_ticks"] == 0
    assert await stored_trades(clean_database) == want
    await assert_no_hole(feed_settings, 0, 19)


async def test_polygon_restart_repairs_the_trades_from_v3_trades(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    with PolygonRestEmulator(DATASET) as rest:
        async with PolygonStreamEmulator([Send(trades(0, 4) + minutes(0, 4))]) as stream:
            feed_settings = with_keys(
                settings, polygon_stream_host=f"ws://{stream.host_port}", polygon_rest_url=rest.url
            )
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0):
                await wait_for_published(bus, settings.tick_partitions, ticks=40, bars=10)

        clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)
        async with PolygonStreamEmulator([Send(trades(15, 19) + minutes(15, 19))]) as stream:
            feed_settings = feed_settings.model_copy(update={"polygon_stream_host": f"ws://{stream.host_port}"})
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, ticks=80, bars=40)
                await wait_until(lambda: feed.counters["gap_trades"] == 82, what="the trades repaired")
        paths = {request.path for request in rest.requests_to("/v3/trades")}
    assert paths == {f"/v3/trades/{symbol}" for symbol in SYMBOLS}
    await store_everything(feed_settings)
    assert await stored_trades(clean_database) == expected_trades("polygon", 0, 19, "4")
    await assert_no_hole(feed_settings, 0, 19)


# ----- a repair that did not publish is done after the next start -----------------------------------


async def redis_time(bus: Bus, key: str) -> datetime | None:
    value = await bus.redis.get(key)
    return datetime.fromisoformat(value) if value else None


async def test_polygon_stopped_while_the_repair_settles_repairs_after_the_restart(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    with PolygonRestEmulator(DATASET) as rest:
        async with PolygonStreamEmulator([Send(minutes(0, 4))]) as stream:
            feed_settings = with_keys(
                settings, polygon_stream_host=f"ws://{stream.host_port}", polygon_rest_url=rest.url
            )
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0):
                await wait_for_published(bus, settings.tick_partitions, bars=10)

        clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)  # ten minutes later: live minutes move the watermark
        async with PolygonStreamEmulator([Send(minutes(15, 19))]) as stream:
            feed_settings = feed_settings.model_copy(update={"polygon_stream_host": f"ws://{stream.host_port}"})
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=3600):
                await wait_for_published(bus, settings.tick_partitions, bars=20)
                # the live minutes moved the watermark past the gap; the same commit recorded the gap
                # (so even a kill -9 from here on loses nothing)
                assert await redis_time(bus, watermark_key("polygon", "AAPL")) == T0 + 20 * MINUTE
                assert await redis_time(bus, "repair_from:polygon:AAPL") == T0 + 5 * MINUTE
            # stopped (SIGTERM) while the repair waits to settle: nothing fetched
        assert rest.requests_to("/v2/aggs") == []
        assert await redis_time(bus, "repair_from:polygon:AAPL") == T0 + 5 * MINUTE

        clock.now = T0 + 20 * MINUTE + timedelta(seconds=5)
        async with PolygonStreamEmulator() as stream:
            feed_settings = feed_settings.model_copy(update={"polygon_stream_host": f"ws://{stream.host_port}"})
            async with running(polygon_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_until(lambda: _repair_cleared(bus), what="minutes 5-19 repaired, bars and trades")
                assert feed.counters["gap_bars"] == 30
    assert await bus.redis.get("repair_from:polygon:AAPL") == ""  # cleared with the repaired bars and trades
    await assert_no_hole(feed_settings, 0, 19)


async def _repair_cleared(bus: Bus) -> bool:
    return [await bus.redis.get(f"repair_from:polygon:{symbol}") for symbol in SYMBOLS] == ["", ""]


async def test_alpaca_repair_that_rest_failed_is_done_after_the_restart(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    with AlpacaRestEmulator(DATASET) as rest:
        async with AlpacaStreamEmulator([Send(minutes(0, 4))]) as stream:
            feed_settings = with_keys(settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0):
                await wait_for_published(bus, settings.tick_partitions, bars=10)

        clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)
        rest.fail_next(
            503,
            count=live_feed.REPAIR_POLICY.attempts,
            path_prefix="/v2/stocks/bars",
            headers={"Retry-After": "0"},
        )
        async with AlpacaStreamEmulator([Send(minutes(15, 19))]) as stream:
            feed_settings = feed_settings.model_copy(update={"alpaca_stream_url": stream.url})
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=20)
                await wait_until(lambda: feed.counters["gap_repair_failures"] == 1, what="the repair to give up")
        assert [r.status for r in rest.requests_to("/v2/stocks/bars")] == [503] * 4
        assert await redis_time(bus, watermark_key("alpaca", "MSFT")) == T0 + 20 * MINUTE

        clock.now = T0 + 20 * MINUTE + timedelta(seconds=5)
        async with AlpacaStreamEmulator() as stream:
            feed_settings = feed_settings.model_copy(update={"alpaca_stream_url": stream.url})
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_until(lambda: feed.counters["gap_bars"] == 30, what="minutes 5-19 repaired")
        request = rest.requests_to("/v2/stocks/bars")[-1]
    assert when(request.query["start"]) == T0 + 5 * MINUTE
    assert request.status == 200
    await assert_no_hole(feed_settings, 0, 19)


async def test_a_stalled_rest_request_times_out_and_the_repair_retries(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    gate = Gate()
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    scenario = [Send(minutes(0, 4)), gate, Drop(), Send(minutes(15, 19))]
    with AlpacaRestEmulator(DATASET) as rest:
        rest.stall_next(path_prefix="/v2/stocks/bars")  # the server accepts the request and never answers
        async with AlpacaStreamEmulator(scenario) as stream:
            feed_settings = with_keys(settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
            # 3 s: past an ordinary answer on a loaded machine, so only the stalled one is retried
            async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0, rest_timeout_s=3.0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=10)
                clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)
                gate.open()
                await wait_until(lambda: feed.counters["gap_bars"] == 20, what="minutes 5-14 repaired")
                assert rest.stalls == 1
                assert feed.counters["gap_repair_failures"] == 0
                assert [r.status for r in rest.requests_to("/v2/stocks/bars")] == [200]  # the retry
    await assert_no_hole(feed_settings, 0, 19)


# ----- gaps a Redis outage leaves -------------------------------------------------------------------


async def test_a_redis_outage_longer_than_the_buffer_is_a_recorded_gap_then_repaired(
    settings: Settings, private_redis: EmbeddedRedis, clean_database: str
) -> None:
    """Redis refuses writes (out of memory) while the Alpaca feed keeps sending: the buffer fills,
    the rest is recorded as a gap, and once Redis is back gap repair fills it: no hole in /history."""
    gate = Gate()
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    scenario = [Send(minutes(0, 4)), gate, Send(minutes(5, 59), batch=False)]
    feed_settings = settings.model_copy(update={"redis_url": private_redis.url, "live_buffer_events": 100})
    bus = Bus(connect(private_redis.url))
    try:
        with AlpacaRestEmulator(DATASET) as rest:
            async with AlpacaStreamEmulator(scenario) as stream:
                feed_settings = with_keys(feed_settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
                async with running(alpaca_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                    await wait_for_published(bus, settings.tick_partitions, bars=10)
                    await bus.redis.config_set("maxmemory", 1)
                    gate.open()
                    await wait_until(lambda: feed.counters["gap_events"] > 0, what="the buffer to overflow")
                    clock.now = T0 + 60 * MINUTE + timedelta(seconds=5)
                    await bus.redis.config_set("maxmemory", 0)
                    await wait_until(lambda: _repaired_gaps(bus), what="the gap to be recorded and repaired")
        [gap] = await recorded_gaps(bus.redis)
        assert (gap.source, gap.dropped) == ("alpaca", feed.counters["gap_events"])
        assert set(gap.symbols) <= set(SYMBOLS)
        await assert_no_hole(feed_settings, 0, 59)
        stored = await _stored_gaps(clean_database)
        assert {row["symbol"] for row in stored} == set(gap.symbols)
        assert {row["dropped"] for row in stored} == {gap.dropped}
    finally:
        await bus.close()


async def _repaired_gaps(bus: Bus) -> bool:
    gaps = await recorded_gaps(bus.redis)
    return bool(gaps) and all(gap.repaired for gap in gaps)


async def _stored_gaps(dsn: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT symbol, dropped FROM gaps")
    finally:
        await conn.close()
