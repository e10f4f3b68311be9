"""The operator surface under load: the pipeline's rate with ten WebSocket clients on every tick, and
the dashboard's first chart paint over a year of stored 1-minute bars (headless chromium).

Both use the bench servers; the dashboard figure needs the built page (``make ui``), Debian's
chromium and Playwright (a development dependency) and is n/a, saying why, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil
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
FANOUT_RATE = 5_000  # ticks/s offered while the clients listen: the figure
FANOUT_TICKS = 100_000  # at most 20 s a run at that rate
CPU_SAMPLE_S = 0.1
YEAR_OF_MINUTES = 98_280  # 252 sessions x 390 minutes
PAINTS = 5
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


class _CpuWatch:
    """User + system CPU seconds of each role's processes, sampled every CPU_SAMPLE_S (psutil), so a
    process that ends during the run (the feed does, by itself) keeps what it used until its last
    sample. A server role counts its process and every child (PostgreSQL's backends come and go)."""

    def __init__(self, pids: dict[str, list[int]], servers: dict[str, int]) -> None:
        self.pids = {role: set(role_pids) for role, role_pids in pids.items()}
        self.servers = servers
        self.seen: dict[int, float] = {}
        self.start = self._sample()

    def _sample(self) -> dict[int, float]:
        for role, root in self.servers.items():
            with contextlib.suppress(psutil.Error):
                self.pids.setdefault(role, set()).update(
                    [root, *(child.pid for child in psutil.Process(root).children(recursive=True))]
                )
        for pid in [p for role_pids in self.pids.values() for p in role_pids]:
            with contextlib.suppress(psutil.Error):  # it has exited: its last sample stands
                times = psutil.Process(pid).cpu_times()
                self.seen[pid] = times.user + times.system
        return dict(self.seen)

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CPU_SAMPLE_S)
            self._sample()

    def used(self) -> dict[str, float]:
        """CPU seconds per role since the watch began."""
        return {
            role: sum(self.seen.get(pid, 0.0) - self.start.get(pid, 0.0) for pid in role_pids)
            for role, role_pids in self.pids.items()
        }


def _listening_pid(url: str) -> int | None:
    """The process listening on ``url``'s port here (the bench servers are on loopback)."""
    port = urlsplit(url).port
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            pid: int | None = connection.pid
            return pid
    return None


async def _api_answers(url: str) -> bool:
    try:
        async with websockets.connect(url, open_timeout=1):
            return True
    except (OSError, websockets.InvalidHandshake, TimeoutError):
        return False


@dataclass
class _FanoutRun:
    """One pipeline run: ticks stored/s, CPU seconds per role, and what each WebSocket client received."""

    rate: float
    seconds: float
    cpu: dict[str, float]
    clients: list[dict[str, Any]]


async def _start_clients(url: str, clients: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tradebot.bench.ws_clients",
        url,
        "--clients",
        str(clients),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"the WebSocket clients did not start: {line!r}")
    return process


async def _stop_clients(process: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    # closing stdin stops them; they print what each received
    reports, _ = await asyncio.wait_for(process.communicate(b""), 30)
    received: list[dict[str, Any]] = json.loads(reports.decode().strip().splitlines()[-1])
    return received


async def _fanout_run(target: BenchTarget, workers: WorkerPool, run: FeedRun, clients: int) -> _FanoutRun:
    """One pipeline run with the API up and ``clients`` WebSocket clients (in a process of their
    own) subscribed to every tick."""
    bus = Bus.from_settings(target.bench_settings)
    process = None
    try:
        env = await start_pipeline(target, bus, workers, api=True)
        url = f"ws://127.0.0.1:{env['API_PORT']}/ws"
        await wait_for(lambda: _api_answers(url), 60, "the API's WebSocket")
        if clients:
            process = await _start_clients(url, clients)
        async with TableCounter(target.database_url) as counter:
            start_feed(workers, env, run)
            pids: dict[str, list[int]] = {}
            for role, worker in workers.running:
                pids.setdefault(role, []).append(worker.pid)
            if process is not None:
                pids["ws_clients"] = [process.pid]
            servers = {"redis": _listening_pid(target.redis_url), "postgres": _listening_pid(target.database_url)}
            cpu = _CpuWatch(pids, {role: pid for role, pid in servers.items() if pid is not None})
            stop = asyncio.Event()
            watching = asyncio.create_task(cpu.watch(stop))
            first, last = await time_to_store(counter, run.ticks, 600)
            stop.set()
            await watching
        received = await _stop_clients(process) if process is not None else []
        process = None
    finally:
        if process is not None:
            process.kill()
            await process.wait()
        workers.stop_all()
        await bus.close()
    seconds = max(last - first, 0.1)
    return _FanoutRun(run.ticks / seconds, seconds, cpu.used(), received)


def _mean_cpu(runs: list[_FanoutRun], role: str) -> float:
    return statistics.mean(r.cpu.get(role, 0.0) for r in runs)


async def measure_fanout(target: BenchTarget, workers: WorkerPool, run: FeedRun) -> list[Figure]:
    """Ticks stored/s with ten WebSocket clients subscribed to every tick, against the same pipeline
    without them in the same bench run, and the CPU the fan-out takes."""
    # Interleaved (without, with, with, without), so drift of a shared machine falls on both sides alike.
    without: list[_FanoutRun] = []
    with_clients: list[_FanoutRun] = []
    for clients in (0, CLIENTS, CLIENTS, 0):
        (with_clients if clients else without).append(await _fanout_run(target, workers, run, clients))
    baseline = statistics.mean(r.rate for r in without)
    rate = statistics.mean(r.rate for r in with_clients)
    pipeline_roles = ("market_data", "strategy", "execution", "storage", "redis", "postgres")
    pipeline_cpu = sum(_mean_cpu(without, role) for role in pipeline_roles)
    fanout_extra = sum(_mean_cpu(with_clients, role) - _mean_cpu(without, role) for role in ("api", "redis"))
    received = [c for r in with_clients for c in r.clients]
    seconds = statistics.mean(r.seconds for r in with_clients)
    method = (
        f"as 'ticks stored/s, every worker running' ({run.label}, {run.ticks:,} ticks, {BENCH_SYMBOLS} symbols), "
        f"the API up; with {CLIENTS} WebSocket clients subscribed to every tick, in a process of their own "
        "(one process, 10 connections, counting events without parsing them) on the same cores; "
        "mean of 2 runs, interleaved without-with-with-without"
    )
    cpu_detail = {
        "cpu_s_per_run_without": {role: round(_mean_cpu(without, role), 2) for role in (*pipeline_roles, "api")},
        "cpu_s_per_run_with": {
            role: round(_mean_cpu(with_clients, role), 2) for role in (*pipeline_roles, "api", "ws_clients")
        },
    }
    return [
        Figure("operator", f"ticks stored/s with {CLIENTS} WebSocket clients", rate, "ticks/s", method),
        Figure("operator", "ticks stored/s without WebSocket clients (same-run baseline)", baseline, "ticks/s", method),
        Figure(
            "operator",
            f"WebSocket fan-out cost to the pipeline ({CLIENTS} clients)",
            (1 - rate / baseline) * 100,
            "%",
            "1 - (ticks stored/s with the clients) / (without them), each the mean of two runs in this run, "
            "interleaved without-with-with-without; includes the clients' own CPU on the same cores; "
            "a pipeline with room to spare at the offered rate stores it either way (then the CPU share "
            "below is the cost); the goal is under 10 % (negative: within noise)",
            {"with_clients": [r.rate for r in with_clients], "without": [r.rate for r in without]},
        ),
        Figure(
            "operator",
            f"WebSocket fan-out CPU, share of the pipeline's ({CLIENTS} clients)",
            fanout_extra / max(pipeline_cpu, 0.001) * 100,
            "%",
            "CPU seconds the clients add to the API process and the Redis server (with minus without), over "
            "the CPU seconds the pipeline takes without them: market_data, strategy, execution, storage, "
            "Redis and PostgreSQL with its backends (psutil, sampled every 0.1 s from the feed's start to "
            "the last tick stored; means of the same runs). On a machine the pipeline saturates, this is "
            "the share of its end-to-end rate the fan-out costs; the clients' own CPU is not in it",
            cpu_detail,
        ),
        Figure(
            "operator",
            "WebSocket events delivered/s per client (median)",
            statistics.median(c["events"] / seconds for c in received),
            "msgs/s",
            "events each client received over the pipeline's span (a tick is a 'ticks' event); clients that "
            "fell behind were dropped",
            {
                "dropped_clients": sum(bool(c["dropped"]) for c in received),
                "frames_per_s_per_client": round(statistics.median(c["frames"] / seconds for c in received), 1),
                "events_per_client": [c["events"] for c in received],
                "close_codes": sorted({c["close_code"] for c in received if c["dropped"]}, key=str),
            },
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
    figures = await measure_fanout(target, workers, FeedRun(FANOUT_RATE, min(run.ticks, FANOUT_TICKS)))
    figures += await measure_first_paint(target, workers)
    figures[0].detail["section_seconds"] = round(time.monotonic() - began, 1)
    return figures
