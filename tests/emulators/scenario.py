"""Scenario steps shared by the WebSocket emulators.

A scenario is one ordered list of steps told across connections:

* `RejectAuth` is consumed by the next client that tries to authenticate.
* Every other step is played on the current connection once its client has subscribed.
  `Drop` and `Close` end that connection; the steps after them wait for the client to
  reconnect, authenticate and subscribe again.
* A bare `Trade`, `Bar` or dict in the list is shorthand for `Send([...])`.

Example::

    [Send([Trade("AAPL", 190.1), Trade("AAPL", 190.2)]), gate := Gate(), Drop(),
     RejectAuth(406), Send([Bar(...)]), Close(1000)]
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .events import Bar, Trade, as_event


@dataclass
class Send:
    """Send market events (only those matching the connection's subscriptions).

    `batch` puts them all in one frame, like the providers do under load; `bar_channel` picks
    Alpaca's `bars`/`updatedBars`/`dailyBars` or Polygon's `AM`/`A` (default: minute bars).
    """

    events: Sequence[Trade | Bar | Mapping[str, Any]]
    batch: bool = True
    bar_channel: str | None = None

    def __post_init__(self) -> None:
        self.events = [as_event(event) for event in self.events]


@dataclass
class SendMessages:
    """Send provider wire messages verbatim in one frame (for wrong types / missing fields)."""

    messages: Sequence[Mapping[str, Any]]


@dataclass
class SendRaw:
    """Send one frame exactly as given: bytes as a binary frame, str as a text frame."""

    payload: bytes | str


@dataclass
class SendError:
    """Send a provider error: Alpaca `{"T":"error","code":..}`, Polygon status `error`."""

    code: int = 500
    message: str | None = None


@dataclass
class Drop:
    """End the connection without a WebSocket close frame (the client sees code 1006).

    Frames already sent are still delivered. `reset=True` sends a TCP RST instead of FIN,
    which may also discard data the client has not read yet.
    """

    reset: bool = False


@dataclass
class Close:
    """Close the connection with a proper close handshake and `code` (1000 = normal)."""

    code: int = 1000
    reason: str = ""


@dataclass
class RejectAuth:
    """Answer the next authentication attempt with an error, then close that connection.

    Alpaca: `code` is sent as `{"T":"error","code":code}` (402 auth failed, 406 connection
    limit, 409 insufficient subscription...). Polygon: `auth_failed`, or `max_connections`
    when code is 406.
    """

    code: int = 402
    message: str | None = None


@dataclass(eq=False)
class Gate:
    """Pause the scenario until the test calls `gate.open()` (from any thread)."""

    _opened: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def open(self) -> None:
        """Let the scenario continue."""
        with self._lock:
            self._opened.set()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that emulator has stopped already
                loop.call_soon_threadsafe(event.set)

    @property
    def is_open(self) -> bool:
        """Whether `open()` has been called."""
        return self._opened.is_set()

    async def wait(self) -> None:
        """Wait (in the emulator's loop) until the gate is opened."""
        event = asyncio.Event()
        with self._lock:
            if self._opened.is_set():
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


Step = Send | SendMessages | SendRaw | SendError | Drop | Close | RejectAuth | Gate


def normalize(steps: Iterable[Step | Trade | Bar | Mapping[str, Any]]) -> list[Step]:
    """Wrap bare events into `Send` steps and validate the rest."""
    normalized: list[Step] = []
    for step in steps:
        if isinstance(step, (Trade, Bar, Mapping)):
            step = Send([step])
        if not isinstance(step, Step):
            raise TypeError(f"not a scenario step: {step!r}")
        normalized.append(step)
    return normalized
