"""Polygon: the live stream (polygon-api-client ``WebSocketClient``), aggregates (``RESTClient``),
their conversions and the key, in one place.

Live: trades (``T``) become Ticks and minute aggregates (``AM``) 1-minute Bars, from the real-time
or delayed feed (POLYGON_FEED), or POLYGON_STREAM_HOST when set: ``host:port`` (TLS) or
``ws://host:port`` (plain, e.g. a local emulator). The client runs in raw mode, so every frame is
parsed here and a malformed one (not JSON, an element without ``ev``, a bad field) is logged,
counted and skipped; in parsed mode the client would raise out of ``connect()`` instead. The
client ends ``connect()`` on a close with code 1000 and gives up after ``max_reconnects`` abnormal
closes, so the reconnect loop is ours: after any close it reconnects with capped, jittered backoff
(logged once per outage), and every new connection is reported (the worker repairs gaps then). A
rejected key (``auth_failed``) stops the worker with one line.

History: the endpoint takes one ticker per request; ``list_aggs`` follows ``next_url`` itself.
Historical trades (``list_trades``, /v3/trades, for gap repair) likewise; their SIP timestamp is in
nanoseconds, the live stream's in milliseconds, so a repaired trade keeps the millisecond its live
print would have had (the same row, not a second one).
Bars are unadjusted (``adjusted=false``), like the live feed and Alpaca's raw bars, so the series
joins up. The client's urllib3 pool retries 413/429/5xx three times itself and then raises
``MaxRetryError``, which keeps neither the status nor the Retry-After header; other errors become
``BadResponse`` with only the body. We give the pool a retry policy that retries nothing and
raises ``HTTPStatusError`` (status, headers, body) for every error response, so the ``Fetcher`` can
retry 429/5xx with backoff and stop at once on a bad key. The client also takes
``connect_timeout``/``read_timeout`` but never passes them to urllib3 (polygon-api-client 1.16.3
stores them and requests without), so a stalled server would hold a request forever. Our pool
carries the timeouts itself; a timeout is retried like any network error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import certifi
import urllib3
from polygon import RESTClient, WebSocketClient
from polygon.exceptions import AuthError
from polygon.rest.models import Agg, Trade
from polygon.websocket.models import Feed
from urllib3.util.retry import Retry
from websockets.exceptions import WebSocketException

from tradebot.common.config import Settings, SettingsError
from tradebot.common.lifecycle import Backoff
from tradebot.common.models import Bar, Tick, Timeframe
from tradebot.providers.base import EventSink, FatalError, LiveFeed, RetryableError, StreamRejected
from tradebot.providers.convert import (
    CONVERSION_ERRORS,
    from_unix_ms,
    rest_bar,
    rest_trade,
    stream_minute_bar,
    stream_trade,
)
from tradebot.providers.rest import rest_timeouts, retry_after_seconds

log = logging.getLogger(__name__)

POLYGON = "polygon"
CONNECTION_ERRORS = (WebSocketException, OSError, TimeoutError, ValueError, KeyError, IndexError, TypeError)
UNHEALTHY_STATUSES = {"error", "max_connections", "slow_consumer", "force_disconnect"}

DEFAULT_REST_URL = "https://api.polygon.io"
TIMESPANS: dict[str, tuple[int, str]] = {
    "1m": (1, "minute"),
    "5m": (5, "minute"),
    "15m": (15, "minute"),
    "1h": (1, "hour"),
    "1d": (1, "day"),
}
MAX_LIMIT = 50_000


class HTTPStatusError(Exception):
    """An error response from the REST API, with what is needed to decide on a retry."""

    def __init__(self, status: int, headers: Mapping[str, str], body: str):
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status, self.headers, self.body = status, dict(headers), body


class SurfaceErrors(Retry):
    """A urllib3 retry policy that retries nothing and raises HTTPStatusError for any 4xx/5xx."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("total", 0)
        kwargs.setdefault("status_forcelist", frozenset(range(400, 600)))
        super().__init__(**kwargs)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> SurfaceErrors:
        if response is not None and response.status >= 400:
            body = response.data.decode("utf-8", "replace") if response.data else ""
            raise HTTPStatusError(response.status, response.headers, body)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def polygon_api_key(settings: Settings) -> str:
    """POLYGON_API_KEY, or one line saying to set it."""
    if settings.polygon_api_key is None:
        raise SettingsError("POLYGON_API_KEY is not set: set it to your Polygon.io API key (polygon.io/dashboard)")
    return settings.polygon_api_key.get_secret_value()


def rest_client(settings: Settings, timeout_s: float) -> RESTClient:
    """The official client on POLYGON_REST_URL (or Polygon's), with error responses surfaced and
    timeouts that apply (see the module docstring)."""
    connect_s, read_s = rest_timeouts(timeout_s)
    client = RESTClient(
        polygon_api_key(settings),
        base=(settings.polygon_rest_url or DEFAULT_REST_URL).rstrip("/"),
        retries=0,
        connect_timeout=connect_s,
        read_timeout=read_s,
    )
    client.client = urllib3.PoolManager(
        num_pools=10,
        headers=client.headers,
        ca_certs=certifi.where(),
        cert_reqs="CERT_REQUIRED",
        retries=SurfaceErrors(),
        timeout=client.timeout,
    )
    return client


def classify(error: HTTPStatusError) -> Exception:
    """429/5xx retryable, 401/403 fatal (key or plan), anything else a refused request."""
    if error.status == 429 or error.status >= 500:
        return RetryableError(f"HTTP {error.status}", retry_after_seconds(error.headers))
    if error.status in (401, 403):
        return FatalError(
            f"Polygon rejected POLYGON_API_KEY for this data (HTTP {error.status}: "
            f"{error.body[:120]}): set a valid key, or one whose plan includes it"
        )
    return RuntimeError(str(error))


def network_error(error: Exception) -> RetryableError:
    """A transport failure (urllib3 wraps it in MaxRetryError, naming the cause) as retryable."""
    cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason else error
    if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
        return RetryableError(f"no answer in time ({type(cause).__name__})")
    return RetryableError(f"network error: {type(cause).__name__}")


def unix_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class PolygonBars:
    """Polygon's aggregates as a BarSource and its trades as a TradeSource (one symbol per request)."""

    name = POLYGON
    batch_size = 1

    def __init__(self, settings: Settings, *, timeout_s: float | None = None):
        timeout_s = timeout_s or settings.provider_timeout_s
        self.client = rest_client(settings, timeout_s)

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars of the one symbol with start <= timestamp < end, every page of them."""
        (symbol,) = symbols
        multiplier, timespan = TIMESPANS[timeframe]
        aggs = self._all(
            lambda: self.client.list_aggs(
                symbol,
                multiplier,
                timespan,
                unix_ms(start),
                unix_ms(end) - 1,
                adjusted=False,
                sort="asc",
                limit=MAX_LIMIT,
            )
        )
        bars, invalid = [], 0
        for agg in aggs:
            try:
                bars.append(polygon_rest_bar(symbol, agg, timeframe))
            except CONVERSION_ERRORS:
                invalid += 1
        if invalid:
            log.warning("polygon: skipped %d invalid %s bar(s) of %s", invalid, timeframe, symbol)
        return [bar for bar in bars if start <= bar.timestamp < end]

    def fetch_trades(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[Tick]:
        """Trades of the one symbol with start <= timestamp < end, every page of them."""
        (symbol,) = symbols
        trades = self._all(
            lambda: self.client.list_trades(
                symbol, timestamp_gte=start, timestamp_lt=end, sort="timestamp", order="asc", limit=MAX_LIMIT
            )
        )
        ticks, invalid = [], 0
        for trade in trades:
            try:
                ticks.append(polygon_rest_trade(symbol, trade))
            except CONVERSION_ERRORS:
                invalid += 1
        if invalid:
            log.warning("polygon: skipped %d invalid historical trade(s) of %s", invalid, symbol)
        return ticks

    @staticmethod
    def _all(pages: Callable[[], Iterable[Any]]) -> list[Any]:
        """Every result of a paginated client call, its failures classified for the Fetcher."""
        try:
            return list(pages())
        except HTTPStatusError as error:
            raise classify(error) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise network_error(error) from error


def polygon_rest_trade(symbol: str, trade: Trade) -> Tick:
    """A polygon ``Trade`` (``sip_timestamp`` in Unix ns) → Tick, at the millisecond the stream's
    ``t`` would carry."""
    return rest_trade(
        POLYGON,
        symbol,
        from_unix_ms(trade.sip_timestamp // 1_000_000),
        trade.exchange,
        trade.id,
        trade.price,
        trade.size,
    )


def polygon_rest_bar(symbol: str, agg: Agg, timeframe: Timeframe) -> Bar:
    """A polygon ``Agg`` (``timestamp`` = window start, Unix ms) → Bar of ``timeframe``."""
    return rest_bar(POLYGON, symbol, timeframe, from_unix_ms(agg.timestamp), agg, agg.transactions)


def polygon_trade(message: Mapping[str, Any]) -> Tick:
    """``{"ev":"T","sym","i","x","p","s","t"(ms),...}`` → Tick."""
    return stream_trade(POLYGON, message["sym"], from_unix_ms(message["t"]), message)


def polygon_minute_bar(message: Mapping[str, Any]) -> Bar:
    """``{"ev":"AM","sym","o","h","l","c","v","vw","z","s"(ms),"e"}`` → 1m Bar.

    AM carries no trade count, only the average trade size ``z``; the count is estimated as
    volume / z (0 when z is missing).
    """
    volume, average_size = message["v"], message.get("z")
    trade_count = round(volume / average_size) if average_size else 0
    return stream_minute_bar(POLYGON, message["sym"], from_unix_ms(message["s"]), message, trade_count)


def polygon_event(message: Any) -> Tick | Bar | None:
    """The event in one Polygon stream element; None for statuses and kinds tradebot ignores."""
    if not isinstance(message, Mapping) or "ev" not in message:
        raise KeyError(f"element without 'ev': {message!r}")
    if message["ev"] == "T":
        return polygon_trade(message)
    if message["ev"] == "AM":
        return polygon_minute_bar(message)
    return None


# ----- live stream ------------------------------------------------------------------------------


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

    def __init__(self, sink: EventSink, on_connected: Callable[[], None]):
        self.sink = sink
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
            self.sink.malformed(frame, error)
            return
        if not isinstance(elements, list):
            self.sink.malformed(frame, TypeError("a frame must be a JSON array"))
            return
        for element in elements:
            if isinstance(element, dict) and element.get("ev") == "status":
                self._status(element)
            else:
                await self.sink.offer(polygon_event, element)

    @staticmethod
    def _status(element: dict[str, Any]) -> None:
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
        await backoff.wait(reason, stop)


async def stream(
    settings: Settings, symbols: list[str], sink: EventSink, on_connected: Callable[[], None], stop: asyncio.Event
) -> None:
    """Stream trades and minute aggregates of ``symbols`` into ``sink`` until cancelled."""
    api_key = polygon_api_key(settings)
    host, secure = stream_endpoint(settings)
    backoff = Backoff("polygon stream", cap_s=30.0)

    def connected() -> None:
        backoff.succeeded()
        log.info("polygon: connected to %s", host)
        on_connected()

    processor = FrameProcessor(sink, connected)
    await stream_forever(lambda: make_client(api_key, host, secure, symbols), processor, backoff, stop)


def history(settings: Settings, timeout_s: float | None = None) -> PolygonBars:
    """The aggregates source (for gap repair)."""
    return PolygonBars(settings, timeout_s=timeout_s)


LIVE = LiveFeed(POLYGON, history, stream)
