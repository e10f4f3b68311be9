"""What deserves an alert, and when to say it again: pure functions and a clock-injected deduper."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from tradebot.common.models import ControlEvent, Event, Gap, OrderEvent

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Alert:
    """One message about one incident; ``key`` names the incident (repeats of it are de-duplicated)."""

    key: str
    text: str
    severity: Severity = "info"


def alerts_for(event: Event) -> list[Alert]:
    """Alerts an event on the bus calls for: fills, refused orders, trading-state changes, data gaps."""
    if isinstance(event, ControlEvent):
        severity: Severity = "info" if event.state == "ACTIVE" else "critical"
        text = f"trading {event.state} ({event.action} by {event.actor}): {event.reason}"
        return [Alert(f"control:{event.id}", text, severity)]
    if isinstance(event, Gap):
        text = (
            f"data gap: {event.source} {event.symbol} {event.timestamp:%Y-%m-%d %H:%M:%S} to {event.last:%H:%M:%S} UTC "
            f"({event.dropped} events not published; gap repair refills it from REST history)"
        )
        return [Alert(f"gap:{event.id}", text, "warning")]
    if not isinstance(event, OrderEvent):
        return []
    if event.status == "filled":
        text = f"filled: {event.side} {event.quantity:g} {event.symbol} @ {event.price:.2f}"
        return [Alert(f"fill:{event.id}", text)]
    if event.status in ("rejected", "denied"):
        text = f"order {event.status}: {event.side} {event.quantity:g} {event.symbol} ({event.reason or 'no reason'})"
        return [Alert(f"{event.status}:{event.id}", text, "warning")]
    return []


def workers_down(expected: Iterable[str], alive: Iterable[str]) -> list[Alert]:
    """A critical alert per role that was running and has no live worker now."""
    running = set(alive)
    return [
        Alert(f"worker-down:{role}", f"worker down: no live {role} worker (its heartbeat expired)", "critical")
        for role in sorted(set(expected) - running)
    ]


class Deduper:
    """One alert per incident, then a reminder every ``reminder_s`` while it lasts."""

    def __init__(self, reminder_s: float, clock: Callable[[], float]) -> None:
        self.reminder_s = reminder_s
        self.clock = clock
        self._last_sent: dict[str, float] = {}

    def due(self, alert: Alert) -> str | None:
        """The text to send now (a first alert, or a reminder), or None while it was said recently."""
        now = self.clock()
        last = self._last_sent.get(alert.key)
        if last is not None and now - last < self.reminder_s:
            return None
        self._last_sent[alert.key] = now
        return alert.text if last is None else f"still: {alert.text}"

    def resolve(self, key: str) -> bool:
        """Forget an incident that ended; True when it had been alerted."""
        return self._last_sent.pop(key, None) is not None

    def open_incidents(self, prefix: str) -> list[str]:
        """Keys of incidents alerted and not resolved, starting with ``prefix``."""
        return [key for key in self._last_sent if key.startswith(prefix)]
