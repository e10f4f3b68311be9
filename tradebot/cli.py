"""The `tradebot` command: it only parses, sets up logging and dispatches."""

from __future__ import annotations

from typing import Annotated

import typer

from tradebot.backfill.cli import app as backfill_app
from tradebot.backtest.cli import backtest_command, replay_command
from tradebot.backtest.optimize_cli import optimize_command
from tradebot.common.config import redact_url
from tradebot.common.runtime import bootstrap, infrastructure
from tradebot.common.streams import Role
from tradebot.dlq.cli import app as dlq_app
from tradebot.maintenance.cli import app as data_app
from tradebot.risk.cli import register as register_control
from tradebot.roles import DEFAULT_UP, ROLES, UnknownRoleError, module_for, run_role
from tradebot.strategy.cli import app as strategy_app
from tradebot.universe.cli import app as symbols_app

app = typer.Typer(
    help="Event-driven trading bot for US equities.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(symbols_app, name="symbols", help="Inspect and manage the symbol universe.")
register_control(app)  # halt, reduce, resume, flatten, status
app.add_typer(strategy_app, name="strategy", help="New strategies from a template; list and switch them at run time.")
app.add_typer(backfill_app, name="backfill", help="Fetch historical bars from Alpaca or Polygon into the database.")

app.add_typer(dlq_app, name="dlq", help="Dead letters: list, show, replay (same event ids) and drop.")
app.add_typer(data_app, name="data", help="Manage stored market data by source (e.g. drop the mock data).")
app.command(name="backtest", help="Backtest strategies over stored ticks or bars (docs/STRATEGIES.md).")(
    backtest_command
)
app.command(name="replay", help="Stored ticks through the real workers in a Redis database of their own.")(
    replay_command
)
app.command(name="optimize", help="Search strategy parameters: grid or random, parallel, walk-forward.")(
    optimize_command
)


# The benchmark needs dev-only packages (httpx): imported when run, so the image's roles never load it.
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """Measure throughput, latency, ingest, /history and memory (docs/BENCHMARKS.md)."""
    try:
        from tradebot.bench.cli import app as bench_app
    except ModuleNotFoundError as error:  # e.g. the docker image
        message = f"tradebot bench needs {error.name}, a dev dependency: pip install -r requirements-dev.txt"
        raise SystemExit(message) from None

    bench_app(ctx.args, prog_name="tradebot bench")


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
        if scale[role] < 0 or (role == Role.API and scale[role] > 1):
            raise typer.BadParameter(f"--scale {value}: use 0..N (the API binds one port: at most 1)")
    return {role: count for role, count in scale.items() if count > 0}


@app.command()
def up(scale: Annotated[list[str], typer.Option(help="ROLE=N, repeatable, e.g. strategy=3")] = []) -> None:  # noqa: B006
    """Run the whole system: servers (embedded when URLs are unset), migrations, workers and the API."""
    from tradebot.supervisor import up as run_up

    scaled = parse_scale(scale)
    with bootstrap() as settings:  # run_up starts the servers itself
        raise typer.Exit(run_up(settings, scaled))


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

    if mode and mode not in ("timescaledb", "postgresql"):
        raise typer.BadParameter("--mode must be timescaledb or postgresql")
    with bootstrap() as settings:
        options = TimescaleOptions.from_settings(settings)
        if mode:
            typer.echo("\n\n".join(render_ddl(mode, options)))  # type: ignore[arg-type]
            return
        with infrastructure(settings) as ready:
            statements = apply_migrations(ready.database_url, dry_run=dry_run, options=options)
    typer.echo("\n\n".join(statements) if statements else "-- nothing to apply: the schema is up to date")


@app.command()
def servers() -> None:
    """Run only the embedded Redis and PostgreSQL until Ctrl-C (for debugging workers one by one)."""
    import signal

    with bootstrap() as settings, infrastructure(settings) as ready:
        typer.echo(
            f"REDIS_URL={_shareable(settings.redis_url, ready.redis_url)}\n"
            f"DATABASE_URL={_shareable(settings.database_url, ready.database_url)}\n(Ctrl-C stops them)"
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


@app.command()
def activity(
    from_start: Annotated[
        bool, typer.Option("--from-start", help="begin with what the streams still hold, not only new events")
    ] = False,
    max_events: Annotated[int | None, typer.Option(min=1, help="stop after this many lines")] = None,
) -> None:
    """Print signals, orders and fills as they happen, one line each, until Ctrl-C (alias: tail)."""
    from tradebot.monitor.tail import watch

    with bootstrap() as settings, infrastructure(settings) as ready:
        typer.echo(
            f"following signals, orders and fills on {_shareable(settings.redis_url, ready.redis_url)} (Ctrl-C stops)"
        )
        watch(ready, lambda line: typer.echo(line), from_start=from_start, max_events=max_events)


app.command(name="tail", help="Same as `tradebot activity`.")(activity)


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation (for scripts)")] = False,
    keep_history: Annotated[bool, typer.Option("--keep-history", help="keep the ticks and bars")] = False,
) -> None:
    """Start over: delete the paper account, streams, strategy and feed state, signals, orders and fills
    (and, without --keep-history, the ticks and bars). Stop tradebot first."""
    from tradebot.maintenance.reset import ResetPlan, StillRunningError, run_reset

    def confirm(plan: ResetPlan) -> bool:
        typer.echo("tradebot reset deletes:\n" + plan.describe())
        if keep_history:
            typer.echo("  kept:       ticks and bars (--keep-history)")
        return yes or typer.confirm("Delete all of this?", default=False)

    with bootstrap() as settings, infrastructure(settings) as ready:
        try:
            done = run_reset(ready.redis_url, ready.database_url, keep_history=keep_history, confirm=confirm)
        except StillRunningError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    if not done:
        typer.echo("nothing deleted")
        raise typer.Exit(1)
    typer.echo("reset done: the next `tradebot up` starts from STARTING_CASH with the current settings")


def _shareable(given: str | None, resolved: str | None) -> str:
    """An embedded server's URL in full (it has no secret); a URL the user gave, redacted."""
    return redact_url(resolved) if given else resolved or "-"


if __name__ == "__main__":
    app()
