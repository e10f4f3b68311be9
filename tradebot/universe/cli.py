"""`manage_symbols.py` / `tradebot symbols`: check, list, fetch, benchmark and sample the universes.

Every command resolves symbols through `tradebot.universe.resolver`, exactly as the workers do.
A configuration problem prints one `error:` line and exits with code 2.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tradebot.common.config import CONFIG_ERROR_EXIT, Settings, SettingsError, load_settings
from tradebot.universe.assets import UniverseError, refresh_assets
from tradebot.universe.cache import cache_path
from tradebot.universe.filters import FilterRules, filter_assets
from tradebot.universe.resolver import (
    SYMBOL_MODES,
    check_price_range,
    configuration_notes,
    universe_symbols,
)

# Sample name -> (what it is for, settings it changes in env.example).
SAMPLES: dict[str, tuple[str, dict[str, str]]] = {
    ".env.popular": (
        "about 100 popular large caps, the first 30 streamed live",
        {"SYMBOL_MODE": "popular", "MAX_SYMBOLS": "100", "MAX_WEBSOCKET_SYMBOLS": "30"},
    ),
    ".env.all_stocks": (
        "every active, tradable US stock (needs ALPACA_KEY/ALPACA_SECRET once a day)",
        {"SYMBOL_MODE": "all", "MAX_SYMBOLS": "10000", "MAX_WEBSOCKET_SYMBOLS": "30"},
    ),
    ".env.large_cap": (
        "about 50 of the largest US companies",
        {"SYMBOL_MODE": "large", "MAX_SYMBOLS": "50", "MAX_WEBSOCKET_SYMBOLS": "30"},
    ),
    ".env.testing": (
        "three symbols at a slow mock rate, for trying things out",
        {
            "SYMBOL_MODE": "custom",
            "SYMBOLS": "AAPL,MSFT,NVDA",
            "MAX_SYMBOLS": "3",
            "MAX_WEBSOCKET_SYMBOLS": "3",
            "MOCK_TICKS_PER_SECOND": "15",
        },
    ),
}

app = typer.Typer(help="Choose and inspect the symbol universe (SYMBOL_MODE).", no_args_is_help=True)
# soft_wrap keeps long messages on one line, so they can be grepped and copied whole.
console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def _configure_logging() -> None:
    # A no-op when the host CLI (or pytest) already configured logging.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _fail(message: str) -> typer.Exit:
    error_console.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(CONFIG_ERROR_EXIT)


@contextmanager
def _exit_on_config_error() -> Iterator[None]:
    try:
        yield
    except (UniverseError, SettingsError) as error:
        raise _fail(str(error)) from error


def _settings(ctx: typer.Context) -> Settings:
    """The host CLI may pass its Settings as the context object; otherwise read the environment."""
    if isinstance(ctx.obj, Settings):
        return ctx.obj
    with _exit_on_config_error():
        return load_settings()


@app.command("test")
def check_configuration(ctx: typer.Context) -> None:
    """Validate the symbol settings and say exactly what is wrong."""
    settings = _settings(ctx)
    for note in configuration_notes(settings):
        console.print(Text.assemble(("note: ", "yellow"), note))
    with _exit_on_config_error():
        symbols = universe_symbols(settings, settings.symbol_mode)
    traded = symbols[: settings.max_symbols]
    live = traded[: settings.max_websocket_symbols]
    console.print(
        f"OK: SYMBOL_MODE={settings.symbol_mode} resolves to {len(symbols)} symbols; "
        f"trading {len(traded)} (MAX_SYMBOLS={settings.max_symbols}), "
        f"streaming {len(live)} live (MAX_WEBSOCKET_SYMBOLS={settings.max_websocket_symbols})"
    )
    console.print(f"first symbols: {', '.join(traded[:10])}")


def _usage(position: int, settings: Settings) -> str:
    if position <= min(settings.max_symbols, settings.max_websocket_symbols):
        return "traded, live"
    return "traded" if position <= settings.max_symbols else "beyond MAX_SYMBOLS"


@app.command("list")
def list_symbols(
    ctx: typer.Context,
    mode: Annotated[str, typer.Argument(help=f"One of: {', '.join(SYMBOL_MODES)}.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many symbols to show.")] = 25,
) -> None:
    """Show the symbols of one universe in a table."""
    settings = _settings(ctx)
    mode = mode.strip().lower()
    with _exit_on_config_error():
        symbols = universe_symbols(settings, mode)
    table = Table(
        title=f"{mode} universe: {len(symbols)} symbols",
        caption=f"showing {min(limit, len(symbols))} of {len(symbols)}; caps: MAX_SYMBOLS={settings.max_symbols}, "
        f"MAX_WEBSOCKET_SYMBOLS={settings.max_websocket_symbols}",
    )
    table.add_column("#", justify="right")
    table.add_column("Symbol")
    table.add_column("With current caps")
    for position, symbol in enumerate(symbols[:limit], start=1):
        table.add_row(str(position), symbol, _usage(position, settings))
    console.print(table)


@app.command()
def fetch(ctx: typer.Context) -> None:
    """Refresh the 'all' universe from Alpaca's assets API and cache it for today."""
    settings = _settings(ctx)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with _exit_on_config_error(), Progress(*columns, console=console, transient=True) as progress:
        check_price_range(settings.min_price, settings.max_price)
        step = progress.add_task("Downloading the asset list from Alpaca…", total=None)
        snapshot = refresh_assets(settings)
        progress.update(step, description=f"Filtering {len(snapshot.assets)} assets…")
        result = filter_assets(snapshot.assets, FilterRules.from_settings(settings))
    console.print(
        f"Fetched {len(snapshot.assets)} active US equities; {len(result.symbols)} pass the filters "
        f"(include ARCA/BATS: {'yes' if settings.include_arca_bats else 'no'})."
    )
    table = Table(title="Rejected by rule")
    table.add_column("Rule")
    table.add_column("Assets", justify="right")
    for reason, count in result.rejected.most_common():
        table.add_row(reason, str(count))
    console.print(table)
    console.print(f"Cached for {snapshot.day} in {cache_path(settings.data_dir, snapshot.day)}")


def _benchmark_row(settings: Settings, mode: str) -> tuple[list[str], str | None]:
    """One table row, and the reason when the mode cannot be resolved."""
    started = time.perf_counter()
    try:
        symbols = universe_symbols(settings, mode)
    except UniverseError as error:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [mode, f"{elapsed_ms:.1f}", "-", "-", "-", "-", "see below"], str(error)
    elapsed_ms = (time.perf_counter() - started) * 1000
    traded = min(len(symbols), settings.max_symbols)
    live = min(traded, settings.max_websocket_symbols)
    ticks_per_symbol = settings.mock_ticks_per_second / traded if traded else 0.0
    note = "current" if mode == settings.symbol_mode else ""
    return [
        mode,
        f"{elapsed_ms:.1f}",
        str(len(symbols)),
        str(traded),
        f"{ticks_per_symbol:,.1f}",
        str(live),
        note,
    ], None


@app.command()
def benchmark(ctx: typer.Context) -> None:
    """Time how long each mode takes to resolve and estimate the load it puts on the system."""
    settings = _settings(ctx)
    table = Table(
        title="Symbol universes",
        caption=f"Traded: capped by MAX_SYMBOLS ({settings.max_symbols}); "
        f"Ticks/s per symbol: MOCK_TICKS_PER_SECOND ({settings.mock_ticks_per_second:g}, the total) / traded; "
        f"WS subs: live subscriptions, capped by MAX_WEBSOCKET_SYMBOLS ({settings.max_websocket_symbols})",
    )
    for header in ("Mode", "Resolve ms", "Universe", "Traded", "Ticks/s per symbol", "WS subs", "Note"):
        table.add_column(header, justify="left" if header in ("Mode", "Note") else "right")
    failures = []
    for mode in SYMBOL_MODES:
        row, failure = _benchmark_row(settings, mode)
        table.add_row(*row)
        if failure:
            failures.append(f"{mode}: {failure}")
    console.print(table)
    for failure in failures:
        console.print(Text.assemble(("unavailable ", "yellow"), failure))


def set_variable(lines: list[str], key: str, value: str) -> list[str]:
    """Set KEY in env-file lines: the live assignment(s), else the first commented example, else append."""
    live = re.compile(rf"^\s*{re.escape(key)}\s*=")
    commented = re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")
    assignment = f"{key}={value}"
    if any(live.match(line) for line in lines):
        return [assignment if live.match(line) else line for line in lines]
    for index, line in enumerate(lines):
        if commented.match(line):
            return [*lines[:index], assignment, *lines[index + 1 :]]
    return [*lines, assignment]


def render_sample(template: str, name: str, purpose: str, overrides: Mapping[str, str]) -> str:
    """env.example with the sample's settings filled in, under a header that says what it is."""
    lines = template.splitlines()
    for key, value in overrides.items():
        lines = set_variable(lines, key, value)
    header = [f"# {name}: {purpose}.", f"# Generated by `manage_symbols.py samples`; use it with: cp {name} .env", ""]
    return "\n".join(header + lines) + "\n"


@app.command()
def samples(
    template: Annotated[Path, typer.Option(help="The env.example to start from.")] = Path("env.example"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite sample files that already exist.")] = False,
) -> None:
    """Write .env.popular, .env.all_stocks, .env.large_cap and .env.testing from env.example."""
    if not template.is_file():
        raise _fail(f"{template.absolute()} not found; run from the repository root or pass --template PATH")
    text = template.read_text(encoding="utf-8")
    for name, (purpose, overrides) in SAMPLES.items():
        target = Path(name)
        if target.exists() and not force:
            console.print(f"skipped {name}: it already exists (use --force to overwrite)")
            continue
        target.write_text(render_sample(text, name, purpose, overrides), encoding="utf-8")
        console.print(f"wrote {name}: {purpose}")
