"""Our backtest against backtesting.py and vectorbt on the same bars and the same crossover.

Both libraries are installed for the bench only (not in requirements.txt); without one, its figure
is "n/a" and says how to install it. Rates are bars per CPU second of this process, like ours. The
vectorbt run also checks that its trades are ours: the same entry and exit bars.
"""

from __future__ import annotations

import time
import warnings
from datetime import timedelta
from typing import Any

from tradebot.backtest.engine import BacktestResult
from tradebot.bench.report import Figure
from tradebot.common.models import Bar
from tradebot.strategy.moving_average import PRICE_UNITS_PER_DOLLAR

SECTION = "backtest"
SHORT, LONG = 5, 20
INSTALL = "pip install backtesting vectorbt  # into the venv, for the bench only"


def missing(name: str, library: str) -> Figure:
    return Figure(SECTION, name, None, "x", f"{library} is not installed: {INSTALL}", {"install": INSTALL})


def backtesting_py_ratio(bars: list[Bar], ours: float) -> Figure:
    """Our bars/s (``ours``, the crossover on these bars) over backtesting.py's."""
    name = "backtest bars/s vs backtesting.py"
    try:
        import pandas
        from backtesting import Backtest, Strategy
        from backtesting.lib import crossover
    except ImportError:
        return missing(name, "backtesting.py")

    def sma(values, window):  # type: ignore[no-untyped-def]
        return pandas.Series(values).rolling(window).mean()

    class SmaCross(Strategy):  # type: ignore[misc]  # long only, like ours: buy on the cross up, close on the cross down
        def init(self) -> None:
            self.short = self.I(sma, self.data.Close, SHORT)
            self.long = self.I(sma, self.data.Close, LONG)

        def next(self) -> None:
            if crossover(self.short, self.long):
                self.buy()
            elif crossover(self.long, self.short):
                self.position.close()

    frame = pandas.DataFrame(
        {"Open": [b.open for b in bars], "High": [b.high for b in bars], "Low": [b.low for b in bars],
         "Close": [b.close for b in bars], "Volume": [b.volume for b in bars]},
        index=pandas.DatetimeIndex([b.timestamp for b in bars]),
    )  # fmt: skip
    began = time.process_time()
    with warnings.catch_warnings():  # it warns on every buy it cannot afford while already long
        warnings.simplefilter("ignore")
        Backtest(frame, SmaCross, cash=10_000_000, finalize_trades=True).run()
    theirs = len(bars) / (time.process_time() - began)
    method = (
        f"crossover {SHORT}/{LONG} on the same {len(bars):,} 1-minute bars of one symbol: our bars/s (run_backtest) "
        "over backtesting.py's (Backtest(...).run(), SMA via pandas, long only), both in CPU seconds"
    )
    return Figure(SECTION, name, ours / theirs, "x", method,
                  {"ours_bars_per_s": round(ours), "backtesting_py_bars_per_s": round(theirs)})  # fmt: skip


def vectorbt_ratio(bars: list[Bar], ours: float, result: BacktestResult) -> Figure:
    """Our bars/s over vectorbt's, and whether its round trips are ours (``result``: our run on ``bars``)."""
    name = "backtest bars/s vs vectorbt"
    try:
        import numpy
        import pandas
        import vectorbt
    except ImportError:
        return missing(name, "vectorbt")

    def run(closes: list[float]) -> Any:
        # its SMAs of the prices in $0.0001 units: float sums of integers are exact, so equal
        # averages are equal for it too, as in our integer rule (a tie is not a cross)
        units = pandas.Series(numpy.rint(numpy.array(closes) * PRICE_UNITS_PER_DOLLAR))
        short, long = vectorbt.MA.run(units, SHORT), vectorbt.MA.run(units, LONG)
        entries, exits = short.ma_crossed_above(long), short.ma_crossed_below(long)
        portfolio = vectorbt.Portfolio.from_signals(
            pandas.Series(closes), entries, exits, size=10, init_cash=10_000_000
        )
        return portfolio.trades.records_arr

    closes = [b.close for b in bars]
    run(closes[: LONG * 10])  # numba compiles on first use: not part of the rate
    began = time.process_time()
    records = run(closes)
    theirs = len(bars) / (time.process_time() - began)
    closed = records[records["status"] == 1]  # a trade still open at the end is not a round trip of ours
    their_trades = list(zip(closed["entry_idx"].tolist(), closed["exit_idx"].tolist(), strict=True))
    index = {bar.timestamp + timedelta(minutes=1): number for number, bar in enumerate(bars)}  # signalled at the close
    our_trades = [(index[t.entry_time], index[t.exit_time]) for t in result.ledger.trades]
    same = their_trades == our_trades
    method = (
        f"crossover {SHORT}/{LONG} on the same {len(bars):,} 1-minute bars of one symbol: our bars/s (run_backtest) "
        "over vectorbt's (MA.run, ma_crossed_above/below, Portfolio.from_signals; numba compiled beforehand), "
        f"both in CPU seconds; trades {'identical' if same else 'DIFFERENT'} "
        f"({len(our_trades):,} round trips, entry and exit bars)"
    )
    detail: dict[str, Any] = {"ours_bars_per_s": round(ours), "vectorbt_bars_per_s": round(theirs), "same_trades": same,
              "trades": len(our_trades), "their_trades": len(their_trades)}  # fmt: skip
    if not same:
        detail["first_difference"] = next(
            ((n, o, t) for n, (o, t) in enumerate(zip(our_trades, their_trades, strict=False)) if o != t),
            (min(len(our_trades), len(their_trades)), None, None),
        )
    return Figure(SECTION, name, ours / theirs, "x", method, detail)
