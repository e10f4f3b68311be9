"""The one live-feed runner: a provider's stream → the bus, with gap repair after every connect.

A provider (providers/alpaca.py, providers/polygon.py) brings its stream and its REST history as a
``LiveFeed``; this module subscribes the universe, publishes through the ``LivePublisher`` and
repairs what each reconnect missed from the history (bars, and trades where the source serves
them). A refusal no retry can fix (bad keys, feed not in the plan) stops the worker with one line.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tradebot.common.config import ReadySettings, SettingsError
from tradebot.common.runtime import WorkerRun
from tradebot.market_data.gap_repair import REPAIR_SETTLE_S, GapRepairer
from tradebot.market_data.live_publisher import live_publisher, run_until_stopped, subscription_symbols
from tradebot.market_data.mock_feed import Clock, utc_now
from tradebot.providers.base import LiveFeed, StreamRejected
from tradebot.providers.rest import Fetcher, RetryPolicy

REPAIR_POLICY = RetryPolicy(attempts=4)


async def run_feed(
    settings: ReadySettings,
    *,
    feed: LiveFeed,
    stop: asyncio.Event,
    counters: Counter[str],
    clock: Clock = utc_now,
    repair_settle_s: float = REPAIR_SETTLE_S,
    rest_timeout_s: float | None = None,
) -> None:
    """Stream ``feed`` until ``stop``; ``clock``, ``repair_settle_s`` and ``rest_timeout_s`` (of the gap
    repair's REST requests) are for tests on emulator time."""
    history = Fetcher(feed.bars(settings, rest_timeout_s), REPAIR_POLICY)  # missing keys stop here
    symbols = await subscription_symbols(settings, feed.name)
    async with live_publisher(settings, feed.name, symbols, counters, stop) as publisher:
        repairer = GapRepairer(
            publisher,
            history.minute_bars,
            symbols,
            stop=stop,
            counters=counters,
            clock=clock,
            settle_s=repair_settle_s,
            fetch_trades=history.trades if history.serves_trades else None,
        )
        publisher.on_gap = repairer.repair_gap  # gaps recorded during a Redis outage are repaired too

        def connected() -> None:
            counters["connections"] += 1
            repairer.on_connected()

        try:
            await run_until_stopped(feed.stream(settings, symbols, publisher, connected, stop), stop, publisher)
        except StreamRejected as rejected:
            raise SettingsError(str(rejected)) from None
        finally:
            await repairer.close()


def worker(feed: LiveFeed) -> WorkerRun:
    """The worker entry (``run``) of a provider's live-feed role."""

    async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
        await run_feed(settings, feed=feed, stop=stop, counters=counters)

    return run
