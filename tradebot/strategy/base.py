"""The small interface every strategy implements: ticks in, signals out, state as plain data."""

from __future__ import annotations

from typing import Any, Protocol

from tradebot.common.models import Signal, Tick


class Strategy(Protocol):
    """A pure, deterministic strategy: no I/O, no clock; the same ticks always give the same signals."""

    name: str

    def on_tick(self, tick: Tick) -> list[Signal]:
        """Update the state with one tick; return the signals it triggers (usually none)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data."""
        ...

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with one taken by :meth:`snapshot`."""
        ...
