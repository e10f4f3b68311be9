"""A/B of the backtest's speed: two checkouts' code, run for run in turn, per CPU second.

    git -C <worktree> archive main | tar -x -C /tmp/main-code
    .venv/bin/python -m tests.measure_backtest_ab /tmp/main-code . [--pairs 20] [--runs 5/20,ensemble,bars]

One process per checkout (each imports only its own ``tradebot``), both alive at once, each told
to do one run at a time in turn (A B, then B A, ...), so both see the same moments of a loaded
machine; a run is ``run_backtest`` of one of the bench's specs (``RUNS``: by default the
crossover 5/20 and 50/200 over its 200,000 stored mock ticks, ``TickColumns``; also the ensemble
over the same ticks and the 5/20 or the ensemble over its 50,000 1-minute bars of 20 symbols),
timed with ``time.process_time``. Prints medians and bests, the cost of a signal when both 5/20
and 50/200 run ((t(5/20) - t(50/200)) / (12,380 - 1,166 signals): both runs share every per-tick
cost) and the per-pair ratios. Every run of both must give the same results: signals, orders,
events, equity curve, round trips, totals, account and report (tests/backtest_digest.py's digest);
the previous run's result is freed before a run is timed, as the bench times none.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# run name -> (the bench's spec, by its name in tradebot/bench/backtest.py; the observations it runs over)
RUNS = {
    "5/20": ("CROSSOVER", "ticks"),
    "50/200": ("SLOW_CROSSOVER", "ticks"),
    "ensemble": ("ENSEMBLE_TICKS", "ticks"),
    "bars": ("CROSSOVER_BARS", "bars"),
    "bars-ensemble": ("ENSEMBLE_BARS", "bars"),
}
TICKS, BARS = 200_000, 50_000  # the bench's sizes (tradebot bench's defaults)


def worker(root: str, data: str) -> None:
    """Serve runs of this checkout's code: a run name in, CPU seconds, signals and a digest out."""
    sys.path.insert(0, root)
    import tradebot
    import tradebot.bench.backtest as bench
    from tests.backtest_digest import digest
    from tradebot.backtest.engine import run_backtest
    from tradebot.broker.paper import PaperBroker
    from tradebot.strategy.book import StrategyBook

    assert str(Path(tradebot.__file__).resolve()).startswith(str(Path(root).resolve())), tradebot.__file__
    with open(data, "rb") as stored:
        observations = pickle.load(stored)
    runs = {
        name: (getattr(bench, spec), observations[kind]) for name, (spec, kind) in RUNS.items() if kind in observations
    }
    for spec, over in runs.values():  # warm up
        run_backtest(StrategyBook([spec]), over, PaperBroker(10_000_000.0, 1.0, 0.005))
    print("ready", flush=True)
    for line in sys.stdin:
        spec, over = runs[line.strip()]
        began = time.process_time()
        result = run_backtest(StrategyBook([spec]), over, PaperBroker(10_000_000.0, 1.0, 0.005))
        took = time.process_time() - began
        print(took, len(result.signals), digest(result, spec), flush=True)
        del result


def observations(b: str, names: list[str]) -> Path:
    """The runs' observations, made once by checkout ``b``'s bench and pickled for both workers."""
    sys.path.insert(0, b)
    from tradebot.bench.backtest import bench_bars, bench_ticks
    from tradebot.strategy.batch import TickColumns

    kinds = {RUNS[name][1] for name in names}
    made: dict[str, object] = {}
    if "ticks" in kinds:
        made["ticks"] = TickColumns.of(bench_ticks(TICKS))
    if "bars" in kinds:
        made["bars"] = bench_bars(BARS)
    data = Path(tempfile.mkdtemp()) / "observations.pkl"
    data.write_bytes(pickle.dumps(made))
    return data


def pairs(
    codes: dict[str, str], names: list[str], count: int, data: Path
) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """CPU seconds of each (checkout, run), ``count`` pairs in turn, and each run's signals."""
    procs = {
        code: subprocess.Popen(
            [sys.executable, "-m", "tests.measure_backtest_ab", "-", "-", "--worker", root, str(data)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for code, root in codes.items()
    }  # fmt: skip
    for proc in procs.values():
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    times: dict[tuple[str, str], list[float]] = {(code, name): [] for code in codes for name in names}
    signals: dict[str, int] = {}
    for pair in range(count):
        for name in names:
            seen = set()
            for code in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                proc = procs[code]
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(name + "\n")
                proc.stdin.flush()
                took, found, digest = proc.stdout.readline().split()
                times[(code, name)].append(float(took))
                signals[name] = int(found)
                seen.add(digest)
            assert len(seen) == 1, f"{name}: A and B gave different signals, orders or fills"
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    return times, signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="checkout A (e.g. main's code extracted with git archive)")
    parser.add_argument("b", help="checkout B")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--runs", default="5/20,50/200", help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    names = args.runs.split(",")
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}: use {', '.join(RUNS)}")
    codes = {"A": args.a, "B": args.b}
    times, signals = pairs(codes, names, args.pairs, observations(args.b, names))
    for code, root in codes.items():
        rates = []
        for name in names:
            size, unit = (TICKS, "ticks/s") if RUNS[name][1] == "ticks" else (BARS, "bars/s")
            taken = times[(code, name)]
            rates.append(f"{name} {size / statistics.median(taken):,.0f} {unit} median, {size / min(taken):,.0f} best")
        if "5/20" in names and "50/200" in names:
            fast, slow = times[(code, "5/20")], times[(code, "50/200")]
            extra = signals["5/20"] - signals["50/200"]
            per = (statistics.median(fast) - statistics.median(slow)) / extra * 1e6
            best = (min(fast) - min(slow)) / extra * 1e6
            rates.append(f"per signal {per:.1f} µs median, {best:.1f} best")
        print(f"{code} {root}: " + "; ".join(rates))
    for name in names:
        ratios = [a / b for a, b in zip(times[("A", name)], times[("B", name)], strict=True)]
        print(f"{name} ({signals[name]:,} signals): B is {statistics.median(ratios):.2f}x A (median of "
              f"{len(ratios)} pairs; {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
