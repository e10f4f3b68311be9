"""``tradebot backfill [alpaca|polygon] [options]``: parse, then hand over to the runner.

Without a subcommand it runs the Alpaca backfill. Options default to the settings
(BACKFILL_DAYS, BACKFILL_MINUTE_DAYS, the SYMBOL_MODE universe). ``backfill_command`` is the one
command behind this and the ``python -m tradebot.backfill.<provider>`` entry points.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from tradebot.backfill.report import print_report
from tradebot.backfill.runner import DEFAULT_TIMEFRAMES, BackfillOptions, backfill
from tradebot.common.config import Settings
from tradebot.common.models import SYMBOL_PATTERN
from tradebot.common.runtime import bootstrap, infrastructure
from tradebot.providers.base import BarSource, FatalError

TIMEFRAME_CHOICES = ("1d", "1h", "15m", "5m", "1m")

Days = Annotated[int | None, typer.Option("--days", min=0, help="daily bars for the last N days [BACKFILL_DAYS]")]
MinuteDays = Annotated[
    int | None,
    typer.Option(
        "--minute-days", min=0, help="intraday (1m/5m/15m/1h) bars for the last N days [BACKFILL_MINUTE_DAYS]"
    ),
]
Timeframes = Annotated[str, typer.Option("--timeframes", help=f"comma-separated, from: {','.join(TIMEFRAME_CHOICES)}")]
Symbols = Annotated[
    str | None,
    typer.Option("--symbols", help="comma-separated tickers instead of the SYMBOL_MODE universe, e.g. AAPL,MSFT"),
]

app = typer.Typer(
    help="Fetch historical bars into the database: resumable, idempotent, with progress.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)


def parse_options(days: int | None, minute_days: int | None, timeframes: str, symbols: str | None) -> BackfillOptions:
    """Options from the command line, or a usage error that says what to fix."""
    chosen = tuple(dict.fromkeys(part.strip() for part in timeframes.split(",") if part.strip()))
    unknown = [timeframe for timeframe in chosen if timeframe not in TIMEFRAME_CHOICES]
    if unknown or not chosen:
        raise typer.BadParameter(f"--timeframes: use some of {','.join(TIMEFRAME_CHOICES)} (got {timeframes!r})")
    tickers = None
    if symbols is not None:
        tickers = tuple(dict.fromkeys(part.strip().upper() for part in symbols.split(",") if part.strip()))
        bad = [ticker for ticker in tickers if not re.fullmatch(SYMBOL_PATTERN, ticker)]
        if bad or not tickers:
            raise typer.BadParameter(f"--symbols: give tickers like AAPL,MSFT (bad: {', '.join(bad) or 'none given'})")
    return BackfillOptions(timeframes=chosen, days=days, minute_days=minute_days, symbols=tickers)  # type: ignore[arg-type]


def backfill_command(
    make_source: Callable[[Settings], BarSource], options: BackfillOptions, console: Console | None = None
) -> int:
    """Load settings, run one backfill with a progress bar, print the summary; returns the exit code."""
    console = console or Console()
    with bootstrap() as settings:
        source = make_source(settings)  # missing keys stop here (exit 78), before any server starts
        with infrastructure(settings) as ready:
            try:
                report = asyncio.run(backfill(ready, source, options, console=console))
            except FatalError as error:
                print(f"backfill stopped: {error}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("backfill interrupted: what was stored is kept; run it again to resume", file=sys.stderr)
                return 130
    print_report(report, console)
    return 1 if report.failed else 0


def _run(make_source: Callable[[Settings], BarSource], options: BackfillOptions) -> None:
    raise typer.Exit(backfill_command(make_source, options))


# The provider modules are imported only when their backfill runs: `tradebot --help` stays fast.
def _alpaca(settings: Settings) -> BarSource:
    from tradebot.providers.alpaca import AlpacaBars

    return AlpacaBars(settings)


def _polygon(settings: Settings) -> BarSource:
    from tradebot.providers.polygon import PolygonBars

    return PolygonBars(settings)


@app.callback()
def default(
    ctx: typer.Context,
    days: Days = None,
    minute_days: MinuteDays = None,
    timeframes: Timeframes = ",".join(DEFAULT_TIMEFRAMES),
    symbols: Symbols = None,
) -> None:
    """Without a subcommand: the Alpaca backfill."""
    if ctx.invoked_subcommand is None:
        _run(_alpaca, parse_options(days, minute_days, timeframes, symbols))


@app.command()
def alpaca(
    days: Days = None,
    minute_days: MinuteDays = None,
    timeframes: Timeframes = ",".join(DEFAULT_TIMEFRAMES),
    symbols: Symbols = None,
) -> None:
    """Alpaca historical bars (ALPACA_KEY, ALPACA_SECRET; ALPACA_FEED)."""
    _run(_alpaca, parse_options(days, minute_days, timeframes, symbols))


@app.command()
def polygon(
    days: Days = None,
    minute_days: MinuteDays = None,
    timeframes: Timeframes = ",".join(DEFAULT_TIMEFRAMES),
    symbols: Symbols = None,
) -> None:
    """Polygon aggregates (POLYGON_API_KEY)."""
    _run(_polygon, parse_options(days, minute_days, timeframes, symbols))
