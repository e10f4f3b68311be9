"""One hour (or any number of ticks) of the default demo in one process: the mock feed at its
default 500 ticks/s, the crossover, the risk stage and the paper broker, as tests/test_risk_demo.py
runs three minutes of it.

    .venv/bin/python -m tests.measure_demo [--ticks 1800000] [--set RISK_DAILY_LOSS_PCT=0.01 ...]

Prints the order events by status (denials by their reason code; ``unheld sell``: the strategy's
sells of a symbol not held), the fills by side in the last tenth of the run, the lowest cash, the
account's equity at the end and the ticks seen in each trading state.
"""

from __future__ import annotations

import argparse

from tradebot.risk.portfolio import Portfolio

from .test_risk_demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=1_800_000, help="ticks of the demo (500 a second: an hour)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a setting to override")
    arguments = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in arguments.set)
    demo = run_demo(arguments.ticks, **{name.lower(): value for name, value in overrides.items()})
    broker = demo.account.broker
    equity = Portfolio(broker.cash, broker.positions).totals().equity
    print(f"{arguments.ticks:,} ticks: {dict(demo.statuses.most_common())}; lowest cash ${demo.lowest_cash:,.2f}")
    print(f"fills in the last tenth: {dict(demo.late_fills)}; equity at the end ${equity:,.2f}")
    print("ticks by trading state: " + ", ".join(f"{state.value} {n:,}" for state, n in demo.states.items()))


if __name__ == "__main__":
    main()
