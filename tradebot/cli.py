"""The `tradebot` command: it only parses, sets up logging and dispatches."""

from __future__ import annotations

from typing import Annotated

import typer

from tradebot.backfill.cli import app as backfill_app
from tradebot.backtest.cli import backtest_command, replay_command
from tradebot.backtest.optimize_cli import optimize_command
from tradebot.bench.cli import bench_command
from tradebot.common.config import load_settings, redact_url
from tradebot.common.runtime import infrastructure, setup_logging
from tradebot.roles import DEFAULT_UP, ROLES, UnknownRoleError, module_for, run_role
from tradebot.strategy.cli import app as strategy_app
from tradebot.universe.cli import app as symbols_app

app = typer.Typer(
    help="Event-driven trading bot for US equities.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(symbols_app, name="symbols", help="Inspect and manage the symbol universe.")
app.add_typer(strategy_app, name="strategy", help="New strategies from a template; list and switch them at run time.")
app.add_typer(backfill_app, name="backfill", help="Fetch historical bars from Alpaca or Polygon into the database.")
app.command(name="backtest", help="Backtest strategies over stored ticks or bars (docs/STRATEGIES.md).")(
    backtest_command
)
app.command(name="replay", help="Stored ticks through the real workers in a Redis database of their own.")(
    replay_command
)
app.command(name="optimize", help="Search strategy parameters: grid or random, parallel, walk-forward.")(
    optimize_command
)
app.command(name="bench", help="Measure throughput, latency, ingest, /history and memory (docs/BENCHMARKS.md).")(
    bench_command
)


def parse_scale(values: list[str]) -> dict[str, int]:
    """``["strategy=3", "storage=2"]`` on top of the default process set."""
    scale = dict(DEFAULT_UP)
    for value in values:
        role, _, count = value.partition("=")
        try:
            module_for(role)
            scale[role] = int(count)
        except (UnknownRoleError, ValueError) as error:
            detail = str(error) if isinstance(error, UnknownRoleError) else f"count must be a whole number: {value!r}"
            raise typer.BadParameter(f"--scale ROLE=N: {detail}") from None
        if scale[role] < 0 or (role == "api" and scale[role] > 1):
            raise typer.BadParameter(f"--scale {value}: use 0..N (the API binds one port: at most 1)")
    return {role: count for role, count in scale.items() if count > 0}


@app.command()
def up(scale: Annotated[list[str], typer.Option(help="ROLE=N, repeatable, e.g. strategy=3")] = []) -> None:  # noqa: B006
    """Run the whole system: servers (embedded when URLs are unset), migrations, workers and the API."""
    from tradebot.supervisor import up as run_up

    settings = load_settings()
    setup_logging(settings.log_level)
    raise typer.Exit(run_up(settings, parse_scale(scale)))


@app.command()
def worker(role: Annotated[str, typer.Argument(help=f"one of: {', '.join(ROLES)}")]) -> None:
    """Run one worker in this process (as docker compose and VS Code do)."""
    try:
        module_for(role)
    except UnknownRoleError as error:
        raise typer.BadParameter(str(error)) from None
    run_role(role)


@app.command()
def migrate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the DDL instead of applying it")] = False,
    mode: Annotated[
        str | None, typer.Option(help="print the full DDL of timescaledb or postgresql, without a database")
    ] = None,
) -> None:
    """Apply the database migrations (safe to run twice, and from two processes at once)."""
    from tradebot.storage.schema import migrate as apply_migrations
    from tradebot.storage.schema import render_ddl
    from tradebot.storage.timescale import TimescaleOptions

    settings = load_settings()
    setup_logging(settings.log_level)
    options = TimescaleOptions.from_settings(settings)
    if mode:
        if mode not in ("timescaledb", "postgresql"):
            raise typer.BadParameter("--mode must be timescaledb or postgresql")
        typer.echo("\n\n".join(render_ddl(mode, options)))  # type: ignore[arg-type]
        return
    with infrastructure(settings) as ready:
        statements = apply_migrations(ready.database_url or "", dry_run=dry_run, options=options)
    typer.echo("\n\n".join(statements) if statements else "-- nothing to apply: the schema is up to date")


@app.command()
def servers() -> None:
    """Run only the embedded Redis and PostgreSQL until Ctrl-C (for debugging workers one by one)."""
    import signal

    settings = load_settings()
    setup_logging(settings.log_level)
    with infrastructure(settings) as ready:
        typer.echo(
            f"REDIS_URL={_shareable(settings.redis_url, ready.redis_url)}\n"
            f"DATABASE_URL={_shareable(settings.database_url, ready.database_url)}\n(Ctrl-C stops them)"
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


def _shareable(given: str | None, resolved: str | None) -> str:
    """An embedded server's URL in full (it has no secret); a URL the user gave, redacted."""
    return redact_url(resolved) if given else resolved or "-"


if __name__ == "__main__":
    app()
