"""Parameter search for one strategy: grid or random, in parallel processes, with walk-forward.

Walk-forward (the default) cuts the data into ``folds + 1`` consecutive windows of equal length.
Fold ``i`` fits on window ``i`` (every candidate is backtested there and the best by the objective
wins) and reports that winner on window ``i + 1``, which the fit never saw. Out-of-sample figures
are the ones to believe; in-sample ones only rank candidates.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from typing import Any

from tradebot.backtest.run import BacktestRequest, simulate
from tradebot.common.models import Bar, Tick

OBJECTIVES = ("sharpe", "sortino", "calmar", "total_return", "cagr", "profit_factor", "expectancy", "win_rate")
_observations: Sequence[Tick] | Sequence[Bar] = []  # set in each worker process (inherited through fork)


def candidates(
    grid: dict[str, list[Any]], method: str = "grid", samples: int = 20, seed: int = 0
) -> list[dict[str, Any]]:
    """Every combination of the grid, or ``samples`` distinct ones drawn at random with ``seed``."""
    names = sorted(grid)
    combinations = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    if method == "grid":
        return combinations
    if method != "random":
        raise ValueError(f"unknown search method {method!r}: use grid or random")
    return random.Random(seed).sample(combinations, min(samples, len(combinations)))


def windows(count: int, folds: int) -> list[tuple[int, int]]:
    """``folds + 1`` consecutive slices of ``count`` observations (by position, data in time order)."""
    edges = [round(count * i / (folds + 1)) for i in range(folds + 2)]
    return list(itertools.pairwise(edges))


@dataclass(frozen=True)
class Evaluation:
    parameters: dict[str, Any]
    window: tuple[int, int]
    score: float
    report: dict[str, Any]


def _score(report: dict[str, Any], objective: str) -> float:
    value = report.get(objective)
    return -math.inf if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _with_parameters(request: BacktestRequest, parameters: dict[str, Any]) -> BacktestRequest:
    spec = request.specs[0]
    return replace(request, specs=(replace(spec, parameters={**spec.parameters, **parameters}),))


def _evaluate(task: tuple[BacktestRequest, dict[str, Any], tuple[int, int], str]) -> Evaluation:
    request, parameters, (first, last), objective = task
    report = simulate(_with_parameters(request, parameters), _observations[first:last]).report
    headline = {k: v for k, v in report.items() if not isinstance(v, dict | list)}
    return Evaluation(parameters, (first, last), _score(report, objective), headline)


def _init(observations: Sequence[Any]) -> None:
    global _observations
    _observations = observations


def evaluate_all(
    request: BacktestRequest,
    observations: Sequence[Tick] | Sequence[Bar],
    tasks: list[tuple[dict[str, Any], tuple[int, int]]],
    objective: str,
    processes: int,
) -> list[Evaluation]:
    """Backtest every (parameters, window) pair, in ``processes`` processes (1: in this one)."""
    work = [(request, parameters, window, objective) for parameters, window in tasks]
    if processes <= 1:
        _init(observations)
        return [_evaluate(task) for task in work]
    context = get_context("fork")  # the workers inherit the observations instead of unpickling them
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init, initargs=(observations,)) as pool:
        return list(pool.map(_evaluate, work, chunksize=max(1, len(work) // (4 * processes))))


def optimize(
    request: BacktestRequest,
    observations: Sequence[Tick] | Sequence[Bar],
    grid: dict[str, list[Any]],
    *,
    objective: str = "sharpe",
    method: str = "grid",
    samples: int = 20,
    seed: int = 0,
    folds: int = 3,
    processes: int = 1,
) -> dict[str, Any]:
    """The ranked candidates (in sample) and, with folds > 0, each fold's out-of-sample result."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if len(request.specs) != 1:
        raise ValueError("optimize one strategy at a time (pass --strategy)")
    found = candidates(grid, method, samples, seed)
    if not found:
        raise ValueError("the parameter grid is empty: pass --grid NAME=V1,V2")
    slices = windows(len(observations), folds) if folds > 0 else [(0, len(observations))]
    fitting = slices[:-1] if folds > 0 else slices
    fitted = evaluate_all(request, observations, [(p, w) for w in fitting for p in found], objective, processes)
    ranked = sorted(found, key=lambda p: -_mean([e.score for e in fitted if e.parameters == p]))
    result: dict[str, Any] = {
        "objective": objective,
        "candidates": [
            {"parameters": p, "in_sample": _mean([e.score for e in fitted if e.parameters == p])} for p in ranked
        ],
        "folds": [],
    }
    if folds > 0:
        winners = [max((e for e in fitted if e.window == w), key=lambda e: e.score) for w in fitting]
        tested = evaluate_all(
            request, observations, [(w.parameters, slices[i + 1]) for i, w in enumerate(winners)], objective, processes
        )
        for winner, out in zip(winners, tested, strict=True):
            result["folds"].append(
                {"parameters": winner.parameters, "in_sample": winner.score, "out_of_sample": out.score,
                 "out_of_sample_report": out.report}
            )  # fmt: skip
        result["out_of_sample"] = _mean([f["out_of_sample"] for f in result["folds"]])
    return result


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite and len(finite) == len(values) else -math.inf
