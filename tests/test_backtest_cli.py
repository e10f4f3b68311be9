"""`tradebot backtest` over ticks stored in PostgreSQL: reports, files, stored runs, and bad input."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from tests.backtest_helpers import crossover_specs, mock_ticks, request
from tests.emulators import AlpacaRestEmulator, BarDataset
from tests.feed_helpers import KEY, SECRET
from tradebot.api.history_service import create_app
from tradebot.backtest.data import BacktestInputError
from tradebot.backtest.report import CHART_POINTS, chart_data
from tradebot.backtest.run import backtest, simulate
from tradebot.backtest.store import list_runs, save_run
from tradebot.cli import app
from tradebot.common.config import Settings
from tradebot.common.db import create_pool
from tradebot.storage.schema import apply_migrations
from tradebot.storage.writer import write_events

TICKS = mock_ticks(3000)
runner = CliRunner()


@pytest.fixture
async def stored(clean_database: str) -> str:
    """The test database holding the mock ticks."""
    await apply_migrations(clean_database)
    pool = await create_pool(clean_database, max_size=2)
    try:
        for start in range(0, len(TICKS), 1000):
            await write_events(pool, TICKS[start : start + 1000])
    finally:
        await pool.close()
    return clean_database


async def test_stored_ticks_give_the_report_of_the_same_ticks_in_memory(stored: str) -> None:
    pool = await create_pool(stored, max_size=2)
    try:
        wanted = request(crossover_specs((5, 20), (10, 40)))
        outcome = await backtest(pool, wanted)
        assert outcome.report == simulate(wanted, TICKS).report
        await save_run(pool, outcome.report)
        await save_run(pool, outcome.report)  # the same run stored twice is one row
        runs = await list_runs(pool)
        assert [r["id"] for r in runs] == [outcome.report["run"]["id"]]
        assert json.loads(runs[0]["trades"]) == outcome.report["trades"]
        with pytest.raises(BacktestInputError, match="no stored ticks of TSLA"):
            await backtest(pool, replace(request(crossover_specs((5, 20))), symbols=("AAPL", "TSLA")))
    finally:
        await pool.close()


def cli(database_url: str, redis_url: str, *args: str):  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    return runner.invoke(app, ["backtest", "--symbols", "AAPL,MSFT,NVDA", *args], env=env)


def test_the_command_prints_writes_and_stores_a_run(stored: str, redis_url: str, tmp_path: Path) -> None:
    result = cli(stored, redis_url, "--start", "2024-01-02", "--end", "2024-01-03", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "sharpe" in result.output
    assert "per strategy" in result.output
    for name in ("report.json", "trades.csv", "report.html", "equity.png"):
        assert (tmp_path / name).stat().st_size > 0
    report = json.loads((tmp_path / "report.json").read_text())

    async def stored_ids() -> list[str]:
        conn = await asyncpg.connect(stored)
        try:
            return [row["id"] for row in await conn.fetch("SELECT id FROM backtest_runs")]
        finally:
            await conn.close()

    assert asyncio.run(stored_ids()) == [report["run"]["id"]]


def test_check_lookahead_reports_on_the_command_line(stored: str, redis_url: str) -> None:
    result = cli(
        stored, redis_url, "--start", "2024-01-02", "--end", "2024-01-03", "--no-store", "--check-lookahead",
        "--strategy", "tests.backtest_helpers:PeekingStrategy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "look-ahead check: 50 of 50 signals change" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "no_such_strategy"], "unknown strategy class 'no_such_strategy'"),
        (["--strategy", "rsi_reversion", "--param", "window=0"], "window must be at least 1"),
        (["--strategy", "rsi_reversion", "--param", "colour=red"], "unknown parameter 'colour'"),
        (["--start", "2024-01-03", "--end", "2024-01-02"], "empty date range"),
        (["--start", "2023-01-01", "--end", "2023-01-02"], "no stored ticks of AAPL, MSFT, NVDA"),
        (["--start", "yesterday"], "is not a date"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(stored: str, redis_url: str, args: list[str], message: str) -> None:
    defaults = {"--start": "2024-01-02", "--end": "2024-01-03"}
    for option in list(defaults):
        if option in args:
            del defaults[option]
    given = [*args, *(part for pair in defaults.items() for part in pair)]
    result = cli(stored, redis_url, *given)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0], result.output


def test_replay_on_the_command_line_reports_parity(stored: str, redis_url: str) -> None:
    env = {"DATABASE_URL": stored, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    args = ["replay", "--symbols", "AAPL,MSFT,NVDA", "--start", "2024-01-02", "--end", "2024-01-03"]
    result = runner.invoke(app, [*args, "--redis-db", "4", "--flush"], env=env)
    assert result.exit_code == 0, result.output
    assert "replayed 3,000 ticks in Redis database 4" in result.output
    assert "parity with the backtest: identical" in result.output
    refused = runner.invoke(app, [*args, "--redis-db", "0"], env=env)
    assert refused.exit_code == 2
    assert "where the live system runs" in refused.output


def test_optimize_on_the_command_line_prints_the_walk_forward(stored: str, redis_url: str) -> None:
    env = {"DATABASE_URL": stored, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"}
    args = ["optimize", "--strategy", "ma_crossover", "--symbols", "AAPL,MSFT", "--start", "2024-01-02",
            "--end", "2024-01-03", "--grid", "short_window=3,5", "--grid", "long_window=20..21", "--folds", "2",
            "--processes", "1", "--objective", "total_return"]  # fmt: skip
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "candidates by total_return" in result.output
    assert "mean out-of-sample total_return" in result.output


def test_backfill_first_then_backtest_the_bars(clean_database: str, redis_url: str, tmp_path: Path) -> None:
    week = BarDataset.generate(("AAPL", "MSFT"), datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC),
                               timeframes=("1Hour",))  # fmt: skip
    with AlpacaRestEmulator(week, page_size=1000) as rest:
        env = {"DATABASE_URL": clean_database, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING",
               "ALPACA_KEY": KEY, "ALPACA_SECRET": SECRET, "ALPACA_DATA_URL": rest.url}  # fmt: skip
        args = ["backtest", "--symbols", "AAPL,MSFT", "--start", "2024-03-04", "--end", "2024-03-09", "--bars", "1h",
                "--backfill", "alpaca", "--strategy", "ma_crossover", "--param", "short_window=2",
                "--param", "long_window=4", "--no-store", "--out", str(tmp_path)]  # fmt: skip
        result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"]["source"] == "bars:1h"
    assert report["observations"] > 20
    assert report["signals"] > 0
    no_bars = runner.invoke(app, [*args[:7], "--backfill", "alpaca"], env=env)  # no --bars
    assert no_bars.exit_code == 2
    assert "--backfill fetches bars" in no_bars.output


async def test_the_api_lists_stored_runs_and_serves_a_report(stored: str, redis_url: str) -> None:
    pool = await create_pool(stored, max_size=2)
    try:
        outcome = await backtest(pool, request(crossover_specs((5, 20))))
        await save_run(pool, outcome.report, chart_data(outcome.result))
    finally:
        await pool.close()
    app = create_app(Settings(_env_file=None, database_url=stored, redis_url=redis_url))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        runs = (await client.get("/backtests")).json()
        run_id = outcome.report["run"]["id"]
        assert [r["id"] for r in runs] == [run_id]
        assert runs[0]["trades"] == outcome.report["trades"]
        report = (await client.get(f"/backtests/{run_id}")).json()
        assert report["per_strategy"].keys() == outcome.report["per_strategy"].keys()
        missing = await client.get("/backtests/bt-nope")
        assert missing.status_code == 404
        assert "GET /backtests lists them" in missing.json()["detail"]
        chart = (await client.get(f"/backtests/{run_id}/chart")).json()
        assert len(chart["equity"]) == len(outcome.result.equity)  # under CHART_POINTS: every sample
        assert chart["equity"][-1] == [outcome.result.equity[-1][0].isoformat(), outcome.result.equity[-1][1]]
        assert len(chart["trades"]) == outcome.report["trades"]
        assert (await client.get("/backtests/bt-nope/chart")).status_code == 404


def test_a_long_equity_curve_is_thinned_for_the_chart_keeping_its_last_sample() -> None:
    outcome = simulate(request(crossover_specs((5, 20))), TICKS)
    start = outcome.result.equity[0][0]
    curve = [(start + timedelta(minutes=n), 100_000.0 + n) for n in range(12_001)]
    charts = chart_data(replace(outcome.result, equity=curve))
    assert len(charts["equity"]) <= CHART_POINTS + 1
    assert charts["equity"][0] == [curve[0][0].isoformat(), curve[0][1]]
    assert charts["equity"][-1] == [curve[-1][0].isoformat(), curve[-1][1]]
