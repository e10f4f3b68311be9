"""One digest of everything a backtest produces, for showing that a change to the loop changes no result.

    PYTHONPATH=<checkout> .venv/bin/python -m tests.backtest_digest [--ticks 200000]

Runs the bench's backtests (tradebot/bench/backtest.py: the crossover 5/20 and 50/200 over its
stored mock ticks, the 5/20 over the same ticks as Tick objects, the ensemble, the 5/20 over
1-minute bars) and prints, per run and for all of them, a sha256 over the signals, orders and
events (their JSON: the wire format, ids included), the equity curve, the round trips, the
totals, the account and the report. Two checkouts printing the same lines gave the same results
to the bit (floats by ``repr``).
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import astuple

from tradebot.backtest.engine import BacktestResult, run_backtest
from tradebot.backtest.report import build_report
from tradebot.bench.backtest import CROSSOVER, CROSSOVER_BARS, ENSEMBLE_TICKS, SLOW_CROSSOVER, bench_bars, bench_ticks
from tradebot.broker.paper import PaperBroker
from tradebot.strategy.batch import TickColumns
from tradebot.strategy.book import StrategyBook, StrategySpec


def digest(result: BacktestResult, spec: StrategySpec) -> str:
    """sha256 of every part of ``result`` and its report."""
    hashed = hashlib.sha256()
    for event in (*result.signals, *result.orders, *result.events):
        hashed.update(event.model_dump_json().encode())
    for order, reason in result.denials:
        hashed.update(f"{order.id}|{reason}".encode())
    hashed.update(repr(result.equity).encode())
    hashed.update(repr([astuple(trade) for trade in result.ledger.trades]).encode())
    hashed.update(repr(sorted((key, astuple(lot)) for key, lot in result.ledger.lots.items())).encode())
    totals = (result.traded_notional, result.commissions, result.observations, result.exposed_samples,
              sorted(result.first_price.items()), sorted(result.last_price.items()))  # fmt: skip
    hashed.update(repr(totals).encode())
    hashed.update(repr(result.account).encode())
    hashed.update(repr(build_report(result, run={"strategies": [spec.name]})).encode())
    return hashed.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200_000)
    args = parser.parse_args()
    ticks = bench_ticks(args.ticks)
    stored = TickColumns.of(ticks)
    runs = [
        ("5/20 stored", CROSSOVER, stored),
        ("50/200 stored", SLOW_CROSSOVER, stored),
        ("5/20 Tick objects", CROSSOVER, ticks),
        ("ensemble stored", ENSEMBLE_TICKS, stored[: args.ticks // 4]),
        ("5/20 1-minute bars", CROSSOVER_BARS, bench_bars(args.ticks // 10)),
    ]
    everything = hashlib.sha256()
    for name, spec, observations in runs:
        result = run_backtest(StrategyBook([spec]), observations, PaperBroker(10_000_000.0, 1.0, 0.005))
        found = digest(result, spec)
        everything.update(found.encode())
        print(f"{name}: {len(result.signals):,} signals, {len(result.events):,} events, {found}")
    print(f"all: {everything.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
