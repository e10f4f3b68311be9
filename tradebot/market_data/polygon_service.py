"""The Polygon live feed: polygon-api-client's WebSocketClient → Ticks (``T``) and 1-minute Bars (``AM``).

It streams at most MAX_WEBSOCKET_SYMBOLS symbols from the real-time or delayed feed
(POLYGON_FEED), or POLYGON_STREAM_HOST when set: ``host:port`` (TLS) or ``ws://host:port`` (plain,
e.g. a local emulator).

The client runs in raw mode, so every frame is parsed here and a malformed one (not JSON, an
element without ``ev``, a bad field) is logged, counted and skipped; in parsed mode the client
would raise out of ``connect()`` instead. The client ends ``connect()`` on a close with code 1000
and gives up after ``max_reconnects`` abnormal closes, so the reconnect loop is ours: after any
close it reconnects with capped, jittered backoff (logged once per outage), and every new
connection triggers gap repair. A rejected key (``auth_failed``) stops the worker with one line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable

from polygon import WebSocketClient
from polygon.exceptions import AuthError
from polygon.websocket.models import Feed
from websockets.exceptions import WebSocketException

from tradebot.backfill.polygon_aggregates import PolygonBars, polygon_api_key
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
from tradebot.market_data.provider_convert import POLYGON, polygon_event

log = logging.getLogger(__name__)

ROLE = "polygon"
CONNECTION_ERRORS = (WebSocketException, OSError, TimeoutError, ValueError, KeyError, IndexError, TypeError)
REPAIR_POLICY = RetryPolicy(attempts=4)
UNHEALTHY_STATUSES = {"error", "max_connections", "slow_consumer", "force_disconnect"}


def stream_endpoint(settings: Settings) -> tuple[str, bool]:
    """(host[:port], use TLS) for the client's ``feed`` and ``secure`` arguments."""
    host = (settings.polygon_stream_host or "").rstrip("/")
    if not host:
        feed = Feed.Delayed if settings.polygon_feed == "delayed" else Feed.RealTime
        return feed.value, True
    if host.startswith("ws://"):
        return host.removeprefix("ws://"), False
    return host.removeprefix("wss://"), True


def topics(symbols: list[str]) -> list[str]:
    """Trades and minute aggregates of every symbol."""
    return [f"{channel}.{symbol}" for symbol in symbols for channel in ("T", "AM")]


def make_client(api_key: str, host: str, secure: bool, symbols: list[str]) -> WebSocketClient:
    """The official client in raw mode. max_reconnects=0: connect() raises on the first abnormal
    close, so every reconnect goes through our loop (backoff, logging, gap repair)."""
    return WebSocketClient(
        api_key=api_key,
        feed=host,
        market="stocks",
        raw=True,
        secure=secure,
        subscriptions=topics(symbols),
        max_reconnects=0,
    )


class FrameProcessor:
    """Parses raw frames; statuses are logged, events enqueued, malformed ones counted and skipped.

    The first frame of a connection (the subscription acknowledgement, normally) announces the
    connection: only a server that accepted our subscription counts as connected, so one that
    closes right after authenticating (e.g. max_connections) keeps the backoff growing.
    """

    def __init__(self, publisher: LivePublisher, on_connected: Callable[[], None]):
        self.publisher = publisher
        self.on_connected = on_connected
        self.announced = False

    def new_connection(self) -> None:
        self.announced = False

    async def __call__(self, frame: str | bytes) -> None:
        if not self.announced:
            self.announced = True
            self.on_connected()
        try:
            elements = json.loads(frame)
        except (ValueError, TypeError) as error:
            self.publisher.malformed(frame, error)
            return
        if not isinstance(elements, list):
            self.publisher.malformed(frame, TypeError("a frame must be a JSON array"))
            return
        for element in elements:
            if isinstance(element, dict) and element.get("ev") == "status":
                self._status(element)
            else:
                await self.publisher.offer(polygon_event, element)

    @staticmethod
    def _status(element: dict) -> None:
        level = logging.WARNING if element.get("status") in UNHEALTHY_STATUSES else logging.DEBUG
        log.log(level, "polygon status %s: %s", element.get("status"), element.get("message"))


async def stream_forever(
    new_client: Callable[[], WebSocketClient], processor: FrameProcessor, backoff: Backoff, stop: asyncio.Event
) -> None:
    """Connect, and reconnect after every close (1000 included), until cancelled."""
    while not stop.is_set():
        client = new_client()
        processor.new_connection()
        try:
            await client.connect(processor)
            reason: object = "the server closed the connection (code 1000)"
        except AuthError:
            raise StreamRejected("Polygon rejected POLYGON_API_KEY (auth_failed): set a valid key") from None
        except CONNECTION_ERRORS as error:
            reason = error
        finally:
            if client.websocket is not None:
                await client.close()
        await backoff.wait(reason, stop)  # type: ignore[arg-type]


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
    api_key = polygon_api_key(settings)
    history = Fetcher(PolygonBars(settings, timeout_s=rest_timeout_s), REPAIR_POLICY)
    host, secure = stream_endpoint(settings)
    symbols = await subscription_symbols(settings, ROLE)
    backoff = Backoff("polygon stream", cap_s=30.0)
    async with live_publisher(settings, POLYGON, symbols, counters, stop) as publisher:
        repairer = GapRepairer(
            publisher, history.minute_bars, symbols, stop=stop, counters=counters, clock=clock, settle_s=repair_settle_s
        )
        publisher.on_gap = repairer.repair_gap  # gaps recorded during a Redis outage are repaired too

        def connected() -> None:
            counters["connections"] += 1
            backoff.succeeded()
            log.info("polygon: connected to %s", host)
            repairer.on_connected()

        stream = stream_forever(
            lambda: make_client(api_key, host, secure, symbols), FrameProcessor(publisher, connected), backoff, stop
        )
        try:
            await run_until_stopped(stream, stop, publisher)
        except StreamRejected as rejected:
            raise SettingsError(str(rejected)) from None
        finally:
            await repairer.close()


async def run(settings: Settings, *, stop: asyncio.Event, counters: Counter) -> None:
    """Worker entry: stream Polygon trades and minute aggregates until stopped."""
    await run_feed(settings, stop=stop, counters=counters)


def main() -> None:
    """``python -m tradebot.market_data.polygon_service``."""
    runtime.main(ROLE, run)


if __name__ == "__main__":
    main()
