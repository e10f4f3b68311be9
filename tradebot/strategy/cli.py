"""`tradebot strategy …`: write a new strategy from the template, list them, switch them at run time."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated

import typer

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.config import Settings, load_settings
from tradebot.common.runtime import setup_logging
from tradebot.common.streams import STRATEGY_SWITCHES_KEY
from tradebot.strategy.catalog import BUILT_IN, StrategyError
from tradebot.strategy.service import book_factory, read_switches

app = typer.Typer(no_args_is_help=True)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,49}$")

TEMPLATE = '''"""{title}: a strategy of your own (docs/STRATEGIES.md, "Writing a strategy").

Run it from a strategies file:

    [[strategy]]
    name = "{name}"
    class = "{module_path}:{class_name}"
    parameters = {{ window = 20, timeframe = "1m" }}
    sizing = {{ quantity = 10 }}

or alone: tradebot backtest --strategy {module_path}:{class_name} --symbols AAPL --start … --end …
"""

from __future__ import annotations

from tradebot.strategy.base import BarStrategy, Decision, SymbolState
from tradebot.strategy.bars import Candle
from tradebot.strategy.indicators import RSI, SMA, Indicator


class {class_name}(BarStrategy):
    """BUY when the close rises above its ``window``-bar average with the RSI below 70; SELL below it.

    Parameters: ``window`` (20 bars), ``timeframe`` ("1m"; "tick" makes every tick a bar).
    """

    default_name = "{name}"

    def __init__(self, window: int = 20, *, timeframe: str = "1m", name: str | None = None):
        self.window = window
        super().__init__(timeframe=timeframe, name=name)

    def indicators(self) -> dict[str, Indicator]:
        """Fresh indicators for one symbol: their state is checkpointed for you."""
        return {{"average": SMA(self.window), "rsi": RSI(14)}}

    def decide(self, state: SymbolState, bar: Candle) -> Decision | None:
        """Called once per completed bar: update the indicators, then return (side, confidence) or None.

        Only what is known at this bar may be used: `tradebot backtest --check-lookahead` finds out.
        """
        average = state.indicators["average"].update(bar.close)  # type: ignore[attr-defined]
        rsi = state.indicators["rsi"].update(bar.close)  # type: ignore[attr-defined]
        if average is None or rsi is None:
            return None  # still warming up
        if bar.close > average and rsi < 70:
            return "buy", min(1.0, (bar.close - average) / average * 100)
        if bar.close < average:
            return "sell", min(1.0, (average - bar.close) / average * 100)
        return None
'''

TEST_TEMPLATE = '''"""{class_name} on a known series."""

from datetime import UTC, datetime, timedelta

from tradebot.common.models import Tick
from {module_path} import {class_name}


def test_it_buys_the_rise_and_sells_the_fall() -> None:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    prices = [100.0 - 0.5 * i for i in range(30)] + [95.0, 80.0]  # a slide, a jump above the average, a drop
    ticks = [Tick.create("AAPL", p, 100, start + timedelta(seconds=i), trade_id=i) for i, p in enumerate(prices)]
    strategy = {class_name}(window=20, timeframe="tick")
    signals = [signal for tick in ticks for signal in strategy.on_tick(tick)]
    assert [s.side for s in signals] == ["buy", "sell"]
'''


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="snake_case name, e.g. my_breakout")],
    folder: Annotated[Path, typer.Option(help="where to write NAME.py (and test_NAME.py)")] = Path("strategies"),
) -> None:
    """Write a working strategy from the template, with a test, ready to edit."""
    if not NAME_PATTERN.match(name) or name in BUILT_IN:
        typer.echo(f"error: {name!r}: use a new snake_case name (letters, digits, _), not a built-in one", err=True)
        raise typer.Exit(2)
    path, test_path = folder / f"{name}.py", folder / f"test_{name}.py"
    if path.exists():
        typer.echo(f"error: {path} exists: pick another name or remove it", err=True)
        raise typer.Exit(2)
    class_name = "".join(part.capitalize() for part in name.split("_"))
    values = {"name": name, "class_name": class_name, "module_path": name, "title": class_name}
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(**values))
    test_path.write_text(TEST_TEMPLATE.format(**values))
    typer.echo(f'wrote {path} and {test_path}; run it with class = "{path}:{class_name}" in a strategies file')


@app.command(name="list")
def list_strategies() -> None:
    """The strategies the strategy role runs (STRATEGIES_FILE), and the built-in classes."""
    settings = load_settings()
    try:
        book = book_factory(settings)()
    except SystemExit as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    switches = _switches(settings)
    for entry in book.entries:
        on = switches.get(entry.name, entry.spec.enabled)
        symbols = ",".join(entry.spec.symbols) if entry.spec.symbols else "all symbols"
        typer.echo(f"{entry.name:24} {'on ' if on else 'off'} {entry.spec.cls} ({symbols})")
    typer.echo(f"built-in classes: {', '.join(BUILT_IN)}")


def _switches(settings: Settings) -> dict[str, bool]:
    if not settings.redis_url:
        return {}
    return asyncio.run(_with_bus(settings, read_switches))


async def _with_bus(settings: Settings, action):  # type: ignore[no-untyped-def]
    assert settings.redis_url  # checked by the caller
    bus = Bus(connect(settings.redis_url, cluster=settings.redis_cluster))
    try:
        return await action(bus)
    finally:
        await bus.close()


def _switch(name: str, on: bool) -> None:
    settings = load_settings()
    setup_logging(settings.log_level)
    if not settings.redis_url:
        typer.echo("error: REDIS_URL is not set: switches live in the running system's Redis", err=True)
        raise typer.Exit(2)
    try:
        names = book_factory(settings)().names
    except (SystemExit, StrategyError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if name not in names:
        typer.echo(f"error: no strategy {name!r} is configured: use one of {', '.join(names)}", err=True)
        raise typer.Exit(2)

    async def write(bus: Bus) -> None:
        await bus.redis.hset(STRATEGY_SWITCHES_KEY, name, "on" if on else "off")

    asyncio.run(_with_bus(settings, write))
    typer.echo(f"{name} switched {'on' if on else 'off'} (the strategy workers follow within a second)")


@app.command()
def enable(name: Annotated[str, typer.Argument(help="a configured strategy's name")]) -> None:
    """Switch a strategy on at run time: its signals and orders are published again."""
    _switch(name, True)


@app.command()
def disable(name: Annotated[str, typer.Argument(help="a configured strategy's name")]) -> None:
    """Switch a strategy off at run time: it keeps its state warm but publishes nothing."""
    _switch(name, False)
