"""The backfill against the Alpaca and Polygon REST emulators, with the official clients.

Pagination is followed, 429/5xx are retried (honouring Retry-After), a request the server never
answers times out and is retried, an interrupted run resumes from what is stored and a re-run
writes the same rows, nothing twice; the CLI shows progress and a summary. Planning and retry
timing are unit-tested.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.emulators import AlpacaRestEmulator, BarDataset, PolygonRestEmulator
from tests.feed_helpers import KEY, SECRET, with_keys
from tests.helpers import wait_until
from tradebot.backfill.cli import app
from tradebot.backfill.progress import Request, missing_ranges, plan_requests
from tradebot.backfill.runner import BackfillOptions, backfill
from tradebot.common.config import Settings
from tradebot.common.models import Bar
from tradebot.providers.alpaca import AlpacaBars
from tradebot.providers.base import FatalError
from tradebot.providers.polygon import PolygonBars
from tradebot.providers.rest import RequestPacer, RetryPolicy, retry_after_seconds

SYMBOLS = ("AAPL", "MSFT", "NVDA")
NOW = datetime(2024, 3, 9, tzinfo=UTC)  # Saturday: the week of 4-8 March is complete
WEEK = BarDataset.generate(SYMBOLS, datetime(2024, 3, 4, tzinfo=UTC), NOW, timeframes=("1Min", "1Hour", "1Day"))
OPTIONS = BackfillOptions(days=5, minute_days=5, symbols=SYMBOLS)
FAST = RetryPolicy(base_s=0.01, cap_s=0.05)
TIMEFRAMES = {"1m": "1Min", "1h": "1Hour", "1d": "1Day"}
Row = tuple


def expected_rows(dataset: BarDataset, symbols: Sequence[str], end: datetime = NOW) -> set[Row]:
    """Every bar the window [NOW - 5 days, end) should store, as table rows."""
    start = NOW - timedelta(days=5)
    return {
        (
            symbol,
            ours,
            bar.timestamp,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.trade_count,
            bar.effective_vwap,
        )
        for ours, theirs in TIMEFRAMES.items()
        for symbol in symbols
        for bar in dataset.bars(symbol, theirs, start, end)
        if bar.timestamp < end
    }


async def stored_rows(dsn: str, source: str) -> list[Row]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT symbol, timeframe, ts, open, high, low, close, volume, trade_count, vwap "
            "FROM bars WHERE source = $1",
            source,
        )
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


# ----- planning and retry timing -----------------------------------------------------------------------


def test_missing_ranges_resume_after_the_last_stored_bar_and_fill_the_head() -> None:
    start, end = NOW - timedelta(days=5), NOW
    assert missing_ranges(start, end, None) == [(start, end)]
    last = NOW - timedelta(days=1)
    assert missing_ranges(start, end, (start, last)) == [(last, end)]
    first = NOW - timedelta(days=3)
    assert missing_ranges(start, end, (first, last)) == [(start, first), (last, end)]


def test_requests_batch_symbols_that_share_a_range() -> None:
    stored = {("NVDA", "1d"): (NOW - timedelta(days=5), NOW - timedelta(days=1))}
    requests = plan_requests(["AAPL", "MSFT", "NVDA"], {"1d": timedelta(days=5)}, NOW, stored, batch_size=1)
    assert requests == [
        Request("1d", ("AAPL",), NOW - timedelta(days=5), NOW),
        Request("1d", ("MSFT",), NOW - timedelta(days=5), NOW),
        Request("1d", ("NVDA",), NOW - timedelta(days=1), NOW),
    ]
    batched = plan_requests(["AAPL", "MSFT", "NVDA"], {"1d": timedelta(days=5)}, NOW, {}, batch_size=2)
    assert [request.symbols for request in batched] == [("AAPL", "MSFT"), ("NVDA",)]


def test_the_providers_word_decides_the_wait_else_jittered_backoff() -> None:
    assert retry_after_seconds({"Retry-After": "7"}, now=0) == 7
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 1970 00:00:30 GMT"}, now=10) == 20
    assert retry_after_seconds({"X-RateLimit-Reset": "130"}, now=100) == 30
    assert retry_after_seconds({}, now=0) is None
    policy = RetryPolicy(base_s=1, cap_s=8)
    assert policy.delay_s(1, retry_after_s=3) == 3
    assert all(0.5 <= policy.delay_s(1, None) <= 1 and 4 <= policy.delay_s(10, None) <= 8 for _ in range(100))


async def test_requests_start_at_least_rate_limit_delay_apart() -> None:
    now, pauses = [100.0], []

    async def sleep(seconds: float) -> None:  # a clock that moves only when slept on
        pauses.append(seconds)
        now[0] += seconds

    pacer = RequestPacer(0.25, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await pacer.wait()
    now[0] += 1.0  # a slow request: the next one need not wait
    await pacer.wait()
    assert pauses == [0.25, 0.25]


def test_windows_follow_the_settings_unless_overridden(settings: Settings) -> None:
    windows = BackfillOptions().windows(settings)
    assert windows == {"1d": timedelta(days=90), "1h": timedelta(days=5), "1m": timedelta(days=5)}
    assert BackfillOptions(timeframes=("1d", "1m"), days=30, minute_days=0).windows(settings) == {
        "1d": timedelta(days=30)
    }


# ----- Alpaca --------------------------------------------------------------------------------------------


async def test_alpaca_backfill_follows_pagination_and_stores_every_bar(settings: Settings, clean_database: str) -> None:
    with AlpacaRestEmulator(WEEK, page_size=1000) as rest:
        source = AlpacaBars(with_keys(settings, alpaca_data_url=rest.url))
        assert source.client._retry == 0  # no blocking 3 s sleeps inside alpaca-py
        report = await backfill(
            with_keys(settings, alpaca_data_url=rest.url), source, OPTIONS, now=NOW, console=quiet()
        )
        pages = [r for r in rest.requests_to("/v2/stocks/bars") if "page_token" in r.query]
    assert len(pages) >= 5  # 5,850 minute bars in pages of 1,000
    assert report.by_status() == {"done": list(SYMBOLS), "skipped": [], "failed": []}
    rows = await stored_rows(clean_database, "alpaca")
    assert len(rows) == len(set(rows))
    assert set(rows) == expected_rows(WEEK, SYMBOLS)


async def test_429_and_503_are_retried_with_backoff_and_retry_after(settings: Settings, clean_database: str) -> None:
    with AlpacaRestEmulator(WEEK) as rest:
        rest.fail_next(429, count=2, path_prefix="/v2/stocks/bars", headers={"Retry-After": "0"})
        rest.fail_next(503, count=1, path_prefix="/v2/stocks/bars")
        feed_settings = with_keys(settings, alpaca_data_url=rest.url)
        report = await backfill(
            feed_settings, AlpacaBars(feed_settings), OPTIONS, now=NOW, console=quiet(), policy=FAST
        )
        statuses = [r.status for r in rest.requests_to("/v2/stocks/bars")]
    assert statuses[:3] == [429, 429, 503]
    assert set(statuses[3:]) == {200}
    assert report.retries == 3
    assert not report.failed
    assert set(await stored_rows(clean_database, "alpaca")) == expected_rows(WEEK, SYMBOLS)


async def test_persistent_5xx_fails_those_symbols_with_the_reason_and_the_rest_continue(
    settings: Settings, clean_database: str
) -> None:
    with AlpacaRestEmulator(WEEK) as rest:
        feed_settings = with_keys(
            settings, alpaca_data_url=rest.url, backfill_batch_size=1, backfill_concurrent_requests=1
        )
        rest.fail_next(500, count=FAST.attempts, path_prefix="/v2/stocks/bars")  # every attempt of the first
        report = await backfill(
            feed_settings, AlpacaBars(feed_settings), OPTIONS, now=NOW, console=quiet(), policy=FAST
        )
    assert report.by_status()["failed"] == ["AAPL"]
    assert report.symbols["AAPL"].reason == "1d: HTTP 500 (gave up after 6 attempts)"
    assert report.by_status()["done"] == ["MSFT", "NVDA"]


async def test_rejected_keys_stop_the_whole_backfill_with_one_line(settings: Settings, clean_database: str) -> None:
    with AlpacaRestEmulator(WEEK, secret="another-secret") as rest:
        feed_settings = with_keys(settings, alpaca_data_url=rest.url)
        with pytest.raises(FatalError, match=r"^Alpaca rejected ALPACA_KEY/ALPACA_SECRET \(HTTP 403\): set valid"):
            await backfill(feed_settings, AlpacaBars(feed_settings), OPTIONS, now=NOW, console=quiet())


class StallingSource:
    """Delegates to a real source, but stalls the Nth request until released (an interruption)."""

    def __init__(self, inner: AlpacaBars, stall_at: int):
        self.inner, self.stall_at, self.calls = inner, stall_at, 0
        self.name, self.batch_size = inner.name, inner.batch_size
        self.stalled, self.release = threading.Event(), threading.Event()

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> list[Bar]:
        self.calls += 1
        if self.calls == self.stall_at:
            self.stalled.set()
            self.release.wait(10)
            raise RuntimeError("interrupted")
        return self.inner.fetch(symbols, timeframe, start, end)  # type: ignore[arg-type]


async def test_interrupted_backfill_resumes_and_a_rerun_writes_the_same_rows_once(
    settings: Settings, clean_database: str
) -> None:
    with AlpacaRestEmulator(WEEK, page_size=2000) as rest:
        feed_settings = with_keys(
            settings, alpaca_data_url=rest.url, backfill_batch_size=1, backfill_concurrent_requests=1
        )
        stalling = StallingSource(AlpacaBars(feed_settings), stall_at=5)  # 1d ×3 and 1h AAPL are stored
        interrupted = asyncio.create_task(backfill(feed_settings, stalling, OPTIONS, now=NOW, console=quiet()))
        await wait_until(stalling.stalled.is_set, what="the fifth request")
        interrupted.cancel()
        stalling.release.set()
        with pytest.raises(asyncio.CancelledError):
            await interrupted
        partial = await stored_rows(clean_database, "alpaca")
        assert {row[1] for row in partial} == {"1d", "1h"}
        assert {row[0] for row in partial if row[1] == "1h"} == {"AAPL"}

        before = len(rest.requests)
        resumed = await backfill(feed_settings, AlpacaBars(feed_settings), OPTIONS, now=NOW, console=quiet())
        resumed_starts = {
            (r.query["symbols"], r.query["timeframe"]): r.query["start"]
            for r in rest.requests[before:]
            if "page_token" not in r.query
        }
        rows = await stored_rows(clean_database, "alpaca")
        assert len(rows) == len(set(rows))
        assert set(rows) == expected_rows(WEEK, SYMBOLS)

        again = await backfill(feed_settings, AlpacaBars(feed_settings), OPTIONS, now=NOW, console=quiet())
    last_daily = max(bar.timestamp for bar in WEEK.bars("AAPL", "1Day"))
    assert datetime.fromisoformat(resumed_starts[("AAPL", "1Day")]) == last_daily  # resumed, not restarted
    assert resumed.by_status()["done"] == list(SYMBOLS)  # each still had bars to store
    assert again.by_status() == {"done": [], "skipped": list(SYMBOLS), "failed": []}
    assert again.written == 0
    assert again.symbols["AAPL"].reason == "already stored"
    assert sorted(await stored_rows(clean_database, "alpaca")) == sorted(rows)


# ----- Polygon -------------------------------------------------------------------------------------------


async def test_polygon_backfill_follows_next_url_and_retries_429(settings: Settings, clean_database: str) -> None:
    with PolygonRestEmulator(WEEK, page_size=1000) as rest:
        rest.fail_next(429, count=2, path_prefix="/v2/aggs", headers={"Retry-After": "0"})
        feed_settings = with_keys(settings, polygon_rest_url=rest.url)
        report = await backfill(
            feed_settings, PolygonBars(feed_settings), OPTIONS, now=NOW, console=quiet(), policy=FAST
        )
        requests = rest.requests_to("/v2/aggs")
    assert [r.status for r in requests[:2]] == [429, 429]
    assert report.retries == 2
    assert sum("cursor" in r.query for r in requests) >= 3  # 1,950 minute bars per symbol, pages of 1,000
    assert report.by_status()["done"] == list(SYMBOLS)
    rows = await stored_rows(clean_database, "polygon")
    assert len(rows) == len(set(rows))
    assert set(rows) == expected_rows(WEEK, SYMBOLS)


async def test_polygon_rejected_key_stops_the_backfill(settings: Settings, clean_database: str) -> None:
    with PolygonRestEmulator(WEEK, api_key="another-key") as rest:
        feed_settings = with_keys(settings, polygon_rest_url=rest.url)
        with pytest.raises(FatalError, match=r"^Polygon rejected POLYGON_API_KEY .*HTTP 401"):
            await backfill(feed_settings, PolygonBars(feed_settings), OPTIONS, now=NOW, console=quiet())


# ----- both providers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["alpaca", "polygon"])
async def test_a_request_the_server_never_answers_times_out_and_is_retried(
    settings: Settings, clean_database: str, provider: str
) -> None:
    emulator, path = (
        (AlpacaRestEmulator, "/v2/stocks/bars") if provider == "alpaca" else (PolygonRestEmulator, "/v2/aggs")
    )
    daily = BackfillOptions(timeframes=("1d",), days=5, symbols=SYMBOLS)
    with emulator(WEEK) as rest:
        rest.stall_next(path_prefix=path)  # accepted, then silence: no status, no body
        feed_settings = with_keys(settings, alpaca_data_url=rest.url, polygon_rest_url=rest.url)
        # 3 s: past an ordinary answer on a loaded machine, so only the stalled one is retried
        source = (AlpacaBars if provider == "alpaca" else PolygonBars)(feed_settings, timeout_s=3.0)
        report = await backfill(feed_settings, source, daily, now=NOW, console=quiet(), policy=FAST)
        assert rest.stalls == 1
    assert report.retries == 1
    assert report.by_status()["done"] == list(SYMBOLS)
    rows = await stored_rows(clean_database, provider)
    assert len(rows) == len(set(rows))
    assert set(rows) == {row for row in expected_rows(WEEK, SYMBOLS) if row[1] == "1d"}


# ----- the commands --------------------------------------------------------------------------------------


def recent_dataset() -> BarDataset:
    """Ten days up to now, so the commands' real clock finds data."""
    now = datetime.now(UTC)
    return BarDataset.generate(["AAPL", "MSFT"], now - timedelta(days=10), now, timeframes=("1Min", "1Day"))


def command_environment(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": settings.redis_url or "",
        "DATABASE_URL": settings.database_url or "",
        "SYMBOL_MODE": "custom",
        "SYMBOLS": "AAPL,MSFT",
        "ALPACA_KEY": KEY,
        "ALPACA_SECRET": SECRET,
        "POLYGON_API_KEY": KEY,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def test_cli_shows_progress_and_a_summary(
    settings: Settings, clean_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PolygonRestEmulator(recent_dataset()) as rest:
        for name, value in command_environment(settings, POLYGON_REST_URL=rest.url).items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(app, ["polygon", "--days", "10", "--timeframes", "1d,1h"])
    assert result.exit_code == 0, result.output
    assert "polygon backfill" in result.output
    assert "4/4" in result.output
    assert "ETA" in result.output
    assert "done" in result.output
    assert "AAPL, MSFT" in result.output


def test_module_entry_point_runs_the_alpaca_backfill(settings: Settings, clean_database: str) -> None:
    with AlpacaRestEmulator(recent_dataset()) as rest:
        env = {**os.environ, **command_environment(settings, ALPACA_DATA_URL=rest.url, BACKFILL_MINUTE_DAYS="1")}
        done = subprocess.run(
            [sys.executable, "-m", "tradebot.backfill.alpaca_historical"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "alpaca backfill" in done.stdout
    assert "done" in done.stdout
    assert "skipped" in done.stdout
