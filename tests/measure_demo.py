"""One hour (or any number of ticks) of the default demo in one process: the mock feed at its
default 500 ticks/s, the crossover, the risk stage and the paper broker, as tests/test_risk_demo.py
runs three minutes of it.

    .venv/bin/python -m tests.measure_demo [--ticks 1800000]

Prints the order events by status (denials by their reason code; ``unheld sell``: the strategy's
sells of a symbol not held), the lowest cash and the ticks seen in each trading state.
"""

from __future__ import annotations

import argparse

from .test_risk_demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=1_800_000, help="ticks of the demo (500 a second: an hour)")
    ticks = parser.parse_args().ticks
    statuses, lowest_cash, _, states = run_demo(ticks)
    print(f"{ticks:,} ticks: {dict(statuses.most_common())}; lowest cash ${lowest_cash:,.2f}")
    print("ticks by trading state: " + ", ".join(f"{state.value} {n:,}" for state, n in states.items()))


if __name__ == "__main__":
    main()
