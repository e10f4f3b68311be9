"""The REST fetching every provider shares: requests in threads, paced, with timeouts and retries.

A provider's ``BarSource.fetch`` is blocking (the official clients are synchronous) and raises
``RetryableError`` for 429/5xx/network trouble, ``FatalError`` for problems no retry fixes (bad
keys), anything else for a request the provider refused. The ``Fetcher`` runs it in a thread,
at least RATE_LIMIT_DELAY seconds after the previous start, and retries with capped, jittered
exponential backoff, or exactly as long as the provider's Retry-After / X-RateLimit-Reset says.
Every request has a timeout (PROVIDER_TIMEOUT_S: neither client sets one by default), so a
stalled server costs a retry, not a request slot forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from tradebot.common.lifecycle import backoff_delay_s
from tradebot.common.models import Bar, Tick, Timeframe
from tradebot.providers.base import BarSource, RetryableError, TradeSource

log = logging.getLogger(__name__)
T = TypeVar("T")

# A REST request fails (and is retried) when the server sends nothing for this long; connecting
# may take at most CONNECT_TIMEOUT_S of it. Per read, not per response: a long page still arrives.
CONNECT_TIMEOUT_S = 5.0


def rest_timeouts(timeout_s: float) -> tuple[float, float]:
    """(connect, read) timeouts in seconds for a request allowed ``timeout_s`` of silence."""
    return min(CONNECT_TIMEOUT_S, timeout_s), timeout_s


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long the provider asked us to wait: Retry-After (seconds or HTTP date), else X-RateLimit-Reset."""
    now = time.time() if now is None else now
    lowered = {name.lower(): value for name, value in headers.items()}
    value = lowered.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return None
    reset = lowered.get("x-ratelimit-reset")
    try:
        return max(0.0, float(reset) - now) if reset else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request, and the backoff between them."""

    attempts: int = 6
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0

    def delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Wait before retry number ``attempt`` (1-based): the provider's word, or equal-jitter backoff."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        return backoff_delay_s(attempt, base_s=self.base_s, cap_s=self.cap_s)


class RequestPacer:
    """Keeps the starts of any two requests at least ``delay_s`` apart (RATE_LIMIT_DELAY)."""

    def __init__(
        self,
        delay_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.delay_s = delay_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._next_start = 0.0

    async def wait(self) -> None:
        """Return when the next request may start."""
        if self.delay_s <= 0:
            return
        async with self._lock:
            pause = self._next_start - self._clock()
            if pause > 0:
                await self._sleep(pause)
            self._next_start = self._clock() + self.delay_s


@dataclass
class Fetcher:
    """Runs a source's requests in threads with pacing and retries; counts the retries."""

    source: BarSource
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    pacer: RequestPacer = field(default_factory=lambda: RequestPacer(0.0))
    retries: int = 0

    async def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """The bars, after up to ``policy.attempts`` attempts; raises the last error."""
        return await self._retrying(
            f"{timeframe} {','.join(symbols)}", self.source.fetch, symbols, timeframe, start, end
        )

    async def _retrying(self, what: str, call: Callable[..., list[T]], *args: Any) -> list[T]:
        """``call(*args)`` in a thread, paced, after up to ``policy.attempts`` attempts."""
        for attempt in range(1, self.policy.attempts + 1):
            await self.pacer.wait()
            try:
                return await asyncio.to_thread(call, *args)
            except RetryableError as error:
                if attempt == self.policy.attempts:
                    raise RetryableError(f"{error} (gave up after {attempt} attempts)") from error
                delay = self.policy.delay_s(attempt, error.retry_after_s)
                self.retries += 1
                log.debug("%s %s: %s; retrying in %.2fs", self.source.name, what, error, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    @property
    def serves_trades(self) -> bool:
        """Whether the source has historical trades (``trades`` works)."""
        return isinstance(self.source, TradeSource)

    async def trades(self, symbols: list[str], start: datetime, end: datetime) -> list[Tick]:
        """Historical trades of any number of symbols, batched by the source's batch size (gap repair)."""
        source = self.source
        if not isinstance(source, TradeSource):
            raise TypeError(f"{self.source.name} serves no historical trades")
        ticks: list[Tick] = []
        for first in range(0, len(symbols), self.source.batch_size):
            batch = symbols[first : first + self.source.batch_size]
            ticks += await self._retrying(f"trades {','.join(batch)}", source.fetch_trades, batch, start, end)
        return ticks

    async def minute_bars(self, symbols: list[str], start: datetime, end: datetime) -> list[Bar]:
        """1-minute bars of any number of symbols, batched by the source's batch size (gap repair)."""
        bars: list[Bar] = []
        for first in range(0, len(symbols), self.source.batch_size):
            bars += await self.fetch(symbols[first : first + self.source.batch_size], "1m", start, end)
        return bars
