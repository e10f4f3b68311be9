"""The operator surface under load: the pipeline's rate with ten WebSocket clients on every tick, and
the dashboard's first chart paint over a year of stored 1-minute bars (headless chromium).

Both use the bench servers; the dashboard figure needs the built page (``make ui``), Debian's
chromium and Playwright (a development dependency) and is n/a, saying why, without them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import websockets

from tradebot.bench.e2e import FeedRun, publish_rate, start_feed, start_pipeline, time_to_store
from tradebot.bench.pipeline import TableCounter, wait_for
from tradebot.bench.processes import BENCH_SYMBOLS, WorkerPool
from tradebot.bench.report import Figure
from tradebot.bench.target import BenchTarget
from tradebot.common.bus import Bus
from tradebot.common.models import Bar
from tradebot.storage.writer import write_events
from tradebot.ui.dashboard import STATIC

CLIENTS = 10
YEAR_OF_MINUTES = 98_280  # 252 sessions x 390 minutes
PAINTS = 5
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


class _Client:
    """One WebSocket client on every tick; counts what it received."""

    def __init__(self) -> None:
        self.received = 0
        self.dropped = False

    async def run(self, url: str, subscribed: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            async with websockets.connect(url, max_queue=None) as ws:
                await ws.send(json.dumps({"action": "subscribe", "channels": ["ticks"], "symbols": ["*"]}))
                await ws.recv()
                subscribed.set()
                while not stop.is_set():
                    try:
                        await asyncio.wait_for(ws.recv(), 0.5)
                        self.received += 1
                    except TimeoutError:
                        continue
        except websockets.ConnectionClosed:
            self.dropped = True


async def _api_answers(url: str) -> bool:
    try:
        async with websockets.connect(url, open_timeout=1):
            return True
    except (OSError, websockets.InvalidHandshake, TimeoutError):
        return False


async def measure_fanout(target: BenchTarget, workers: WorkerPool, run: FeedRun) -> list[Figure]:
    """Ticks stored/s with ten WebSocket clients subscribed to every tick (compare with e2e)."""
    bus = Bus.from_settings(target.bench_settings)
    clients = [_Client() for _ in range(CLIENTS)]
    stop = asyncio.Event()
    try:
        env = await start_pipeline(target, bus, workers, api=True)
        url = f"ws://127.0.0.1:{env['API_PORT']}/ws"
        await wait_for(lambda: _api_answers(url), 60, "the API's WebSocket")
        ready = [asyncio.Event() for _ in clients]
        tasks = [asyncio.create_task(c.run(url, r, stop)) for c, r in zip(clients, ready, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 30)
        async with TableCounter(target.database_url) as counter:
            start_feed(workers, env, run)
            first, last = await time_to_store(counter, run.ticks, 600)
            published, _ = await publish_rate(bus, target.settings.tick_partitions)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        workers.stop_all()
        await bus.close()
    seconds = max(last - first, 0.1)
    per_client = statistics.median(c.received for c in clients) / seconds
    method = (
        f"as 'ticks stored/s, every worker running' ({run.label}, {run.ticks:,} ticks, {BENCH_SYMBOLS} symbols), "
        f"with {CLIENTS} WebSocket clients in the bench process subscribed to every tick"
    )
    detail = {"dropped_clients": sum(c.dropped for c in clients), "published": published}
    return [
        Figure("operator", f"ticks stored/s with {CLIENTS} WebSocket clients", run.ticks / seconds, "ticks/s", method),
        Figure(
            "operator",
            "WebSocket ticks delivered/s per client (median)",
            per_client,
            "msgs/s",
            "messages each client received over the same span; clients that fell behind were dropped",
            detail,
        ),
    ]


async def _store_year(database_url: str) -> None:
    start = datetime(2025, 1, 2, 14, 30, tzinfo=UTC)
    bars = []
    price = 100.0
    for i in range(YEAR_OF_MINUTES):
        moment = start + timedelta(days=i // 390, minutes=i % 390)
        price = max(1.0, price + ((i * 7919) % 11 - 5) * 0.01)
        bars.append(
            Bar(
                id=Bar.bar_id("bench", "AAPL", "1m", moment),
                symbol="AAPL",
                timestamp=moment,
                timeframe="1m",
                open=price,
                high=price + 0.05,
                low=price - 0.05,
                close=price,
                volume=1000,
                trade_count=10,
                vwap=price,
                source="bench",
                version=0,
            )
        )
    conn = await asyncpg.connect(database_url)
    try:
        await write_events(conn, bars)
    finally:
        await conn.close()


async def measure_first_paint(target: BenchTarget, workers: WorkerPool) -> list[Figure]:
    """Milliseconds from navigation to the chart drawn, over a year of stored 1-minute bars."""
    name = f"dashboard first chart paint, {YEAR_OF_MINUTES:,} stored 1m bars"
    missing = _missing_for_browser()
    if missing:
        return [Figure("operator", name, None, "ms", f"not measured: {missing}")]
    from playwright.async_api import async_playwright  # development dependency

    bus = Bus.from_settings(target.bench_settings)
    try:
        env = await start_pipeline(target, bus, workers, api=True)
        await _store_year(target.database_url)
        site = f"http://127.0.0.1:{env['API_PORT']}"
        await wait_for(lambda: _api_answers(site.replace("http", "ws") + "/ws"), 60, "the API")
        paints = []
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(PAINTS):
                page = await browser.new_page()
                await page.goto(f"{site}/?symbol=AAPL&timeframe=1m")
                await page.wait_for_function("document.querySelector('#chart').dataset.bars === '1000'")
                paints.append(await page.evaluate("performance.now()"))
                await page.close()
            await browser.close()
    finally:
        workers.stop_all()
        await bus.close()
    method = (
        f"headless chromium loads /?symbol=AAPL&timeframe=1m over {YEAR_OF_MINUTES:,} stored 1m bars; "
        "performance.now() when the chart holds its 1,000 bars (navigation start = 0); median of "
        f"{PAINTS} page loads"
    )
    return [Figure("operator", name, statistics.median(paints), "ms", method, {"paints_ms": paints})]


def _missing_for_browser() -> str | None:
    if not (STATIC / "index.html").is_file():
        return "the dashboard is not built (make ui)"
    if not shutil.which(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (requirements-dev.txt)"
    return None


async def measure_ui(target: BenchTarget, workers: WorkerPool, run: FeedRun) -> list[Figure]:
    """Both operator-surface figures."""
    began = time.monotonic()
    figures = await measure_fanout(target, workers, run)
    figures += await measure_first_paint(target, workers)
    figures[0].detail["section_seconds"] = round(time.monotonic() - began, 1)
    return figures
