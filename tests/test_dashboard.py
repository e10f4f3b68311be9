"""The dashboard in a real headless browser (Playwright driving Debian's chromium): it loads, the
chart shows stored bars, a new tick moves the last candle, a fill appears as a marker.

The page is built from frontend/ (``make ui``); chromium is installed with apt-get when missing and
this runs as root, else the tests skip with the reason. A screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import uvicorn

from tests.helpers import wait_until
from tests.storage_fixtures import migrated_database, session_ticks
from tradebot.api.history_service import create_app
from tradebot.backtest.store import save_run
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.db import with_database
from tradebot.common.models import OrderEvent, Tick
from tradebot.common.streams import ORDER_EVENTS, STORAGE_GROUP, STRATEGY_ROLE, gap_key, tick_stream_for
from tradebot.storage.writer import write_events
from tradebot.ui.dashboard import STATIC
from tradebot.ui.live import Hub

playwright_api = pytest.importorskip("playwright.async_api")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Flags the machine notes ask for: no sandbox as root, no background traffic to a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AAPL = session_ticks("AAPL", seed=1)
TOKEN = "dashboard-test-token"


def ensure_chromium() -> str:
    """Debian's chromium, installed when missing (as root with apt-get), or a skip saying why."""
    if shutil.which(CHROMIUM):
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True)
    return CHROMIUM


def ensure_page() -> None:
    """The built dashboard, building it with npm when it is missing."""
    if (STATIC / "index.html").is_file():
        return
    if not shutil.which("npm"):
        pytest.skip("the dashboard is not built and npm is missing (make ui)")
    subprocess.run(["make", "ui"], cwd=ROOT, check=True, capture_output=True)
    if not (STATIC / "index.html").is_file():
        pytest.fail("make ui did not build tradebot/ui/static/index.html")


@pytest.fixture(scope="module")
def chromium() -> str:
    ensure_page()
    return ensure_chromium()


@pytest.fixture
async def site(database_url: str, redis_url: str, bus: Bus) -> AsyncIterator[tuple[str, Hub]]:
    """The API (with the dashboard) on a free port over a database holding AAPL's ticks."""
    dsn = await migrated_database(database_url, "dashboard_test")
    conn = await asyncpg.connect(dsn)
    try:
        await write_events(conn, AAPL)
    finally:
        await conn.close()
    app = create_app(Settings(_env_file=None, database_url=dsn, redis_url=redis_url, api_token=TOKEN))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    serving = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(serving.serve(sockets=[listener]))
    await wait_until(lambda: serving.started, what="uvicorn to start")
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", app.state.hub
    serving.should_exit = True
    await task


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[object]:
    # expect() waits for what the page should show; its default 5 s bounds the wait too tightly for
    # chromium on a loaded 2-core machine (it is a hang bound only: a page that never shows it fails).
    playwright_api.expect.set_options(timeout=30_000)
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield await browser.new_page(viewport={"width": 1400, "height": 900})
        await browser.close()


async def test_the_dashboard_shows_live_candles_and_fills(site: tuple[str, Hub], page: object, bus: Bus) -> None:
    url, hub = site
    await page.goto(f"{url}/?symbol=AAPL&timeframe=1m")  # type: ignore[attr-defined]
    chart = page.locator("#chart")  # type: ignore[attr-defined]
    await playwright_api.expect(chart).to_have_attribute("data-bars", "1000")
    await playwright_api.expect(page.locator("#live")).to_have_text("live")  # type: ignore[attr-defined]
    # the hub reads from the streams' tails once its first client subscribes: wait for that
    await wait_until(lambda: hub.following and hub.subscribers, what="the page's live subscription")
    # A tick after the last stored bar opens a new candle with its price.
    moment = datetime.now(UTC).replace(microsecond=0)
    tick = Tick.create("AAPL", 123.45, 10, moment, source="test", trade_id="live-1")
    await bus.publish([(tick_stream_for("AAPL", 8), tick)])
    await playwright_api.expect(chart).to_have_attribute("data-last-close", "123.45")
    assert await chart.get_attribute("data-bars") == "1001"
    # A second tick in the same minute moves that candle.
    await bus.publish(
        [(tick_stream_for("AAPL", 8), tick.model_copy(update={"id": "test:AAPL:live-2", "price": 124.5}))]
    )
    await playwright_api.expect(chart).to_have_attribute("data-last-close", "124.5")
    # A fill appears as a marker on its candle.
    before = int(await chart.get_attribute("data-markers") or 0)
    fill = OrderEvent(
        id="ev-live",
        symbol="AAPL",
        timestamp=moment + timedelta(seconds=1),
        client_order_id="co-live",
        status="filled",
        side="buy",
        quantity=10,
        price=124.5,
    )
    await bus.publish([(ORDER_EVENTS, fill)])
    await playwright_api.expect(chart).to_have_attribute("data-markers", str(before + 1))
    await playwright_api.expect(page.locator("#fills tbody tr").first).to_contain_text("filled")  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"))  # type: ignore[attr-defined]


async def test_the_halt_button_halts_trading_with_the_token(site: tuple[str, Hub], page: object) -> None:
    url, _ = site
    await page.goto(f"{url}/?symbol=AAPL")  # type: ignore[attr-defined]
    state = page.locator("#risk-state")  # type: ignore[attr-defined]
    await playwright_api.expect(state).to_have_text("ACTIVE")
    await page.locator("button[data-action=halt]").click()  # type: ignore[attr-defined]
    result = page.locator("#control-result")  # type: ignore[attr-defined]
    await playwright_api.expect(result).to_contain_text("missing bearer token")  # none typed: refused, nothing changes
    await playwright_api.expect(result).not_to_contain_text("done")
    await page.fill("#token", "wrong")  # type: ignore[attr-defined]
    await page.locator("button[data-action=halt]").click()  # type: ignore[attr-defined]
    await playwright_api.expect(result).to_contain_text("wrong bearer token")
    await playwright_api.expect(state).to_have_text("ACTIVE")
    await page.fill("#token", TOKEN)  # type: ignore[attr-defined]
    await page.locator("button[data-action=halt]").click()  # type: ignore[attr-defined]
    await playwright_api.expect(result).to_have_text("halt: done")
    await playwright_api.expect(state).to_have_text("HALTED")
    await page.locator("button[data-action=resume]").click()  # type: ignore[attr-defined]
    await playwright_api.expect(state).to_have_text("ACTIVE")


async def test_the_streams_table_tells_pending_from_unread(site: tuple[str, Hub], page: object, bus: Bus) -> None:
    url, _ = site
    stream = tick_stream_for("MSFT", 8)
    moment = datetime.now(UTC).replace(microsecond=0)
    for n in range(3):  # three entries: storage reads one and does not ack it; strategy has no group yet
        await bus.publish([(stream, Tick.create("MSFT", 50.0 + n, 1, moment, source="test", trade_id=f"b{n}"))])
    await bus.redis.xgroup_create(stream, STORAGE_GROUP, id="0")
    await bus.redis.xreadgroup(STORAGE_GROUP, "reader-1", {stream: ">"}, count=1)
    await page.goto(f"{url}/?symbol=AAPL")  # type: ignore[attr-defined]
    table = page.locator("#streams")  # type: ignore[attr-defined]
    await playwright_api.expect(table.locator("thead")).to_have_text("streamgrouppendingunread")
    storage = table.locator("tbody tr", has_text=STORAGE_GROUP)
    await playwright_api.expect(storage.locator("td")).to_have_text([stream, STORAGE_GROUP, "1", "2"])
    strategy = table.locator("tbody tr", has_text=STRATEGY_ROLE)
    await playwright_api.expect(strategy.locator("td")).to_have_text([stream, STRATEGY_ROLE, "0", "3"])


async def test_the_latest_bars_paint_first_and_older_ones_load_when_scrolled_back(
    site: tuple[str, Hub], page: object
) -> None:
    url, _ = site
    stored = len({(t.timestamp.replace(second=0, microsecond=0)) for t in AAPL})  # 1-minute bars
    assert stored > 1000
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))  # type: ignore[attr-defined]
    await page.goto(f"{url}/?symbol=AAPL&timeframe=1m")  # type: ignore[attr-defined]
    chart = page.locator("#chart")  # type: ignore[attr-defined]
    await playwright_api.expect(chart).to_have_attribute("data-bars", "1000")  # the latest window only
    assert len([u for u in asked if "/ohlcv/" in u]) == 1  # index.html's early request, taken by the page
    box = await chart.bounding_box()
    y = box["y"] + box["height"] / 2
    mouse = page.mouse  # type: ignore[attr-defined]
    for _ in range(12):  # drag the chart rightwards: back in time, until the first bar comes near
        if await chart.get_attribute("data-bars") != "1000":
            break
        await mouse.move(box["x"] + 100, y)
        await mouse.down()
        await mouse.move(box["x"] + box["width"] - 100, y, steps=10)
        await mouse.up()
    await playwright_api.expect(chart).to_have_attribute("data-bars", str(stored))


def a_stored_run(run_id: str) -> tuple[dict, dict]:
    """A backtest report and its chart data as `tradebot backtest --store` saves them (120 samples, 2 trades)."""
    start = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    equity = [[(start + timedelta(minutes=n)).isoformat(), 100_000.0 + 10 * n] for n in range(120)]
    trades = [
        {"symbol": "AAPL", "quantity": q, "entry_time": equity[a][0], "exit_time": equity[b][0], "entry_price": 1.0,
         "exit_price": 2.0, "strategy": "sma_crossover", "fees": 0.0, "pnl": 10.0, "return_pct": 1.0}
        for q, a, b in ((10, 5, 30), (-5, 60, 90))
    ]  # fmt: skip
    run = {"id": run_id, "strategies": ["sma_crossover"], "symbols": ["AAPL"], "start": equity[0][0],
           "end": equity[-1][0], "source": "ticks"}  # fmt: skip
    report = {"run": run, "total_return": 0.0119, "sharpe": 1.5, "trades": 2, "final_equity": 101_190.0}
    return report, {"equity": equity, "trades": trades}


async def test_a_stored_backtest_run_opens_with_its_equity_curve_and_trades(
    site: tuple[str, Hub], page: object, database_url: str
) -> None:
    url, _ = site
    report, charts = a_stored_run("bt-dashboard")
    conn = await asyncpg.connect(with_database(database_url, "dashboard_test"))
    try:
        await save_run(conn, report, charts)
    finally:
        await conn.close()
    await page.goto(f"{url}/?symbol=AAPL")  # type: ignore[attr-defined]
    await page.locator("#backtests tbody tr", has_text="bt-dashboard").click()  # type: ignore[attr-defined]
    view = page.locator("#backtest-chart")  # type: ignore[attr-defined]
    await playwright_api.expect(view).to_have_attribute("data-points", "120")
    await playwright_api.expect(view).to_have_attribute("data-markers", "4")  # entry and exit of each trade
    await playwright_api.expect(view.locator("canvas").first).to_be_visible()
    stats = page.locator("#backtest-stats")  # type: ignore[attr-defined]
    await playwright_api.expect(stats).to_contain_text("1.19 %")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-backtest.png"), full_page=True)  # type: ignore[attr-defined]


async def test_recorded_gaps_show_in_the_health_panel_and_on_the_chart(
    site: tuple[str, Hub], page: object, bus: Bus
) -> None:
    url, _ = site
    first, last = AAPL[-60].timestamp, AAPL[-40].timestamp
    record = {"source": "alpaca", "symbols": ["AAPL", "MSFT"], "first": first.isoformat(), "last": last.isoformat(),
              "dropped": 1200, "repair": 1, "repaired": False}  # fmt: skip
    await bus.redis.set(gap_key("alpaca", first.isoformat()), json.dumps(record))
    await page.goto(f"{url}/?symbol=AAPL")  # type: ignore[attr-defined]
    row = page.locator("#gaps tbody tr")  # type: ignore[attr-defined]
    await playwright_api.expect(row).to_contain_text("AAPL, MSFT")
    await playwright_api.expect(row).to_contain_text("1200")
    await playwright_api.expect(row).to_contain_text("open")
    await playwright_api.expect(page.locator("#chart")).to_have_attribute("data-gaps", "1")  # type: ignore[attr-defined]
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-gaps.png"))  # type: ignore[attr-defined]
    await page.goto(f"{url}/?symbol=NVDA")  # type: ignore[attr-defined]
    await playwright_api.expect(page.locator("#gaps tbody tr")).to_contain_text("AAPL, MSFT")  # type: ignore[attr-defined]
    await playwright_api.expect(page.locator("#chart")).to_have_attribute("data-gaps", "0")  # type: ignore[attr-defined]


async def test_an_unbuilt_dashboard_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tradebot.ui import dashboard

    monkeypatch.setattr(dashboard, "STATIC", tmp_path)
    response = await dashboard.index()
    assert b"make ui" in response.body
