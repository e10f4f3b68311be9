"""`tradebot backtest`: parse, load settings, dispatch to the importable backtest; bad input exits 2."""

from __future__ import annotations

import asyncio
import math
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tradebot.backtest.data import BacktestInputError
from tradebot.backtest.run import BacktestOutcome, BacktestRequest, backtest
from tradebot.common.config import ReadySettings, Settings, load_settings
from tradebot.common.db import create_pool
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.providers.base import BarSource
from tradebot.strategy.book import Sizing, StrategySpec, read_strategies_file
from tradebot.strategy.catalog import StrategyError
from tradebot.strategy.service import strategy_specs

BAD_INPUT_EXIT = 2


def fail(message: str) -> typer.Exit:
    """One line on stderr saying what to fix; the caller raises the returned Exit (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(BAD_INPUT_EXIT)


def parse_time(value: str, option: str) -> datetime:
    """``2024-01-02`` or an ISO timestamp; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} {value!r} is not a date or ISO timestamp (e.g. 2024-01-02 or 2024-01-02T14:30)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_parameters(values: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are TOML literals (5, 2.5, true, [1, 2]) or else plain text."""
    parameters: dict[str, Any] = {}
    for value in values:
        key, sep, literal = value.partition("=")
        if not sep or not key.strip():
            raise fail(f"--param {value!r}: use NAME=VALUE, e.g. --param short_window=10")
        try:
            parameters[key.strip()] = tomllib.loads(f"v = {literal}")["v"]
        except tomllib.TOMLDecodeError:
            parameters[key.strip()] = literal
    return parameters


def choose_specs(
    settings: Settings, strategies_file: Path | None, strategy: str | None, params: list[str], quantity: float
) -> tuple[StrategySpec, ...]:
    """--strategies FILE, or one --strategy CLASS with --param, or what the strategy role runs."""
    try:
        if strategies_file is not None:
            return tuple(read_strategies_file(strategies_file))
        if strategy is not None:
            return (StrategySpec(None, strategy, parse_parameters(params), sizing=Sizing(quantity=quantity)),)
        return tuple(strategy_specs(settings))
    except StrategyError as error:
        raise fail(str(error)) from None


def backtest_command(
    symbols: Annotated[str, typer.Option(help="comma-separated, e.g. AAPL,MSFT")],
    start: Annotated[str, typer.Option(help="first day or instant (UTC unless a zone is given)")],
    end: Annotated[str, typer.Option(help="end, exclusive")],
    strategies: Annotated[Path | None, typer.Option("--strategies", help="a strategies file (TOML)")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="one strategy class, e.g. rsi_reversion or pkg.mod:Class")
    ] = None,
    param: Annotated[list[str], typer.Option(help="NAME=VALUE for --strategy, repeatable")] = [],  # noqa: B006
    quantity: Annotated[float, typer.Option(help="shares per order for --strategy")] = 10.0,
    bars: Annotated[str | None, typer.Option(help="run on stored bars of this timeframe instead of ticks")] = None,
    sample: Annotated[str, typer.Option(help="equity sampling: 1m, 5m, 15m, 1h or 1d")] = "1m",
    out: Annotated[
        Path | None, typer.Option(help="folder for report.json, trades.csv, equity.png, report.html")
    ] = None,
    store: Annotated[bool, typer.Option(help="store the run in the database")] = True,
    check_lookahead: Annotated[
        bool, typer.Option("--check-lookahead", help="re-run on data cut at each signal")
    ] = False,
    backfill: Annotated[str | None, typer.Option(help="fetch the --bars from alpaca or polygon first")] = None,
) -> None:
    """Backtest strategies over stored ticks or bars through the live strategy and paper-broker classes."""
    settings = load_settings()
    setup_logging(settings.log_level)
    specs = choose_specs(settings, strategies, strategy, param, quantity)
    names = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    try:
        request = BacktestRequest.from_settings(
            settings, symbols=names, start=parse_time(start, "--start"), end=parse_time(end, "--end"),
            specs=specs, bars=bars, sample=sample,
        )  # fmt: skip
        request.book()
        source = bar_source(settings, backfill, bars) if backfill else None
        with infrastructure(settings) as ready:
            if source is not None:
                asyncio.run(backfill_range(ready, source, request))
            outcome = asyncio.run(_run(ready, request, store=store, check_lookahead=check_lookahead))
    except (BacktestInputError, StrategyError, ValueError) as error:
        raise fail(str(error)) from None
    _show(outcome, out)


def bar_source(settings: Settings, provider: str, bars: str | None) -> BarSource:
    """The backfill source for ``--backfill``; missing keys stop here with the backfill's own line."""
    if bars not in ("1m", "1h", "1d"):
        raise fail("--backfill fetches bars: pass --bars 1m, 1h or 1d")
    if provider == "alpaca":
        from tradebot.providers.alpaca import AlpacaBars

        return AlpacaBars(settings)
    if provider == "polygon":
        from tradebot.providers.polygon import PolygonBars

        return PolygonBars(settings)
    raise fail(f"--backfill {provider!r}: use alpaca or polygon")


async def backfill_range(settings: ReadySettings, source: BarSource, request: BacktestRequest) -> None:
    """Fetch what is missing of the request's bars, for its symbols, up to its end."""
    from tradebot.backfill.runner import BackfillOptions
    from tradebot.backfill.runner import backfill as run_backfill
    from tradebot.providers.base import FatalError

    days = max(1, math.ceil((request.end - request.start).total_seconds() / 86_400))
    options = BackfillOptions(timeframes=(request.bars,), days=days, minute_days=days, symbols=request.symbols)  # type: ignore[arg-type]
    try:
        report = await run_backfill(settings, source, options, now=request.end, console=Console(stderr=True))
    except FatalError as error:
        raise BacktestInputError(f"backfill stopped: {error}") from None
    if report.failed:
        raise BacktestInputError(f"backfill failed for {', '.join(report.by_status()['failed'])}: see its log")


async def _run(settings: Settings, request: BacktestRequest, *, store: bool, check_lookahead: bool) -> BacktestOutcome:
    from tradebot.backtest.lookahead import check_lookahead as find_lookahead
    from tradebot.backtest.report import chart_data
    from tradebot.backtest.run import load_observations, simulate
    from tradebot.backtest.store import save_run
    from tradebot.storage.schema import apply_migrations

    assert settings.database_url
    await apply_migrations(settings.database_url)
    pool = await create_pool(settings.database_url, max_size=2, application_name="tradebot-backtest")
    try:
        if not check_lookahead:
            outcome = await backtest(pool, request)
        else:
            observations = await load_observations(pool, request)
            outcome = simulate(request, observations)
            outcome.report["lookahead"] = find_lookahead(request, observations, outcome.result.signals)
        if store:
            await save_run(pool, outcome.report, chart_data(outcome.result))
        return outcome
    finally:
        await pool.close()


def _show(outcome: BacktestOutcome, out: Path | None) -> None:
    from tradebot.backtest.output import print_report, write_html, write_json, write_png, write_trades_csv

    print_report(outcome.report)
    lookahead = outcome.report.get("lookahead")
    if lookahead is not None:
        changed = lookahead["changed"]
        typer.echo(f"look-ahead check: {len(changed)} of {lookahead['checked']} signals change when the data is cut")
        for item in changed:
            typer.echo(f"  {item['strategy']} {item['symbol']} {item['side']} at {item['tick_id']}: {item['why']}")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(outcome.report, out / "report.json")
    write_trades_csv(outcome.result, out / "trades.csv")
    write_html(outcome.report, outcome.result, out / "report.html")
    try:
        write_png(outcome.result, out / "equity.png")
    except ImportError:
        typer.echo("equity.png skipped: install matplotlib to draw it", err=True)
    typer.echo(f"wrote {out}/report.json, trades.csv, report.html and equity.png")


def replay_command(
    symbols: Annotated[str, typer.Option(help="comma-separated, e.g. AAPL,MSFT")],
    start: Annotated[str, typer.Option(help="first day or instant (UTC unless a zone is given)")],
    end: Annotated[str, typer.Option(help="end, exclusive")],
    redis_db: Annotated[int, typer.Option(help="the Redis logical database the replay runs in (not the live one)")] = 1,
    flush: Annotated[bool, typer.Option(help="empty that database first")] = False,
) -> None:
    """Publish stored ticks through the real strategy and execution workers, and compare with a backtest."""
    from tradebot.backtest.replay import ReplayError, differences, replay
    from tradebot.backtest.run import simulate

    settings = load_settings()
    setup_logging(settings.log_level)
    names = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    request = BacktestRequest.from_settings(
        settings, symbols=names, start=parse_time(start, "--start"), end=parse_time(end, "--end"),
        specs=tuple(choose_specs(settings, None, None, [], 0)),
    )  # fmt: skip
    if redis_db == 0:
        raise fail("--redis-db 0 is where the live system runs: pick another logical database")
    try:
        request.book()
        with infrastructure(settings) as ready:
            ticks = asyncio.run(stored_ticks(ready, request))
            replayed = asyncio.run(replay(ready, ticks, database=redis_db, flush=flush))
    except (BacktestInputError, StrategyError, ReplayError, ValueError) as error:
        raise fail(str(error)) from None
    tested = simulate(request, ticks).result
    typer.echo(
        f"replayed {len(ticks):,} ticks in Redis database {redis_db}: {len(replayed.signals):,} signals, "
        f"{len(replayed.orders):,} orders, {len(replayed.events):,} order events"
    )
    found = differences(replayed, tested.signals, tested.orders, tested.events)
    typer.echo("parity with the backtest: identical" if not found else "parity with the backtest: DIFFERENT")
    for line in found:
        typer.echo(f"  {line}")
    if found:
        raise typer.Exit(1)


async def stored_ticks(settings: Settings, request: BacktestRequest) -> Sequence[Any]:
    from tradebot.backtest.data import load_ticks

    assert settings.database_url
    pool = await create_pool(settings.database_url, max_size=2, application_name="tradebot-replay")
    try:
        return await load_ticks(pool, request.symbols, request.start, request.end)
    finally:
        await pool.close()
