"""The optimiser: candidates, walk-forward windows, and the same answer in one process or two."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from tests.backtest_helpers import mock_ticks, request
from tradebot.backtest.optimize import candidates, optimize, windows
from tradebot.backtest.optimize_cli import parse_grid
from tradebot.backtest.run import simulate
from tradebot.cli import app
from tradebot.strategy.book import StrategySpec

TICKS = mock_ticks(3000)
SPEC = (StrategySpec("cross", "ma_crossover", {"short_window": 5, "long_window": 20}),)
GRID = {"short_window": [3, 5], "long_window": [20, 40]}


def test_grid_and_random_candidates() -> None:
    assert candidates(GRID) == [
        {"long_window": 20, "short_window": 3},
        {"long_window": 20, "short_window": 5},
        {"long_window": 40, "short_window": 3},
        {"long_window": 40, "short_window": 5},
    ]
    drawn = candidates({"short_window": list(range(2, 12))}, "random", samples=4, seed=7)
    assert len(drawn) == 4
    assert drawn == candidates({"short_window": list(range(2, 12))}, "random", samples=4, seed=7)
    assert parse_grid(["short_window=3..5", "average=sma,ema"]) == {
        "short_window": [3, 4, 5],
        "average": ["sma", "ema"],
    }


def test_walk_forward_windows_follow_each_other() -> None:
    assert windows(100, 3) == [(0, 25), (25, 50), (50, 75), (75, 100)]


def test_walk_forward_fits_in_sample_and_reports_out_of_sample() -> None:
    found = optimize(request(SPEC), TICKS, GRID, objective="total_return", folds=2)
    assert len(found["candidates"]) == 4
    assert len(found["folds"]) == 2
    scores = [c["in_sample"] for c in found["candidates"]]
    assert scores == sorted(scores, reverse=True)
    # each fold's out-of-sample figure is that winner backtested on the next window alone
    first = found["folds"][0]
    later = TICKS[1000:2000]
    expected = simulate(request((StrategySpec("cross", "ma_crossover", first["parameters"]),)), later).report
    assert first["out_of_sample"] == pytest.approx(expected["total_return"])
    assert math.isfinite(found["out_of_sample"])


def test_two_processes_give_the_answer_of_one() -> None:
    one = optimize(request(SPEC), TICKS, GRID, folds=1, processes=1)
    two = optimize(request(SPEC), TICKS, GRID, folds=1, processes=2)
    assert one == two


def test_bad_optimiser_input_exits_2() -> None:
    runner = CliRunner()
    base = [
        "optimize",
        "--strategy",
        "ma_crossover",
        "--symbols",
        "AAPL",
        "--start",
        "2024-01-02",
        "--end",
        "2024-01-03",
    ]
    result = runner.invoke(
        app, [*base, "--grid", "short_window"], env={"REDIS_URL": "redis://x", "DATABASE_URL": "postgresql://x"}
    )
    assert result.exit_code == 2
    assert "use NAME=V1,V2" in result.output
    with pytest.raises(ValueError, match="unknown objective"):
        optimize(request(SPEC), TICKS, GRID, objective="luck")
