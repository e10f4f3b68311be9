"""What a backfill did per symbol, and the summary table printed at the end."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

SHOWN_SYMBOLS = 12  # a table row lists this many symbols, then "… and N more"


@dataclass
class SymbolResult:
    """Bars fetched and rows written (new or changed) for one symbol, and why it failed, if it did."""

    fetched: int = 0
    written: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """done: new bars stored; skipped: nothing new; failed: a request for it failed."""
        if self.failures:
            return "failed"
        return "done" if self.written else "skipped"

    @property
    def reason(self) -> str:
        """One line explaining the status."""
        if self.failures:
            return "; ".join(self.failures)
        if self.written:
            return f"{self.written} bars stored"
        return "already stored" if self.fetched else "no bars from the provider in the window"


@dataclass
class BackfillReport:
    """The outcome of one backfill run."""

    provider: str
    symbols: dict[str, SymbolResult]
    requests: int = 0
    retries: int = 0

    @classmethod
    def for_symbols(cls, provider: str, symbols: Iterable[str]) -> BackfillReport:
        return cls(provider, {symbol: SymbolResult() for symbol in symbols})

    def fail(self, symbols: Iterable[str], reason: str) -> None:
        """Record a failed request for each of ``symbols``."""
        for symbol in symbols:
            self.symbols[symbol].failures.append(reason)

    def by_status(self) -> dict[str, list[str]]:
        """Symbols grouped as done / skipped / failed (each list sorted)."""
        groups: dict[str, list[str]] = {"done": [], "skipped": [], "failed": []}
        for symbol, result in sorted(self.symbols.items()):
            groups[result.status].append(symbol)
        return groups

    @property
    def written(self) -> int:
        return sum(result.written for result in self.symbols.values())

    @property
    def failed(self) -> bool:
        return any(result.failures for result in self.symbols.values())


def _listed(symbols: list[str]) -> str:
    shown = ", ".join(symbols[:SHOWN_SYMBOLS])
    return shown + (f" … and {len(symbols) - SHOWN_SYMBOLS} more" if len(symbols) > SHOWN_SYMBOLS else "")


def summary_table(report: BackfillReport) -> Table:
    """Done / skipped / failed: how many symbols, which, and the bars written."""
    table = Table(
        title=f"{report.provider} backfill",
        caption=f"{report.written} bars stored · {report.requests} requests · {report.retries} retries",
    )
    for column in ("outcome", "symbols", "bars stored", "which"):
        table.add_column(column, justify="right" if column in ("symbols", "bars stored") else "left")
    for status, symbols in report.by_status().items():
        written = sum(report.symbols[symbol].written for symbol in symbols)
        table.add_row(status, str(len(symbols)), str(written), _listed(symbols) or "-")
    return table


def failure_table(report: BackfillReport) -> Table | None:
    """One row per failed or skipped symbol with its reason (None when there are none)."""
    rows = [(symbol, result) for symbol, result in sorted(report.symbols.items()) if result.status != "done"]
    if not rows:
        return None
    table = Table(title="not stored, and why")
    table.add_column("symbol")
    table.add_column("outcome")
    table.add_column("reason")
    for symbol, result in rows:
        table.add_row(symbol, result.status, result.reason)
    return table


def print_report(report: BackfillReport, console: Console) -> None:
    """The summary, then the reasons."""
    console.print(summary_table(report))
    reasons = failure_table(report)
    if reasons is not None:
        console.print(reasons)
