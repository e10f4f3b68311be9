"""`tradebot halt|reduce|resume|flatten|status`: the operator's kill switch from a shell."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings
from tradebot.common.runtime import bootstrap, infrastructure
from tradebot.risk import control

HELP = {
    "halt": "Stop all trading now: nothing new is sent (cancels still pass).",
    "reduce": "Allow only orders that shrink exposure.",
    "resume": "Back to ACTIVE (also clears a tripped daily-loss or drawdown rule).",
    "flatten": "Close every position through the risk and broker path, then stay REDUCING.",
}
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="why (kept in the audit record)")]
ActorOption = Annotated[str | None, typer.Option(help="who (default user@host)")]


T = TypeVar("T")


async def _with_bus(settings: ReadySettings, work: Callable[[Bus], Awaitable[T]]) -> T:
    bus = Bus.from_settings(settings)
    try:
        return await work(bus)
    finally:
        await bus.close()


def _run(work: Callable[[Bus], Awaitable[T]]) -> T:
    with bootstrap(log_level="WARNING") as settings, infrastructure(settings) as ready:
        return asyncio.run(_with_bus(ready, work))


def _action_command(action: str) -> Callable[..., None]:
    def command(reason: ReasonOption = "operator request", actor: ActorOption = None) -> None:
        who = actor or control.default_actor()
        try:
            event = _run(lambda bus: control.apply_action(bus, action, actor=who, reason=reason))
        except control.ControlError as error:
            raise typer.BadParameter(str(error)) from None
        typer.echo(f"trading state {event.state} (version {event.version}, {action} by {who}: {reason})")

    command.__doc__ = HELP[action]
    return command


def status() -> None:
    """Show the trading state, any tripped risk rule, and which workers have seen it."""
    typer.echo(json.dumps(_run(control.status), indent=2))


def register(app: typer.Typer) -> None:
    """Add the control commands to the `tradebot` command."""
    for action in control.ACTIONS:
        app.command(name=action, help=HELP[action])(_action_command(action))
    app.command(name="status")(status)
