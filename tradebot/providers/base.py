"""The contracts between a provider and the workers that use it: history, live stream, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from tradebot.common.config import Settings
from tradebot.common.models import Bar, Tick, Timeframe


class RetryableError(Exception):
    """A failure worth retrying (429, 5xx, network, timeout); ``retry_after_s`` when the provider said when."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FatalError(Exception):
    """A failure no retry and no other symbol can get past (bad keys): the whole run stops."""


class StreamRejected(BaseException):
    """The provider refused this configuration for good (bad keys, feed not in the plan).

    A BaseException on purpose: alpaca-py's stream loop catches every Exception and retries it
    forever, so only a BaseException gets out to us. The worker turns it into one clear line.
    """


class BarSource(Protocol):
    """One provider's historical bars."""

    name: str
    batch_size: int  # symbols per request

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars with start <= timestamp < end (blocking; runs in a thread)."""
        ...


@runtime_checkable
class TradeSource(Protocol):
    """A provider that also serves historical trades (both do); gap repair fetches them."""

    def fetch_trades(self, symbols: Sequence[str], start: datetime, end: datetime) -> list[Tick]:
        """Trades of ``symbols`` with start <= timestamp < end, as the live feed would have made them
        (same ids, same timestamps); blocking, runs in a thread."""
        ...


class EventSink(Protocol):
    """Where a live stream delivers its records (the market_data worker's publisher)."""

    async def offer(self, convert: Callable[[Any], Tick | Bar | None], record: Any) -> None:
        """Convert one record and enqueue its event; a malformed record is counted and skipped."""
        ...

    def malformed(self, record: Any, error: BaseException) -> None:
        """Count a record or frame that is not a valid event."""
        ...


class StreamRunner(Protocol):
    """Stream ``symbols`` into ``sink`` until cancelled; call ``on_connected`` after every (re)connect."""

    def __call__(
        self,
        settings: Settings,
        symbols: list[str],
        sink: EventSink,
        on_connected: Callable[[], None],
        stop: asyncio.Event,
    ) -> Coroutine[Any, Any, None]: ...


@dataclass(frozen=True)
class LiveFeed:
    """What the live-feed runner needs of a provider: its name, its history (for gap repair), its stream."""

    name: str
    bars: Callable[[Settings, float | None], BarSource]  # (settings, REST timeout in s or None)
    stream: StreamRunner
