"""The Alpaca live feed against the Alpaca stream emulator, with the real alpaca-py client.

Real Redis (the streams) and PostgreSQL (storage, /history); every wait is on a condition. The only
real delays are alpaca-py's own reconnect backoff (0.5-1 s) and ours (a fraction of a second).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from functools import partial

import pytest

from tests.emulators import AlpacaStreamEmulator, Bar, Drop, RejectAuth, Send, SendMessages, SendRaw, Trade
from tests.feed_helpers import T0, history, published, running, store_everything, wait_for_published, when, with_keys
from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode_all
from tradebot.common.config import Settings, SettingsError
from tradebot.common.models import Bar as BarEvent
from tradebot.common.models import Tick
from tradebot.common.runtime import CONFIG_ERROR_EXIT
from tradebot.common.streams import tick_stream_for
from tradebot.market_data import live_feed
from tradebot.providers import alpaca

run_feed = partial(live_feed.run_feed, feed=alpaca.LIVE)
TRADE = Trade("AAPL", 190.25, 300, T0 + timedelta(seconds=1.5), id=7, exchange="V")
MSFT_TRADE = Trade("MSFT", 410.5, 20, T0 + timedelta(seconds=2), id=8, exchange="K")
BAR = Bar("AAPL", T0, 190.0, 191.0, 189.5, 190.5, 12_000, trade_count=40, vwap=190.2)


def alpaca_settings(settings: Settings, emu: AlpacaStreamEmulator, **updates: object) -> Settings:
    return with_keys(settings, alpaca_stream_url=emu.url, **updates)


async def test_trades_and_minute_bars_become_ticks_and_bars_field_by_field(
    settings: Settings, bus: Bus, clean_database: str
) -> None:
    async with AlpacaStreamEmulator([Send([TRADE, BAR, MSFT_TRADE])]) as emu:
        feed_settings = alpaca_settings(settings, emu)
        async with running(run_feed, feed_settings):
            ticks, bars = await wait_for_published(bus, settings.tick_partitions, ticks=2, bars=1)

    aapl = next(tick for tick in ticks if tick.symbol == "AAPL")
    assert aapl == Tick(
        id="alpaca:AAPL:V-7",
        symbol="AAPL",
        price=190.25,
        size=300,
        timestamp=T0 + timedelta(seconds=1.5),
        source="alpaca",
    )
    assert all(bar.version > 0 for bar in bars)  # stamped when received
    assert [bar.model_copy(update={"version": 0}) for bar in bars] == [
        BarEvent(
            id=f"alpaca:AAPL:1m:{T0.isoformat()}",
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
            source="alpaca",
        )
    ]
    msft_entries = await bus.redis.xrange(tick_stream_for("MSFT", settings.tick_partitions))
    assert len(msft_entries) == 1
    assert '"alpaca:MSFT:K-8"' in msft_entries[0][1]["data"]

    await store_everything(feed_settings)
    [aapl_minute] = await history(feed_settings, "AAPL", timeframe="1m", start=T0.isoformat())
    assert when(aapl_minute["timestamp"]) == T0
    assert (aapl_minute["open"], aapl_minute["high"], aapl_minute["low"], aapl_minute["close"]) == (
        190,
        191,
        189.5,
        190.5,
    )
    assert (aapl_minute["volume"], aapl_minute["trade_count"], aapl_minute["vwap"]) == (12_000, 40, 190.2)
    [msft_minute] = await history(feed_settings, "MSFT", timeframe="1m", start=T0.isoformat())
    assert (msft_minute["open"], msft_minute["close"], msft_minute["volume"], msft_minute["trade_count"]) == (
        410.5,
        410.5,
        20,
        1,
    )


async def test_subscribes_trades_and_bars_of_at_most_max_websocket_symbols(settings: Settings, bus: Bus) -> None:
    async with AlpacaStreamEmulator() as emu:
        feed_settings = alpaca_settings(settings, emu, symbols=["AAPL", "MSFT", "NVDA", "AMD"], max_websocket_symbols=2)
        async with running(run_feed, feed_settings):
            session = await emu.wait_for_subscription_async(["AAPL", "MSFT"], "bars")
            assert session.subscriptions["trades"] == {"AAPL", "MSFT"}
            assert session.subscriptions["bars"] == {"AAPL", "MSFT"}
            assert session.subscriptions["updatedBars"] == {"AAPL", "MSFT"}
            assert "feed" not in session.path
            assert session.path == "/v2/iex"


async def test_reconnects_and_resubscribes_after_a_dropped_connection(settings: Settings, bus: Bus) -> None:
    later = Trade("AAPL", 191.0, 50, T0 + timedelta(minutes=1), id=9)
    emu = AlpacaStreamEmulator([Send([TRADE]), Drop(), Send([later])])
    async with emu, running(run_feed, alpaca_settings(settings, emu)) as feed:
        ticks, _ = await wait_for_published(bus, settings.tick_partitions, ticks=2)
        assert [tick.price for tick in ticks] == [190.25, 191.0]
        assert emu.connections == 2
        assert feed.counters["connections"] == 2
        assert emu.sessions[1].subscriptions["trades"] == {"AAPL", "MSFT"}


async def test_bad_credentials_stop_with_one_clear_line(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    async with AlpacaStreamEmulator(secret="another-secret") as emu:
        with pytest.raises(SettingsError) as stopped:
            async with asyncio.timeout(10):
                await run_feed(alpaca_settings(settings, emu), stop=asyncio.Event(), counters=Counter())
    assert str(stopped.value) == "Alpaca rejected ALPACA_KEY/ALPACA_SECRET (402 auth failed): set valid keys"
    assert emu.connections == 1  # no retrying of a key that cannot work
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "alpaca-py logged the failure"
    assert "test-secret" not in caplog.text


async def test_insufficient_subscription_stops_with_one_clear_line(settings: Settings, bus: Bus) -> None:
    async with AlpacaStreamEmulator([RejectAuth(409)], feed="sip") as emu:
        with pytest.raises(
            SettingsError,
            match=r"refused the 'sip' feed \(409 insufficient subscription\): "
            r"set ALPACA_FEED=iex",
        ):
            async with asyncio.timeout(10):
                await run_feed(
                    alpaca_settings(settings, emu, alpaca_feed="sip"), stop=asyncio.Event(), counters=Counter()
                )


async def test_connection_limit_is_retried_with_backoff_and_logged_once(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    emu = AlpacaStreamEmulator([RejectAuth(406), RejectAuth(406), RejectAuth(406), Send([TRADE])])
    async with emu, running(run_feed, alpaca_settings(settings, emu)):
        await wait_for_published(bus, settings.tick_partitions, ticks=1)
    assert emu.auth_results == ["rejected:406"] * 3 + ["ok"]
    messages = [r.getMessage() for r in caplog.records if r.name == "tradebot.common.lifecycle"]
    assert messages == [
        "alpaca stream unavailable (connection limit exceeded (406): another connection uses these "
        "keys); retrying with backoff",
        "alpaca stream is back after 3 retries",
    ]


async def test_malformed_frames_are_logged_counted_and_skipped(
    settings: Settings, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    zero_price = {"T": "t", "S": "AAPL", "i": 1, "x": "V", "p": 0, "s": 100, "t": T0}
    bar_without_close = {"T": "b", "S": "AAPL", "o": 1.0, "h": 2.0, "l": 0.5, "v": 10, "t": T0, "n": 1, "vw": 1.0}
    low_above_high = {"T": "b", "S": "AAPL", "o": 1.0, "h": 1.0, "l": 2.0, "c": 1.0, "v": 1, "t": T0, "n": 1, "vw": 1.0}
    scenario = [
        SendMessages([zero_price, bar_without_close, low_above_high]),
        SendRaw(b"\xc1"),
        SendRaw("a text frame"),
        Send([TRADE]),
    ]
    async with AlpacaStreamEmulator(scenario) as emu, running(run_feed, alpaca_settings(settings, emu)) as feed:
        ticks, bars = await wait_for_published(bus, settings.tick_partitions, ticks=1)
        assert [tick.id for tick in ticks] == ["alpaca:AAPL:V-7"]
        assert bars == []
        await wait_until(lambda: feed.counters["malformed"] == 5, what="5 malformed records counted")
        assert emu.connections == 1
        assert not feed.task.done()
    assert caplog.text.count("skipped malformed record") == 5


async def test_missing_keys_stop_with_one_line_naming_the_variable(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=r"^ALPACA_KEY is not set: set ALPACA_KEY and ALPACA_SECRET"):
        await run_feed(settings, stop=asyncio.Event(), counters=Counter())


def test_worker_process_exits_with_one_line_on_rejected_keys(settings: Settings) -> None:
    with AlpacaStreamEmulator(secret="another-secret") as emu:
        env = {
            **os.environ,
            "REDIS_URL": settings.redis_url or "",
            "DATABASE_URL": settings.database_url or "",
            "ALPACA_KEY": "test-key",
            "ALPACA_SECRET": "test-secret",
            "ALPACA_STREAM_URL": emu.url,
            "SYMBOL_MODE": "custom",
            "SYMBOLS": "AAPL",
            "LOG_LEVEL": "WARNING",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tradebot.market_data.alpaca_service"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == CONFIG_ERROR_EXIT
    assert done.stderr.strip().splitlines() == [
        "Alpaca rejected ALPACA_KEY/ALPACA_SECRET (402 auth failed): set valid keys"
    ]


async def test_published_ticks_land_in_their_symbols_partition(settings: Settings, bus: Bus) -> None:
    emu = AlpacaStreamEmulator([Send([TRADE, MSFT_TRADE])])
    async with emu, running(run_feed, alpaca_settings(settings, emu)):
        await wait_for_published(bus, settings.tick_partitions, ticks=2)
    for symbol in ("AAPL", "MSFT"):
        entries = await bus.redis.xrange(tick_stream_for(symbol, settings.tick_partitions))
        assert symbol in {tick.symbol for _, fields in entries for tick in decode_all(fields)}
    ticks, _ = await published(bus, settings.tick_partitions)
    assert {tick.symbol for tick in ticks} == {"AAPL", "MSFT"}
