"""Gap repair: the minutes a live feed missed come from REST history, so /history has no hole.

The pure rules are unit-tested; then each provider: the Alpaca stream drops for ten minutes of
emulator time, and the Polygon worker is stopped and restarted ten minutes later. Emulator time is
a fake clock the feed reads when it (re)connects; the stream and REST emulators serve the same
synthetic minutes.
"""

from __future__ import annotations

from datetime import timedelta

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
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.models import Bar, Tick
from tradebot.market_data import alpaca_service, polygon_service
from tradebot.market_data.gap_repair import (
    MAX_REPAIR_WINDOW,
    group_by_start,
    repair_starts,
    watermark_after,
    watermark_key,
)

MINUTE = timedelta(minutes=1)
SYMBOLS = ["AAPL", "MSFT"]
DATASET = BarDataset.generate(SYMBOLS, T0 - 30 * MINUTE, T0 + 60 * MINUTE, timeframes=("1Min",))


def minutes(first: int, last: int) -> list:
    """Dataset minute bars of both symbols from T0+first to T0+last minutes (inclusive)."""
    return [bar for symbol in SYMBOLS
            for bar in DATASET.bars(symbol, "1Min", T0 + first * MINUTE, T0 + last * MINUTE)]


async def assert_no_hole(settings: Settings, first: int, last: int) -> None:
    """/history shows every minute T0+first .. T0+last, each equal to the provider's bar."""
    await store_everything(settings)
    for symbol in SYMBOLS:
        bars = await history(settings, symbol, timeframe="1m", start=T0.isoformat(), limit="100")
        assert [when(bar["timestamp"]) for bar in bars] == [T0 + i * MINUTE for i in range(first, last + 1)]
        for got, want in zip(bars, DATASET.bars(symbol, "1Min", T0 + first * MINUTE, T0 + last * MINUTE),
                             strict=True):
            assert [got["open"], got["high"], got["low"], got["close"], got["volume"]] == [
                want.open, want.high, want.low, want.close, want.volume]


# ----- the rules -----------------------------------------------------------------------------------


def test_a_trade_leaves_its_minute_open_and_a_minute_bar_closes_it() -> None:
    tick = Tick.create("AAPL", 1.0, 1, T0 + timedelta(seconds=30), source="alpaca", trade_id=1)
    bar = Bar(id="x", symbol="AAPL", timeframe="1m", timestamp=T0, open=1, high=1, low=1, close=1, volume=1,
              trade_count=1)
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
        T0 - MINUTE: ["NVDA"], T0: ["AAPL", "MSFT"]}


# ----- the providers -------------------------------------------------------------------------------


async def test_alpaca_drop_for_ten_minutes_is_filled_from_rest(settings: Settings, bus: Bus,
                                                               clean_database: str) -> None:
    gate = Gate()
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    scenario = [Send(minutes(0, 4)), gate, Drop(), Send(minutes(15, 19))]
    with AlpacaRestEmulator(DATASET) as rest:
        async with AlpacaStreamEmulator(scenario) as stream:
            feed_settings = with_keys(settings, alpaca_stream_url=stream.url, alpaca_data_url=rest.url)
            async with running(alpaca_service.run_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=10)
                assert rest.requests_to("/v2/stocks/bars") == []  # first start: nothing to repair
                clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)  # ten minutes pass, then the drop
                gate.open()
                _, bars = await wait_for_published(bus, settings.tick_partitions, bars=40)
                assert feed.counters["gap_bars"] == 20
        [request] = rest.requests_to("/v2/stocks/bars")
    assert request.query["symbols"] == "AAPL,MSFT" and request.query["timeframe"] == "1Min"
    assert when(request.query["start"]) == T0 + 5 * MINUTE
    assert when(request.query["end"]) < T0 + 15 * MINUTE
    assert sorted({bar.timestamp for bar in bars}) == [T0 + i * MINUTE for i in range(20)]
    await assert_no_hole(feed_settings, 0, 19)


async def test_polygon_restart_ten_minutes_later_is_filled_from_rest(settings: Settings, bus: Bus,
                                                                     clean_database: str) -> None:
    clock = FakeClock(T0 + 5 * MINUTE + timedelta(seconds=10))
    with PolygonRestEmulator(DATASET) as rest:
        async with PolygonStreamEmulator([Send(minutes(0, 4))]) as stream:
            feed_settings = with_keys(settings, polygon_stream_host=f"ws://{stream.host_port}",
                                      polygon_rest_url=rest.url)
            async with running(polygon_service.run_feed, feed_settings, clock=clock, repair_settle_s=0):
                await wait_for_published(bus, settings.tick_partitions, bars=10)
        assert await bus.redis.get(watermark_key("polygon", "AAPL")) == (T0 + 5 * MINUTE).isoformat()
        assert rest.requests_to("/v2/aggs") == []

        clock.now = T0 + 15 * MINUTE + timedelta(seconds=5)  # restarted ten minutes later
        async with PolygonStreamEmulator([Send(minutes(15, 19))]) as stream:
            feed_settings = feed_settings.model_copy(update={"polygon_stream_host": f"ws://{stream.host_port}"})
            async with running(polygon_service.run_feed, feed_settings, clock=clock, repair_settle_s=0) as feed:
                await wait_for_published(bus, settings.tick_partitions, bars=40)
                assert feed.counters["gap_bars"] == 20
        paths = sorted(request.path for request in rest.requests_to("/v2/aggs"))
    first, last = int((T0 + 5 * MINUTE).timestamp() * 1000), int((T0 + 15 * MINUTE).timestamp() * 1000) - 1
    assert paths == [f"/v2/aggs/ticker/{symbol}/range/1/minute/{first}/{last}" for symbol in SYMBOLS]
    assert await bus.redis.get(watermark_key("polygon", "MSFT")) == (T0 + 20 * MINUTE).isoformat()
    await assert_no_hole(feed_settings, 0, 19)
