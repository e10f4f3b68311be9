"""The Polygon live feed against the Polygon stream emulator, with the real polygon-api-client.

Real Redis (the streams) and PostgreSQL (storage, /history); every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta
from functools import partial

import pytest

from tests.emulators import Bar, Close, Drop, PolygonStreamEmulator, Send, SendMessages, SendRaw, Trade
from tests.feed_helpers import T0, history, running, store_everything, wait_for_published, when, with_keys
from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.config import Settings, SettingsError
from tradebot.common.models import Bar as BarEvent
from tradebot.common.models import Tick
from tradebot.market_data import live_feed
from tradebot.providers import polygon
from tradebot.providers.polygon import stream_endpoint

run_feed = partial(live_feed.run_feed, feed=polygon.LIVE)
TRADE = Trade("AAPL", 190.25, 300, T0 + timedelta(seconds=1.5), id=7, exchange=11)
MSFT_TRADE = Trade("MSFT", 410.5, 20, T0 + timedelta(seconds=2), id=8, exchange=4)
# 12,000 shares in 40 trades: AM carries the average size z = 300, so the count comes back exactly.
BAR = Bar("AAPL", T0, 190.0, 191.0, 189.5, 190.5, 12_000, trade_count=40, vwap=190.2)


def polygon_settings(settings: Settings, emu: PolygonStreamEmulator, **updates: object) -> Settings:
    return with_keys(settings, polygon_stream_host=f"ws://{emu.host_port}", **updates)


async def test_trades_and_minute_aggregates_become_ticks_and_bars_field_by_field(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    async with PolygonStreamEmulator([Send([TRADE, BAR, MSFT_TRADE])]) as emu:
        feed_settings = polygon_settings(settings, emu)
        async with running(run_feed, feed_settings):
            ticks, bars = await wait_for_published(bus, settings.tick_partitions, ticks=2, bars=1)

    by_symbol = {tick.symbol: tick for tick in ticks}
    assert by_symbol["AAPL"] == Tick(
        id="polygon:AAPL:11-7",
        symbol="AAPL",
        price=190.25,
        size=300,
        timestamp=T0 + timedelta(seconds=1.5),
        source="polygon",
    )
    assert by_symbol["MSFT"].id == "polygon:MSFT:4-8"
    assert all(bar.version > 0 for bar in bars)  # stamped when received
    assert [bar.model_copy(update={"version": 0}) for bar in bars] == [
        BarEvent(
            id=f"polygon:AAPL:1m:{T0.isoformat()}",
            symbol="AAPL",
            timeframe="1m",
            timestamp=T0,
            open=190.0,
            high=191.0,
            low=189.5,
            close=190.5,
            volume=12_000,
            trade_count=40,
            vwap=190.2,
            source="polygon",
        )
    ]

    await store_everything(feed_settings)
    [minute] = await history(feed_settings, "AAPL", timeframe="1m", start=T0.isoformat())
    assert when(minute["timestamp"]) == T0
    assert [minute[f] for f in ("open", "high", "low", "close", "volume", "trade_count", "vwap")] == [
        190.0,
        191.0,
        189.5,
        190.5,
        12_000,
        40,
        190.2,
    ]


async def test_subscribes_trades_and_minute_aggregates_of_at_most_max_websocket_symbols(
    settings: Settings, bus: Bus
) -> None:
    async with PolygonStreamEmulator() as emu:
        feed_settings = polygon_settings(settings, emu, symbols=["AAPL", "MSFT", "NVDA"], max_websocket_symbols=2)
        async with running(run_feed, feed_settings):
            session = await emu.wait_for_subscription_async(["AAPL", "MSFT"], "AM")
            assert session.subscriptions["T"] == {"AAPL", "MSFT"}
            assert session.subscriptions["AM"] == {"AAPL", "MSFT"}


async def test_reconnects_after_a_normal_close_and_after_a_drop(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    second = Trade("AAPL", 191.0, 50, T0 + timedelta(minutes=1), id=9)
    third = Trade("AAPL", 192.0, 50, T0 + timedelta(minutes=2), id=10)
    emu = PolygonStreamEmulator([Send([TRADE]), Close(1000), Send([second]), Drop(), Send([third])])
    async with emu, running(run_feed, polygon_settings(settings, emu)) as feed:
        ticks, _ = await wait_for_published(bus, settings.tick_partitions, ticks=3)
        assert [tick.price for tick in ticks] == [190.25, 191.0, 192.0]
        assert emu.connections == 3
        assert feed.counters["connections"] == 3
        assert all(session.subscriptions["T"] == {"AAPL", "MSFT"} for session in emu.sessions)
    assert "polygon stream unavailable (the server closed the connection (code 1000))" in caplog.text


async def test_rejected_key_stops_with_one_clear_line(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    async with PolygonStreamEmulator(api_key="another-key") as emu:
        with pytest.raises(SettingsError) as stopped:
            async with asyncio.timeout(10):
                await run_feed(polygon_settings(settings, emu), stop=asyncio.Event(), counters=Counter())
    assert str(stopped.value) == "Polygon rejected POLYGON_API_KEY (auth_failed): set a valid key"
    assert emu.connections == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "test-key" not in caplog.text


async def test_malformed_frames_are_logged_counted_and_skipped(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    zero_price = {"ev": "T", "sym": "AAPL", "i": "1", "x": 4, "p": 0, "s": 100, "t": 1710167400000}
    text_time = {"ev": "T", "sym": "AAPL", "i": "2", "x": 4, "p": 1.0, "s": 100, "t": "yesterday"}
    aggregate_without_open = {"ev": "AM", "sym": "AAPL", "v": 10, "h": 2.0, "l": 1.0, "c": 1.5, "s": 1710167400000}
    scenario = [
        SendRaw("not json"),
        SendMessages([{"sym": "AAPL"}]),
        SendMessages([zero_price, text_time, aggregate_without_open]),
        SendRaw('{"ev": "T"}'),
        Send([TRADE]),
    ]
    async with PolygonStreamEmulator(scenario) as emu, running(run_feed, polygon_settings(settings, emu)) as feed:
        ticks, bars = await wait_for_published(bus, settings.tick_partitions, ticks=1)
        assert [tick.id for tick in ticks] == ["polygon:AAPL:11-7"]
        assert bars == []
        await wait_until(lambda: feed.counters["malformed"] == 6, what="6 malformed records counted")
        assert emu.connections == 1
        assert not feed.task.done()
    assert caplog.text.count("skipped malformed record") == 6


async def test_max_messages_ends_the_worker_after_that_many_events(settings: Settings, bus: Bus) -> None:
    async with PolygonStreamEmulator([Send([TRADE, BAR]), Send([MSFT_TRADE])]) as emu:
        counters: Counter = Counter()
        async with asyncio.timeout(10):
            await run_feed(polygon_settings(settings, emu, max_messages=2), stop=asyncio.Event(), counters=counters)
    assert counters["ticks"] + counters["bars"] >= 2


async def test_missing_key_stops_with_one_line_naming_the_variable(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=r"^POLYGON_API_KEY is not set"):
        await run_feed(settings, stop=asyncio.Event(), counters=Counter())


def test_stream_endpoint_picks_the_feed_or_the_override(settings: Settings) -> None:
    assert stream_endpoint(settings) == ("socket.polygon.io", True)
    assert stream_endpoint(settings.model_copy(update={"polygon_feed": "delayed"})) == ("delayed.polygon.io", True)
    local = settings.model_copy(update={"polygon_stream_host": "ws://127.0.0.1:8766/"})
    assert stream_endpoint(local) == ("127.0.0.1:8766", False)
    assert stream_endpoint(settings.model_copy(update={"polygon_stream_host": "proxy.example:443"})) == (
        "proxy.example:443",
        True,
    )
