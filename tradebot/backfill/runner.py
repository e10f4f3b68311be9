"""The backfill engine: concurrency, progress, resuming, over any provider's ``BarSource``.

Requests go through the providers' shared ``Fetcher`` (threads, pacing, timeouts, retries; see
providers/rest.py), at most BACKFILL_CONCURRENT_REQUESTS at once, so a stopping process never
waits on a thread stuck in a read. Bars are written per symbol with COPY (idempotent), so an
interrupted run keeps what it wrote and the next run resumes from it (see progress.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
from tradebot.backfill.report import BackfillReport
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.db import TRANSIENT_DB_ERRORS, create_pool
from tradebot.common.models import Bar, Timeframe
from tradebot.providers.base import BarSource, FatalError
from tradebot.providers.rest import Fetcher, RequestPacer, RetryPolicy
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions
from tradebot.storage.writer import write_bars
from tradebot.universe import UniverseError, resolve_symbols

log = logging.getLogger(__name__)

DEFAULT_TIMEFRAMES: tuple[Timeframe, ...] = ("1d", "1h", "1m")
INTRADAY: frozenset[str] = frozenset({"1m", "5m", "15m", "1h"})


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
    settings: ReadySettings,
    source: BarSource,
    options: BackfillOptions,
    *,
    now: datetime | None = None,
    console: Console | None = None,
    policy: RetryPolicy | None = None,
) -> BackfillReport:
    """Fetch what is missing of each window for the universe (or ``options.symbols``) and store it."""
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
    fetcher = Fetcher(source, policy or RetryPolicy(), RequestPacer(settings.rate_limit_delay))
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
