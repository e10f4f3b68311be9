"""Benchmark figures: each one a value, its unit and the method that produced it; a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

TABLE_WIDTH = 160


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (inclusive method), in the samples' unit."""
    return statistics.quantiles(samples, n=100, method="inclusive")[round(fraction * 100) - 1]


@dataclass(frozen=True)
class Figure:
    """One measured number and how it was measured."""

    section: str
    name: str
    value: float | None  # None: not measured (the detail says why)
    unit: str
    method: str
    detail: dict[str, Any] = field(default_factory=dict)

    def shown(self) -> str:
        """The value for a person: thousands separators, sensible precision."""
        if self.value is None:
            return "n/a"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f}"
        return f"{self.value:,.2f}" if abs(self.value) < 10 else f"{self.value:,.1f}"


def describe_machine() -> dict[str, Any]:
    """What the figures depend on besides the code."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


@dataclass
class Report:
    """Every figure of one run, with what a reader needs to compare runs."""

    figures: list[Figure] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    meta: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=describe_machine)

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        ended = {"load_average_at_end": [round(load, 2) for load in os.getloadavg()]}
        return {
            "started_at": self.started_at,
            "machine": {**self.machine, **ended},
            **self.meta,
            "figures": [asdict(figure) for figure in self.figures],
        }

    def write(self, path: Path) -> None:
        """Write the JSON report (the table is for people, this is for programs)."""
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")


def table(report: Report) -> Table:
    """The figures as a rich table, grouped by section, with the method of each."""
    view = Table(title=f"tradebot bench ({report.started_at})", show_lines=False, expand=False)
    view.add_column("section", style="bold")
    view.add_column("figure")
    view.add_column("value", justify="right", style="cyan", no_wrap=True)
    view.add_column("unit", no_wrap=True)
    view.add_column("method (〃 = as above)", overflow="fold", max_width=90)
    previous = Figure("", "", None, "", "")
    for figure in report.figures:
        new_section = figure.section != previous.section
        method = figure.method if new_section or figure.method != previous.method else "〃"
        view.add_row(
            figure.section if new_section else "", figure.name, figure.shown(), figure.unit, method, end_section=False
        )
        previous = figure
    return view


def print_report(report: Report) -> None:
    """Print the table, at least 160 columns wide so the method column stays readable when piped."""
    Console(width=max(TABLE_WIDTH, Console().width)).print(table(report))
