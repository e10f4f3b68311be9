"""A/B of the backtest's speed: two checkouts' code, run for run in turn, per CPU second.

    git -C <worktree> archive main | tar -x -C /tmp/main-code
    .venv/bin/python -m tests.measure_backtest_ab /tmp/main-code . [--pairs 20]

One process per checkout (each imports only its own ``tradebot``), both alive at once, each told
to do one run at a time in turn (A B, then B A, ...), so both see the same moments of a loaded
machine; a run is ``run_backtest`` of the bench's crossover 5/20 and 50/200 over its 200,000 stored
mock ticks (``TickColumns``), timed with ``time.process_time``. Prints medians and bests, the cost
of a signal ((t(5/20) - t(50/200)) / (12,380 - 1,166 signals): both runs share every per-tick
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

SPECS = ("5/20", "50/200")


def worker(root: str, data: str) -> None:
    """Serve runs of this checkout's code: a spec name in, CPU seconds and a digest out."""
    sys.path.insert(0, root)
    import tradebot
    from tests.backtest_digest import digest
    from tradebot.backtest.engine import run_backtest
    from tradebot.bench.backtest import CROSSOVER, SLOW_CROSSOVER
    from tradebot.broker.paper import PaperBroker
    from tradebot.strategy.book import StrategyBook

    assert str(Path(tradebot.__file__).resolve()).startswith(str(Path(root).resolve())), tradebot.__file__
    with open(data, "rb") as stored:
        ticks = pickle.load(stored)
    specs = dict(zip(SPECS, (CROSSOVER, SLOW_CROSSOVER), strict=True))
    for spec in specs.values():  # warm up
        run_backtest(StrategyBook([spec]), ticks, PaperBroker(10_000_000.0, 1.0, 0.005))
    print("ready", flush=True)
    for line in sys.stdin:
        began = time.process_time()
        result = run_backtest(StrategyBook([specs[line.strip()]]), ticks, PaperBroker(10_000_000.0, 1.0, 0.005))
        took = time.process_time() - began
        print(took, len(result.signals), digest(result, specs[line.strip()]), flush=True)
        del result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="checkout A (e.g. main's code extracted with git archive)")
    parser.add_argument("b", help="checkout B")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    data = Path(tempfile.mkdtemp()) / "ticks.pkl"
    sys.path.insert(0, args.b)
    from tradebot.bench.backtest import bench_ticks
    from tradebot.strategy.batch import TickColumns

    data.write_bytes(pickle.dumps(TickColumns.of(bench_ticks(200_000))))
    codes = {"A": args.a, "B": args.b}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "tests.measure_backtest_ab", "-", "-", "--worker", root, str(data)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for name, root in codes.items()
    }  # fmt: skip
    for proc in procs.values():
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    times: dict[tuple[str, str], list[float]] = {(name, spec): [] for name in codes for spec in SPECS}
    signals: dict[str, int] = {}
    for pair in range(args.pairs):
        for spec in SPECS:
            seen = set()
            for name in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                proc = procs[name]
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(spec + "\n")
                proc.stdin.flush()
                took, count, digest = proc.stdout.readline().split()
                times[(name, spec)].append(float(took))
                signals[spec] = int(count)
                seen.add(digest)
            assert len(seen) == 1, f"{spec}: A and B gave different signals, orders or fills"
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    ticks = 200_000
    extra = signals["5/20"] - signals["50/200"]
    for name, root in codes.items():
        fast, slow = times[(name, "5/20")], times[(name, "50/200")]
        per = (statistics.median(fast) - statistics.median(slow)) / extra * 1e6
        best = (min(fast) - min(slow)) / extra * 1e6
        print(f"{name} {root}: 5/20 {ticks / statistics.median(fast):,.0f} ticks/s median, {ticks / min(fast):,.0f} "
              f"best; 50/200 {ticks / statistics.median(slow):,.0f} median, {ticks / min(slow):,.0f} best; "
              f"per signal {per:.1f} µs median, {best:.1f} best")  # fmt: skip
    for spec in SPECS:
        ratios = [a / b for a, b in zip(times[("A", spec)], times[("B", spec)], strict=True)]
        print(f"{spec} ({signals[spec]:,} signals): B is {statistics.median(ratios):.2f}x A (median of "
              f"{len(ratios)} pairs; {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
