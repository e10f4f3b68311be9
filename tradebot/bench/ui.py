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

from tradebot.bench.e2e import FeedRun, start_feed, start_pipeline, time_to_store
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
        self.rate = 0.0  # messages/s over the pipeline's span
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


async def _stored_rate(target: BenchTarget, workers: WorkerPool, run: FeedRun, clients: list[_Client]) -> float:
    """Ticks stored/s of one pipeline run with the API up and ``clients`` subscribed to every tick."""
    bus = Bus.from_settings(target.bench_settings)
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
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        workers.stop_all()
        await bus.close()
    seconds = max(last - first, 0.1)
    for client in clients:
        client.rate = client.received / seconds
    return run.ticks / seconds


async def measure_fanout(target: BenchTarget, workers: WorkerPool, run: FeedRun) -> list[Figure]:
    """Ticks stored/s with ten WebSocket clients subscribed to every tick, against the same pipeline
    without them in the same run (the fan-out's cost as a percentage)."""
    # Interleaved (without, with, with, without), so drift of a shared machine falls on both sides alike.
    baselines, rates, clients = [], [], []
    for with_clients in (False, True, True, False):
        if with_clients:
            clients = [_Client() for _ in range(CLIENTS)]
            rates.append(await _stored_rate(target, workers, run, clients))
        else:
            baselines.append(await _stored_rate(target, workers, run, []))
    baseline, rate = statistics.mean(baselines), statistics.mean(rates)
    method = (
        f"as 'ticks stored/s, every worker running' ({run.label}, {run.ticks:,} ticks, {BENCH_SYMBOLS} symbols), "
        f"the API up; with {CLIENTS} WebSocket clients in the bench process subscribed to every tick; mean of 2 runs"
    )
    detail = {"dropped_clients": sum(c.dropped for c in clients)}
    return [
        Figure("operator", f"ticks stored/s with {CLIENTS} WebSocket clients", rate, "ticks/s", method),
        Figure("operator", "ticks stored/s without WebSocket clients (same-run baseline)", baseline, "ticks/s", method),
        Figure(
            "operator",
            f"WebSocket fan-out cost to the pipeline ({CLIENTS} clients)",
            (1 - rate / baseline) * 100,
            "%",
            "1 - (ticks stored/s with the clients) / (without them), each the mean of two runs in this run, "
            "interleaved without-with-with-without; the goal is under 10 % (negative: within noise)",
            {"with_clients": rates, "without": baselines},
        ),
        Figure(
            "operator",
            "WebSocket ticks delivered/s per client (median)",
            statistics.median(c.rate for c in clients),
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
        paints: list[dict[str, float]] = []
        async with async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(PAINTS):
                page = await browser.new_page()
                await page.add_init_script(FRAME_WATCH)
                await page.goto(f"{site}/?symbol=AAPL&timeframe=1m")
                await page.wait_for_function("window.tradebotPaint !== undefined")
                paints.append(await page.evaluate(TIMELINE))
                await page.close()
            await browser.close()
    finally:
        workers.stop_all()
        await bus.close()
    method = (
        f"headless chromium loads /?symbol=AAPL&timeframe=1m over {YEAR_OF_MINUTES:,} stored 1m bars (a new "
        "browser context each, so nothing cached); performance.now() in the first animation frame in which "
        "the chart holds its 1,000 latest bars (navigation start = 0); median of "
        f"{PAINTS} page loads. The detail's medians say where the time goes: the bars' response, the page's "
        "code run (bars handed over), the chart drawn"
    )
    where = {f"{key}_ms": round(statistics.median(p[key] for p in paints)) for key in paints[0] if key != "paint"}
    paint_ms = [round(p["paint"]) for p in paints]
    return [Figure("operator", name, statistics.median(paint_ms), "ms", method, {"paints_ms": paint_ms, **where})]


# The first frame the chart is drawn in, watched from inside the page: a check from outside would
# add a round trip to a page that is busy with its panels' requests by then.
FRAME_WATCH = """
(() => {
  const watch = () => {
    const chart = document.querySelector('#chart');
    if (chart && chart.dataset.bars === '1000') { window.tradebotPaint = performance.now(); return; }
    requestAnimationFrame(watch);
  };
  requestAnimationFrame(watch);
})();
"""
TIMELINE = """(() => {
  const bars = performance.getEntriesByType('resource').find((e) => e.name.includes('/ohlcv/'));
  const mark = (name) => performance.getEntriesByName(name)[0]?.startTime ?? -1;
  return { paint: window.tradebotPaint, bars_response: bars ? bars.responseEnd : -1,
           bars_received: mark('bars-received'), chart_drawn: mark('chart-drawn') };
})()"""


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
