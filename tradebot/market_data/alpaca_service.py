"""The Alpaca live feed: alpaca-py's StockDataStream → Ticks and 1-minute Bars on the bus.

Trades become Ticks on ``price.ticks:{p}``; minute bars (and their late-trade corrections,
``updatedBars``) become Bars on ``price.bars``. It streams at most MAX_WEBSOCKET_SYMBOLS symbols
from ALPACA_FEED (iex or sip), or ALPACA_STREAM_URL when set (a full URL, e.g. a local emulator).

alpaca-py's receive loop (``_run_forever``) runs as a task in our event loop, with its handlers
in raw mode so that every message is converted (and, if malformed, skipped) by us. A subclass
takes over connecting: alpaca-py would retry a rejected key forever, only logging it, so here
402 (bad keys) and 409 (feed not in the plan) stop the worker with one line, 406 (another
connection uses these keys) and network failures are retried with backoff and logged once per
episode, and each successful connection triggers gap repair. Drops after that are alpaca-py's to
handle: it reconnects, re-authenticates (through us) and resubscribes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
from alpaca.data.enums import DataFeed
from alpaca.data.live import StockDataStream
from websockets.exceptions import WebSocketException

from tradebot.backfill.alpaca_historical import AlpacaBars, alpaca_credentials
from tradebot.backfill.runner import Fetcher, RetryPolicy
from tradebot.common import runtime
from tradebot.common.config import Settings, SettingsError
from tradebot.common.consumer import Backoff
from tradebot.market_data.gap_repair import REPAIR_SETTLE_S, GapRepairer
from tradebot.market_data.live_publisher import (
    LivePublisher,
    StreamRejected,
    live_publisher,
    run_until_stopped,
    subscription_symbols,
)
from tradebot.market_data.mock_feed import Clock, utc_now
from tradebot.market_data.provider_convert import ALPACA, alpaca_event

log = logging.getLogger(__name__)

ROLE = "alpaca"
CONNECT_ERRORS = (OSError, TimeoutError, WebSocketException, ValueError, IndexError, KeyError, TypeError)
# What a frame that is not a msgpack array of message maps raises inside alpaca-py's _consume.
MALFORMED_FRAME_ERRORS = (ValueError, TypeError, AttributeError)
REPAIR_POLICY = RetryPolicy(attempts=4)


class AuthRejectedError(Exception):
    """Alpaca answered the auth message with an error (alpaca-py keeps only its text)."""

    def __init__(self, code: int | None, message: str):
        super().__init__(f"{message} ({code})")
        self.code = code


def rejection_line(code: int | None, feed: str) -> str | None:
    """The one line to stop with for a rejection no retry can fix; None for the others."""
    if code == 402:
        return "Alpaca rejected ALPACA_KEY/ALPACA_SECRET (402 auth failed): set valid keys"
    if code == 409:
        return (
            f"Alpaca refused the {feed!r} feed (409 insufficient subscription): set ALPACA_FEED=iex "
            "or upgrade your market data subscription"
        )
    return None


class AlpacaStream(StockDataStream):
    """StockDataStream that stops on 402/409, backs off on 406, counts malformed frames, reports connects."""

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        feed: str,
        url: str | None,
        publisher: LivePublisher,
        on_connected: Callable[[], None],
        stop: asyncio.Event,
    ):
        super().__init__(key, secret, raw_data=True, feed=DataFeed(feed), url_override=url)
        self.feed_name = feed
        self.publisher = publisher
        self.on_connected = on_connected
        self.stop_event = stop  # not `stop`: StockDataStream.stop() is a method
        # Two kinds of episode, each logged once: another connection holds the slot, or the network.
        self.limit_backoff = Backoff("alpaca stream", cap_s=30.0)
        self.connect_backoff = Backoff("alpaca stream", cap_s=30.0)

    async def _auth(self) -> None:
        """alpaca-py's auth exchange, keeping the error code it drops."""
        ws: Any = self._ws
        await ws.send(msgpack.packb({"action": "auth", "key": self._api_key, "secret": self._secret_key}))
        reply = msgpack.unpackb(await ws.recv())
        first = reply[0] if isinstance(reply, list) and reply and isinstance(reply[0], dict) else {}
        if first.get("T") == "success" and first.get("msg") == "authenticated":
            return
        raise AuthRejectedError(first.get("code"), str(first.get("msg", reply)))

    async def _start_ws(self) -> None:
        """Connect and authenticate, retrying until it works or Alpaca refuses for good."""
        while True:
            try:
                await self._connect()
                await self._auth()
                break
            except AuthRejectedError as rejected:
                await self.close()
                await self._rejected(rejected)
            except CONNECT_ERRORS as error:
                await self.close()
                await self.connect_backoff.wait(error, self.stop_event)
        self.limit_backoff.succeeded()
        self.connect_backoff.succeeded()
        log.info("alpaca: connected to %s (feed %s)", self._endpoint, self.feed_name)
        self.on_connected()

    async def _rejected(self, rejected: AuthRejectedError) -> None:
        line = rejection_line(rejected.code, self.feed_name)
        if line is not None:
            raise StreamRejected(line)
        if rejected.code == 406:
            reason = "connection limit exceeded (406): another connection uses these keys"
            await self.limit_backoff.wait(ConnectionRefusedError(reason), self.stop_event)
        else:
            await self.connect_backoff.wait(rejected, self.stop_event)

    async def _consume(self) -> bool:
        """alpaca-py's receive loop, resumed after a frame it cannot decode (counted as malformed)."""
        while True:
            try:
                return await super()._consume()
            except MALFORMED_FRAME_ERRORS as error:
                if self._ws is None:  # closed meanwhile: not a frame problem
                    raise
                self.publisher.malformed("<undecodable frame>", error)


async def run_feed(
    settings: Settings,
    *,
    stop: asyncio.Event,
    counters: Counter,
    clock: Clock = utc_now,
    repair_settle_s: float = REPAIR_SETTLE_S,
    rest_timeout_s: float | None = None,
) -> None:
    """Stream until ``stop``; ``clock``, ``repair_settle_s`` and ``rest_timeout_s`` (of the gap repair's
    REST requests) are for tests on emulator time."""
    key, secret = alpaca_credentials(settings)
    history = Fetcher(AlpacaBars(settings, timeout_s=rest_timeout_s), REPAIR_POLICY)
    symbols = await subscription_symbols(settings, ROLE)
    async with live_publisher(settings, ALPACA, symbols, counters, stop) as publisher:
        repairer = GapRepairer(
            publisher, history.minute_bars, symbols, stop=stop, counters=counters, clock=clock, settle_s=repair_settle_s
        )
        publisher.on_gap = repairer.repair_gap  # gaps recorded during a Redis outage are repaired too

        def connected() -> None:
            counters["connections"] += 1
            repairer.on_connected()

        stream = AlpacaStream(
            key,
            secret,
            feed=settings.alpaca_feed,
            url=settings.alpaca_stream_url,
            publisher=publisher,
            on_connected=connected,
            stop=stop,
        )

        async def handle(message: Any) -> None:
            await publisher.offer(alpaca_event, message)

        stream.subscribe_trades(handle, *symbols)
        stream.subscribe_bars(handle, *symbols)
        stream.subscribe_updated_bars(handle, *symbols)
        try:
            await run_until_stopped(stream._run_forever(), stop, publisher)
        except StreamRejected as rejected:
            raise SettingsError(str(rejected)) from None
        finally:
            await repairer.close()
            await stream.close()


async def run(settings: Settings, *, stop: asyncio.Event, counters: Counter) -> None:
    """Worker entry: stream Alpaca trades and minute bars until stopped."""
    await run_feed(settings, stop=stop, counters=counters)


def main() -> None:
    """``python -m tradebot.market_data.alpaca_service``."""
    runtime.main(ROLE, run)


if __name__ == "__main__":
    main()
