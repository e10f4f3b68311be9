"""`tradebot optimize`: parse, load the stored data once, dispatch to the optimiser, print the table."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tradebot.backtest.cli import choose_specs, fail, parse_parameters, parse_time, stored_ticks
from tradebot.backtest.data import BacktestInputError
from tradebot.backtest.optimize import optimize
from tradebot.backtest.run import BacktestRequest
from tradebot.common.config import load_settings
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.strategy.catalog import StrategyError


def parse_grid(values: list[str]) -> dict[str, list[Any]]:
    """``NAME=3,5,8`` or ``NAME=3..8`` (whole numbers, inclusive), repeatable."""
    grid: dict[str, list[Any]] = {}
    for value in values:
        name, sep, choices = value.partition("=")
        low, dots, high = choices.partition("..")
        if dots and low.strip().lstrip("-").isdigit() and high.strip().lstrip("-").isdigit():
            grid[name.strip()] = list(range(int(low), int(high) + 1))
        elif sep and choices:
            grid[name.strip()] = [parse_parameters([f"v={c}"])["v"] for c in choices.split(",")]
        else:
            raise fail(f"--grid {value!r}: use NAME=V1,V2,… or NAME=LOW..HIGH")
    return grid


def _shown(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def optimize_command(
    strategy: Annotated[str, typer.Option(help="the strategy class to tune, e.g. ma_crossover")],
    symbols: Annotated[str, typer.Option(help="comma-separated, e.g. AAPL,MSFT")],
    start: Annotated[str, typer.Option(help="first day or instant (UTC)")],
    end: Annotated[str, typer.Option(help="end, exclusive")],
    grid: Annotated[list[str], typer.Option(help="NAME=V1,V2 or NAME=LOW..HIGH, repeatable")],
    param: Annotated[list[str], typer.Option(help="fixed NAME=VALUE, repeatable")] = [],  # noqa: B006
    objective: Annotated[str, typer.Option(help="sharpe, sortino, calmar, total_return, cagr, …")] = "sharpe",
    method: Annotated[str, typer.Option(help="grid or random")] = "grid",
    samples: Annotated[int, typer.Option(help="candidates drawn by --method random")] = 20,
    seed: Annotated[int, typer.Option(help="seed of --method random")] = 0,
    folds: Annotated[int, typer.Option(help="walk-forward folds (0: fit on everything, no out-of-sample)")] = 3,
    processes: Annotated[int, typer.Option(help="parallel processes")] = 2,
    sample: Annotated[str, typer.Option(help="equity sampling: 1m, 5m, 15m, 1h or 1d")] = "1m",
    out: Annotated[Path | None, typer.Option(help="write the whole result as JSON here")] = None,
) -> None:
    """Search strategy parameters over stored ticks; walk-forward by default (fit in sample, report out of it)."""
    settings = load_settings()
    setup_logging(settings.log_level)
    specs = choose_specs(settings, None, strategy, param, 10.0)
    names = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    ranges = parse_grid(grid)
    try:
        request = BacktestRequest.from_settings(
            settings, symbols=names, start=parse_time(start, "--start"), end=parse_time(end, "--end"),
            specs=specs, sample=sample,
        )  # fmt: skip
        request.book()
        with infrastructure(settings) as ready:
            ticks = asyncio.run(stored_ticks(ready, request))
        found = optimize(
            request, ticks, ranges, objective=objective, method=method, samples=samples, seed=seed,
            folds=folds, processes=processes,
        )  # fmt: skip
    except (BacktestInputError, StrategyError, ValueError) as error:
        raise fail(str(error)) from None
    _print(found)
    if out is not None:
        out.write_text(json.dumps(found, indent=2, default=str))


def _print(found: dict[str, Any]) -> None:
    console = Console()
    ranked = Table(title=f"candidates by {found['objective']} (in sample)")
    ranked.add_column("parameters")
    ranked.add_column(found["objective"], justify="right")
    for row in found["candidates"]:
        ranked.add_row(json.dumps(row["parameters"]), _shown(row["in_sample"]))
    console.print(ranked)
    if found["folds"]:
        folds = Table(title="walk-forward: each fold's winner on the next window")
        for column in ("fold", "parameters", "in sample", "out of sample"):
            folds.add_column(column)
        for index, fold in enumerate(found["folds"], 1):
            folds.add_row(
                str(index), json.dumps(fold["parameters"]), _shown(fold["in_sample"]), _shown(fold["out_of_sample"])
            )
        console.print(folds)
        console.print(f"mean out-of-sample {found['objective']}: {_shown(found['out_of_sample'])}")
