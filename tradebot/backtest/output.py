"""A backtest report as a terminal table, JSON, a trades CSV, a PNG chart and one HTML page."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tradebot.backtest.engine import BacktestResult
from tradebot.backtest.report import drawdown_curve, json_ready, trade_rows

PERCENT = {
    "total_return", "cagr", "volatility", "max_drawdown", "win_rate", "exposure",
    "buy_and_hold_return", "excess_return",
}  # fmt: skip
HEADLINE = [
    "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_samples",
    "trades", "win_rate", "profit_factor", "expectancy", "average_win", "average_loss", "exposure", "turnover",
    "total_fees", "buy_and_hold_return", "excess_return", "final_equity",
]  # fmt: skip
BREAKDOWN = ["trades", "pnl", "win_rate", "profit_factor", "fees"]


def shown(name: str, value: Any) -> str:
    """A figure as a reader wants it: percentages with %, money with two decimals, n/a for undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    if name in PERCENT:
        return f"{100 * value:.2f}%"
    if isinstance(value, int) or name in ("trades", "max_drawdown_samples"):
        return f"{int(value):,}"
    return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The headline figures, then per strategy and per symbol."""
    console = console or Console()
    headline = Table(title=f"backtest {report['run'].get('id', '')}", show_header=False)
    for name in HEADLINE:
        headline.add_row(name.replace("_", " "), shown(name, report.get(name)))
    console.print(headline)
    for group in ("per_strategy", "per_symbol"):
        table = Table(title=group.replace("_", " "))
        table.add_column(group.split("_")[1])
        for name in BREAKDOWN:
            table.add_column(name.replace("_", " "), justify="right")
        for key, figures in report[group].items():
            table.add_row(key, *(shown(name, figures.get(name)) for name in BREAKDOWN))
        console.print(table)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(json_ready(report), indent=2, default=str))


def write_trades_csv(result: BacktestResult, path: Path) -> None:
    rows = trade_rows(result.ledger.trades)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["strategy", "symbol"])
        writer.writeheader()
        writer.writerows(rows)


def write_png(result: BacktestResult, path: Path) -> None:
    """Equity above, drawdown below (needs matplotlib, imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    times = [t for t, _ in result.equity]
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    top.plot(times, [v for _, v in result.equity], color="#1f6feb")
    top.set_ylabel("equity ($)")
    bottom.fill_between(times, [100 * d for d in drawdown_curve(result)], 0, color="#d1242f", alpha=0.5)
    bottom.set_ylabel("drawdown (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _polyline(values: list[float], width: int, height: int) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values))


def _svg(values: list[float], colour: str, height: int) -> str:
    if len(values) < 2:
        return "<p>not enough samples to draw</p>"
    return (
        f'<svg viewBox="0 0 800 {height}" width="100%" height="{height}" preserveAspectRatio="none">'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{_polyline(values, 800, height)}"/></svg>'
    )


def _table(rows: list[list[str]], header: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def write_html(report: dict[str, Any], result: BacktestResult, path: Path) -> None:
    """One self-contained page: inline SVG charts and tables, no scripts, no external files."""
    headline = _table([[n.replace("_", " "), shown(n, report.get(n))] for n in HEADLINE])
    groups = [
        f"<h2>{group.replace('_', ' ')}</h2>"
        + _table(
            [[key, *(shown(n, f.get(n)) for n in BREAKDOWN)] for key, f in report[group].items()],
            [group.split("_")[1], *BREAKDOWN],
        )
        for group in ("per_strategy", "per_symbol")
    ]
    rows = trade_rows(result.ledger.trades)
    trades = _table([[str(v) for v in row.values()] for row in rows], list(rows[0]) if rows else None)
    run = html.escape(json.dumps(json_ready(report["run"]), default=str))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tradebot backtest</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}svg{{border:1px solid #eee}}</style></head>
<body><h1>tradebot backtest</h1><p><code>{run}</code></p>
<h2>equity</h2>{_svg([v for _, v in result.equity], "#1f6feb", 240)}
<h2>drawdown</h2>{_svg(drawdown_curve(result), "#d1242f", 100)}
<h2>figures</h2>{headline}{"".join(groups)}<h2>trades</h2>{trades}</body></html>
"""
    path.write_text(page)
