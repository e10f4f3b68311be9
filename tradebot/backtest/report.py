"""The figures of a backtest: overall, per symbol, per strategy, and against buy-and-hold."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from typing import Any

from tradebot.backtest.engine import SAMPLE_PERIODS_PER_YEAR, BacktestResult, Trade
from tradebot.backtest.stats import TradeStats, curve_stats, drawdowns


def _trade_figures(trades: list[Trade]) -> dict[str, float]:
    stats = TradeStats.of([t.pnl for t in trades])
    figures = asdict(stats)
    figures["pnl"] = sum(t.pnl for t in trades)
    figures["fees"] = sum(t.fees for t in trades)
    return figures


def buy_and_hold(result: BacktestResult) -> dict[str, float]:
    """Each symbol's return from its first to its last price, and their equal-weighted mean."""
    per_symbol = {s: result.last_price[s] / result.first_price[s] - 1 for s in sorted(result.first_price)}
    mean = sum(per_symbol.values()) / len(per_symbol) if per_symbol else math.nan
    return {"return": mean, "per_symbol": per_symbol}  # type: ignore[dict-item]


def build_report(result: BacktestResult, *, run: dict[str, Any]) -> dict[str, Any]:
    """The whole report as JSON-ready data (NaN where a figure is undefined, e.g. no trades)."""
    equity = [value for _, value in result.equity]
    trades = result.ledger.trades
    samples = max(1, len(equity) - 1)
    average_equity = sum(equity) / len(equity) if equity else math.nan
    overall = curve_stats(equity, SAMPLE_PERIODS_PER_YEAR[result.sample]) if len(equity) > 1 else {}
    hold = buy_and_hold(result)
    statuses = Counter(event.status for event in result.events)
    report: dict[str, Any] = {
        "run": run,
        "sample": result.sample,
        "observations": result.observations,
        "starting_cash": result.starting_cash,
        "final_equity": equity[-1] if equity else result.starting_cash,
        **overall,
        **_trade_figures(trades),
        "exposure": result.exposed_samples / samples,
        "turnover": result.traded_notional / average_equity if equity else math.nan,
        "total_fees": result.commissions,
        "signals": len(result.signals),
        "orders": len(result.orders),
        "fills": statuses["filled"],
        "rejections": statuses["rejected"],
        "denials": len(result.denials),
        "buy_and_hold_return": hold["return"],
        "excess_return": overall.get("total_return", math.nan) - hold["return"],
        "per_symbol": {},
        "per_strategy": {},
    }
    for symbol in sorted(result.first_price):
        figures = _trade_figures([t for t in trades if t.symbol == symbol])
        figures["buy_and_hold_return"] = hold["per_symbol"][symbol]  # type: ignore[index]
        report["per_symbol"][symbol] = figures
    signals_by = Counter(s.strategy for s in result.signals)
    for name in run.get("strategies", []):
        figures = _trade_figures([t for t in trades if t.strategy == name])
        figures["signals"] = signals_by[name]
        report["per_strategy"][name] = figures
    return report


def drawdown_curve(result: BacktestResult) -> list[float]:
    return drawdowns([value for _, value in result.equity])


def trade_rows(trades: list[Trade]) -> list[dict[str, Any]]:
    """The trades as rows for the CSV and the HTML page."""
    return [
        {
            "strategy": t.strategy,
            "symbol": t.symbol,
            "entry_time": t.entry_time.isoformat(),
            "exit_time": t.exit_time.isoformat(),
            "quantity": t.quantity,
            "entry_price": round(t.entry_price, 6),
            "exit_price": t.exit_price,
            "fees": round(t.fees, 6),
            "pnl": round(t.pnl, 6),
            "return_pct": round(100 * t.return_pct, 6),
        }
        for t in trades
    ]


CHART_POINTS = 5_000  # the most equity samples stored for a run's chart


def chart_data(result: BacktestResult) -> dict[str, Any]:
    """The equity curve (thinned to CHART_POINTS, the last sample kept) and the trades, for the
    dashboard's chart of a stored run."""
    step = max(1, math.ceil(len(result.equity) / CHART_POINTS))
    kept = result.equity[::step]
    if result.equity and kept[-1] is not result.equity[-1]:
        kept.append(result.equity[-1])
    return {
        "equity": [[at.isoformat(), value] for at, value in kept],
        "trades": trade_rows(result.ledger.trades),
    }


def json_ready(value: Any) -> Any:
    """NaN and infinities become None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value
