"""The backfill engine every provider shares: concurrency, pacing, retries, progress, resuming.

A provider is a ``BarSource``: a blocking ``fetch`` (the official clients are synchronous) that
raises ``RetryableError`` for 429/5xx/network trouble, ``FatalError`` for problems no retry fixes
(bad keys), anything else for a request the provider refused. Requests run in threads
(``asyncio.to_thread``), at most BACKFILL_CONCURRENT_REQUESTS at once, at least RATE_LIMIT_DELAY
seconds apart; retries wait with capped, jittered exponential backoff, or exactly as long as the
provider's Retry-After / X-RateLimit-Reset says. Every request has a timeout (PROVIDER_TIMEOUT_S:
neither client sets one by default), so a stalled server costs a retry, not a request slot forever,
and a stopping process never waits on a thread stuck in a read. Bars are written per symbol with
COPY (idempotent), so an interrupted run keeps what it wrote and the next run resumes from it (see
progress.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tradebot.backfill.progress import Request, plan_requests, stored_ranges
from tradebot.backfill.report import BackfillReport, print_report
from tradebot.common.config import Settings, load_settings
from tradebot.common.db import TRANSIENT_DB_ERRORS, create_pool
from tradebot.common.models import Bar, Timeframe
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions
from tradebot.storage.writer import write_bars
from tradebot.universe import UniverseError, resolve_symbols

log = logging.getLogger(__name__)

DEFAULT_TIMEFRAMES: tuple[Timeframe, ...] = ("1d", "1h", "1m")
INTRADAY: frozenset[str] = frozenset({"1m", "5m", "15m", "1h"})
# A REST request fails (and is retried) when the server sends nothing for this long; connecting
# may take at most CONNECT_TIMEOUT_S of it. Per read, not per response: a long page still arrives.
CONNECT_TIMEOUT_S = 5.0


def rest_timeouts(timeout_s: float) -> tuple[float, float]:
    """(connect, read) timeouts in seconds for a request allowed ``timeout_s`` of silence."""
    return min(CONNECT_TIMEOUT_S, timeout_s), timeout_s


class RetryableError(Exception):
    """A failure worth retrying (429, 5xx, network, timeout); ``retry_after_s`` when the provider said when."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FatalError(Exception):
    """A failure no retry and no other symbol can get past (bad keys): the whole run stops."""


class BarSource(Protocol):
    """One provider's historical bars."""

    name: str
    batch_size: int  # symbols per request

    def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """Bars with start <= timestamp < end (blocking; runs in a thread)."""
        ...


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
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class Pacer:
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
    pacer: Pacer = field(default_factory=lambda: Pacer(0.0))
    retries: int = 0

    async def fetch(self, symbols: Sequence[str], timeframe: Timeframe, start: datetime, end: datetime) -> list[Bar]:
        """The bars, after up to ``policy.attempts`` attempts; raises the last error."""
        for attempt in range(1, self.policy.attempts + 1):
            await self.pacer.wait()
            try:
                return await asyncio.to_thread(self.source.fetch, symbols, timeframe, start, end)
            except RetryableError as error:
                if attempt == self.policy.attempts:
                    raise RetryableError(f"{error} (gave up after {attempt} attempts)") from error
                delay = self.policy.delay_s(attempt, error.retry_after_s)
                self.retries += 1
                log.debug(
                    "%s %s %s: %s; retrying in %.2fs", self.source.name, timeframe, ",".join(symbols), error, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def minute_bars(self, symbols: list[str], start: datetime, end: datetime) -> list[Bar]:
        """1-minute bars of any number of symbols, batched by the source's batch size (gap repair)."""
        bars: list[Bar] = []
        for first in range(0, len(symbols), self.source.batch_size):
            bars += await self.fetch(symbols[first : first + self.source.batch_size], "1m", start, end)
        return bars


@dataclass(frozen=True)
class BackfillOptions:
    """What to fetch; None means "from the settings"."""

    timeframes: tuple[Timeframe, ...] = DEFAULT_TIMEFRAMES
    days: int | None = None
    minute_days: int | None = None
    symbols: tuple[str, ...] | None = None

    def windows(self, settings: Settings) -> dict[Timeframe, timedelta]:
        """How far back each timeframe goes: daily bars BACKFILL_DAYS, intraday BACKFILL_MINUTE_DAYS."""
        days = self.days if self.days is not None else settings.backfill_days
        minute_days = self.minute_days if self.minute_days is not None else settings.backfill_minute_days
        spans = {
            timeframe: timedelta(days=minute_days if timeframe in INTRADAY else days) for timeframe in self.timeframes
        }
        return {timeframe: span for timeframe, span in spans.items() if span > timedelta(0)}


async def execute(
    fetcher: Fetcher,
    pool: asyncpg.Pool,
    requests: Sequence[Request],
    report: BackfillReport,
    *,
    concurrency: int,
    advance: Callable[[int, int], None],
) -> None:
    """Run every request (at most ``concurrency`` at once) and store the bars; FatalError stops all."""
    slots = asyncio.Semaphore(concurrency)

    async def run(request: Request) -> None:
        async with slots:
            try:
                bars = await fetcher.fetch(request.symbols, request.timeframe, request.start, request.end)
            except FatalError:
                raise
            except Exception as error:  # noqa: BLE001 - the provider refused this request: record it, go on
                report.fail(request.symbols, f"{request.timeframe}: {error}")
                bars = []
            else:
                await store(pool, bars, report)
            advance(len(request.symbols), len(bars))

    try:
        async with asyncio.TaskGroup() as group:
            for request in requests:
                group.create_task(run(request))
    except* FatalError as fatal:
        raise fatal.exceptions[0] from None
    report.requests += len(requests)


async def store(pool: asyncpg.Pool, bars: list[Bar], report: BackfillReport) -> None:
    """Write each symbol's bars in its own COPY batch and record what was new."""
    by_symbol: dict[str, list[Bar]] = {}
    for bar in bars:
        by_symbol.setdefault(bar.symbol, []).append(bar)
    for symbol, series in by_symbol.items():
        result = report.symbols.get(symbol)
        if result is None:
            continue  # the provider answered with a symbol we did not ask for
        result.fetched += len(series)
        try:
            result.written += await write_bars(pool, series)
        except TRANSIENT_DB_ERRORS as error:
            raise FatalError(f"the database is unavailable ({error}); run the backfill again to resume") from None


def progress_bar(console: Console) -> Progress:
    """Series done of total, bars fetched, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("series • {task.fields[bars]} bars"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


async def backfill(
    settings: Settings,
    source: BarSource,
    options: BackfillOptions,
    *,
    now: datetime | None = None,
    console: Console | None = None,
    policy: RetryPolicy | None = None,
) -> BackfillReport:
    """Fetch what is missing of each window for the universe (or ``options.symbols``) and store it."""
    assert settings.database_url, "the caller fills in DATABASE_URL (runtime.infrastructure)"
    symbols = list(options.symbols or await _universe(settings))
    end = now or datetime.now(UTC)
    windows = options.windows(settings)
    await apply_migrations(settings.database_url, options=TimescaleOptions.from_settings(settings))
    pool = await create_pool(
        settings.database_url,
        max_size=settings.backfill_concurrent_requests + 1,
        application_name=f"tradebot-backfill-{source.name}",
    )
    report = BackfillReport.for_symbols(source.name, symbols)
    fetcher = Fetcher(source, policy or RetryPolicy(), Pacer(settings.rate_limit_delay))
    try:
        stored = await stored_ranges(pool, source.name, symbols, list(windows))
        requests = plan_requests(symbols, windows, end, stored, source.batch_size)
        with progress_bar(console or Console()) as progress:
            task = progress.add_task(f"{source.name} backfill", total=sum(len(r.symbols) for r in requests), bars=0)

            fetched = 0

            def advance(series: int, bars: int) -> None:
                nonlocal fetched
                fetched += bars
                progress.update(task, advance=series, bars=fetched)

            await execute(
                fetcher, pool, requests, report, concurrency=settings.backfill_concurrent_requests, advance=advance
            )
    finally:
        report.retries = fetcher.retries
        await pool.close()
    return report


async def _universe(settings: Settings) -> list[str]:
    try:
        return await asyncio.to_thread(resolve_symbols, settings)
    except UniverseError as error:
        raise FatalError(str(error)) from None


def backfill_command(
    make_source: Callable[[Settings], BarSource], options: BackfillOptions, console: Console | None = None
) -> int:
    """Load settings, run one backfill with a progress bar, print the summary; returns the exit code."""
    settings = load_settings()
    setup_logging(settings.log_level)
    console = console or Console()
    source = make_source(settings)  # missing keys stop here, before any server starts
    with infrastructure(settings) as ready:
        try:
            report = asyncio.run(backfill(ready, source, options, console=console))
        except FatalError as error:
            print(f"backfill stopped: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("backfill interrupted: what was stored is kept; run it again to resume", file=sys.stderr)
            return 130
    print_report(report, console)
    return 1 if report.failed else 0
