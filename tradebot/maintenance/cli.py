"""``tradebot data …``: manage stored market data by source."""

from __future__ import annotations

from typing import Annotated

import typer

from tradebot.common.config import load_settings
from tradebot.common.runtime import infrastructure, setup_logging

app = typer.Typer(no_args_is_help=True)


@app.command()
def drop(
    source: Annotated[str, typer.Option(help="the source to remove, e.g. mock (see /symbols)")],
    symbol: Annotated[str | None, typer.Option(help="only this symbol")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete the ticks and bars of one source (other sources, signals, orders and fills stay)."""
    from tradebot.maintenance.sources import run_drop

    settings = load_settings()
    setup_logging(settings.log_level)
    chosen = symbol.upper() if symbol else None
    what = f"source {source!r}" + (f" for {chosen}" if chosen else "")

    def confirm(counts: dict[str, int]) -> bool:
        typer.echo(f"{what}: {counts['ticks']:,} ticks and {counts['bars']:,} bars stored")
        return yes or typer.confirm("Delete them?", default=False)

    with infrastructure(settings) as ready:
        deleted = run_drop(ready.database_url or "", source.lower(), chosen, confirm)
    if deleted is None:
        typer.echo("nothing deleted")
        raise typer.Exit(1)
    typer.echo(f"deleted {deleted['ticks']:,} ticks and {deleted['bars']:,} bars of {what}")
