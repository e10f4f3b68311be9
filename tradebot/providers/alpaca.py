"""Alpaca: the live stream (alpaca-py ``StockDataStream``), historical bars
(``StockHistoricalDataClient``), their conversions and the keys, in one place.

Live: trades become Ticks, minute bars (and their late-trade corrections, ``updatedBars``) become
1-minute Bars, from ALPACA_FEED (iex or sip), or ALPACA_STREAM_URL when set (a full URL, e.g. a
local emulator). alpaca-py's receive loop (``_run_forever``) runs as a task in our event loop,
with its handlers in raw mode so that every message is converted (and, if malformed, skipped) by
us. A subclass takes over connecting: alpaca-py would retry a rejected key forever, only logging
it, so here 402 (bad keys) and 409 (feed not in the plan) stop the worker with one line, 406
(another connection uses these keys) and network failures are retried with backoff and logged once
per episode, and each successful connection is reported (the worker repairs gaps then). Drops after
that are alpaca-py's to handle: it reconnects, re-authenticates (through us) and resubscribes.

History: up to BACKFILL_BATCH_SIZE symbols go into one multi-symbol request; alpaca-py follows
``next_page_token`` itself. Historical trades (``get_stock_trades``, for gap repair) come the same
way and get the ids and timestamps the live stream gives the same prints. alpaca-py retries 429
and 504 itself with a fixed, blocking ``time.sleep(3)`` per attempt that ignores Alpaca's
rate-limit headers; inside our worker threads that stalls every request slot for seconds at a
time. So its retries are switched off
(``_retry = 0``, a private attribute: the constructor does not expose it) and the ``Fetcher``
retries instead, with backoff and the headers. alpaca-py passes no timeout to requests either, so a
server that stops answering would hold a request (and its thread) forever. The client's session
(``_session``, private as well) gets an adapter that supplies our timeouts to every request that
sets none.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgpack
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.models import Bar as AlpacaBar
from alpaca.data.requests import StockBarsRequest, StockTradesRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from websockets.exceptions import WebSocketException

from tradebot.common.config import Settings, SettingsError
from tradebot.common.lifecycle import Backoff
from tradebot.common.models import Bar, Tick, Timeframe
from tradebot.providers.base import EventSink, FatalError, LiveFeed, RetryableError, StreamRejected
from tradebot.providers.convert import (
    CONVERSION_ERRORS,
    as_utc,
    rest_bar,
    rest_trade,
    stream_minute_bar,
    stream_trade,
)
from tradebot.providers.rest import rest_timeouts, retry_after_seconds

log = logging.getLogger(__name__)

ALPACA = "alpaca"
ALPACA_BAR_TYPES = {"b", "u"}  # minute bars and their late-trade corrections ("updatedBars")
CONNECT_ERRORS = (OSError, TimeoutError, WebSocketException, ValueError, IndexError, KeyError, TypeError)
# What a frame that is not a msgpack array of message maps raises inside alpaca-py's _consume.
MALFORMED_FRAME_ERRORS = (ValueError, TypeError, AttributeError)

TIMEFRAMES: dict[str, TimeFrame] = {
    "1m": TimeFrame(1, TimeFrameUnit.Minute),
    "5m": TimeFrame(5, TimeFrameUnit.Minute),
    "15m": TimeFrame(15, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}
# Alpaca's `end` is inclusive; ours is exclusive.
JUST_BEFORE = timedelta(microseconds=1)


def alpaca_credentials(settings: Settings) -> tuple[str, str]:
    """ALPACA_KEY and ALPACA_SECRET, or one line saying to set them."""
    if settings.alpaca_key is None or settings.alpaca_secret is None:
        missing = "ALPACA_KEY" if settings.alpaca_key is None else "ALPACA_SECRET"
        raise SettingsError(
            f"{missing} is not set: set ALPACA_KEY and ALPACA_SECRET to your Alpaca API key id "
            "and secret (app.alpaca.markets)"
        )
    return settings.alpaca_key.get_secret_value(), settings.alpaca_secret.get_secret_value()


class TimeoutAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with a default timeout for requests that pass none (as alpaca-py's do)."""

    def __init__(self, timeout: tuple[float, float]):
        super().__init__()
        self.timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self.timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def with_timeout(session: requests.Session, timeout_s: float) -> requests.Session:
    """``session`` with every request that sets no timeout given ``rest_timeouts(timeout_s)``."""
    adapter = TimeoutAdapter(rest_timeouts(timeout_s))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def classify(error: APIError) -> Exception:
    """alpaca-py's APIError as retryable (429/5xx), fatal (keys, plan) or a refused request."""
    status = error.status_code or 0
    body = str(error)
    if status == 429 or status >= 500:
        headers = error.response.headers if error.response is not None else {}
        return RetryableError(f"HTTP {status}", retry_after_seconds(headers))
    if status in (401, 403) and "subscription" in body.lower():
        return FatalError(
            f"Alpaca refused this data for your plan (HTTP {status}: {_message(body)}): "
            "set ALPACA_FEED=iex or upgrade your market data subscription"
        )
    if status in (401, 403):
        return FatalError(f"Alpaca rejected ALPACA_KEY/ALPACA_SECRET (HTTP {status}): set valid keys")
    return RuntimeError(f"HTTP {status}: {_message(body)}")


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", body))[:200]
    except (ValueError, AttributeError):
        return body[:200]


class AlpacaBars:
    """Alpaca's historical stock bars as a BarSource, and its historical trades as a TradeSource."""

    name = ALPACA

    def __init__(self, settings: Settings, *, timeout_s: float | None = None):
        timeout_s = timeout_s or settings.provider_timeout_s
        key, secret = alpaca_credentials(settings)
        self.batch_size = settings.backfill_batch_size
        self.feed = DataFeed(settings.alpaca_feed)
        self.client = StockHistoricalDataClient(key, secret, url_override=settings.alpaca_data_url)
        self.client._retry = 0  # see the module docstring: the runner retries without blocking sleeps
        with_timeout(self.client._session, timeout_s)  # and requests never wait forever

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars of ``symbols`` with start <= timestamp < end, every page of them."""
        request = StockBarsRequest(
            symbol_or_symbols=list(symbols),
            timeframe=TIMEFRAMES[timeframe],
            start=start,
            end=end - JUST_BEFORE,
            feed=self.feed,
            adjustment=Adjustment.RAW,
        )
        result = self._call(self.client.get_stock_bars, request)
        return self._convert(result.data, timeframe)

    def fetch_trades(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[Tick]:
        """Trades of ``symbols`` with start <= timestamp < end, every page of them."""
        request = StockTradesRequest(
            symbol_or_symbols=list(symbols), start=start, end=end - JUST_BEFORE, feed=self.feed
        )
        result = self._call(self.client.get_stock_trades, request)
        ticks, invalid = [], 0
        for series in result.data.values():
            for trade in series:
                try:
                    ticks.append(
                        rest_trade(
                            ALPACA,
                            trade.symbol,
                            as_utc(trade.timestamp),
                            trade.exchange,
                            trade.id,
                            trade.price,
                            trade.size,
                        )
                    )
                except CONVERSION_ERRORS:
                    invalid += 1
        if invalid:
            log.warning("alpaca: skipped %d invalid historical trade(s)", invalid)
        return ticks

    def _call(self, method: Callable[[Any], Any], request: Any) -> Any:
        """One data client call, its failures classified for the Fetcher."""
        try:
            return method(request)
        except APIError as error:
            raise classify(error) from error
        except requests.Timeout as error:
            raise RetryableError(f"no answer in time ({type(error).__name__})") from error
        except requests.RequestException as error:
            raise RetryableError(f"network error: {type(error).__name__}") from error

    def _convert(self, data: dict[str, Any], timeframe: Timeframe) -> list[Bar]:
        bars, invalid = [], 0
        for series in data.values():
            for bar in series:
                try:
                    bars.append(alpaca_rest_bar(bar, timeframe))
                except CONVERSION_ERRORS:
                    invalid += 1
        if invalid:
            log.warning("alpaca: skipped %d invalid %s bar(s)", invalid, timeframe)
        return bars


def alpaca_rest_bar(bar: AlpacaBar, timeframe: Timeframe) -> Bar:
    """An alpaca-py historical Bar → Bar of ``timeframe``."""
    return rest_bar(ALPACA, bar.symbol, timeframe, as_utc(bar.timestamp), bar, bar.trade_count)


def alpaca_trade(message: Mapping[str, Any]) -> Tick:
    """``{"T":"t","S","i","x","p","s","t",...}`` → Tick."""
    return stream_trade(ALPACA, message["S"], as_utc(message["t"]), message)


def alpaca_minute_bar(message: Mapping[str, Any]) -> Bar:
    """``{"T":"b"|"u","S","o","h","l","c","v","t","n","vw"}`` (``t`` = bucket start) → 1m Bar."""
    return stream_minute_bar(ALPACA, message["S"], as_utc(message["t"]), message, message.get("n"))


def alpaca_event(message: Any) -> Tick | Bar | None:
    """The event in one Alpaca stream message; None for kinds tradebot does not store."""
    if not isinstance(message, Mapping):
        raise TypeError(f"not a message object: {message!r}")
    kind = message.get("T")
    if kind == "t":
        return alpaca_trade(message)
    if kind in ALPACA_BAR_TYPES:
        return alpaca_minute_bar(message)
    return None


# ----- live stream ------------------------------------------------------------------------------


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


# alpaca-py has no public hook for any of this: its only public entry, ``run()``, starts an event
# loop of its own (we need its loop inside ours), it swallows the auth error code, and a frame it
# cannot decode ends its receive loop. So this subclass overrides the private ``_auth``,
# ``_start_ws`` and ``_consume`` and runs ``_run_forever`` — valid for the pinned alpaca-py
# (requirements.txt); tests/test_alpaca_overrides.py fails when a new version changes any of them.
class AlpacaStream(StockDataStream):
    """StockDataStream that stops on 402/409, backs off on 406, counts malformed frames, reports connects."""

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        feed: str,
        url: str | None,
        sink: EventSink,
        on_connected: Callable[[], None],
        stop: asyncio.Event,
    ):
        super().__init__(key, secret, raw_data=True, feed=DataFeed(feed), url_override=url)
        self.feed_name = feed
        self.sink = sink
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
                self.sink.malformed("<undecodable frame>", error)


async def stream(
    settings: Settings, symbols: list[str], sink: EventSink, on_connected: Callable[[], None], stop: asyncio.Event
) -> None:
    """Stream trades and minute bars of ``symbols`` into ``sink`` until cancelled."""
    key, secret = alpaca_credentials(settings)
    client = AlpacaStream(
        key,
        secret,
        feed=settings.alpaca_feed,
        url=settings.alpaca_stream_url,
        sink=sink,
        on_connected=on_connected,
        stop=stop,
    )

    async def handle(message: Any) -> None:
        await sink.offer(alpaca_event, message)

    client.subscribe_trades(handle, *symbols)
    client.subscribe_bars(handle, *symbols)
    client.subscribe_updated_bars(handle, *symbols)
    try:
        await client._run_forever()
    finally:
        await client.close()


def history(settings: Settings, timeout_s: float | None = None) -> AlpacaBars:
    """The historical bars source (for gap repair)."""
    return AlpacaBars(settings, timeout_s=timeout_s)


LIVE = LiveFeed(ALPACA, history, stream)
