"""What every indicator shares: state as plain data, snapshot and restore."""

from __future__ import annotations

from collections import deque
from typing import Any


class Indicator:
    """Base: subclasses list their state attributes in ``_state``; deques snapshot as lists."""

    _state: tuple[str, ...] = ()

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        saved: dict[str, Any] = {}
        for name in self._state:
            value = getattr(self, name)
            if isinstance(value, Indicator):
                saved[name] = value.snapshot()
            elif isinstance(value, deque):
                saved[name] = list(value)
            else:
                saved[name] = value
        return saved

    def restore(self, saved: dict[str, Any]) -> None:
        """Replace the state with a snapshot taken from an indicator with the same parameters."""
        for name in self._state:
            current = getattr(self, name)
            if isinstance(current, Indicator):
                current.restore(saved[name])
            elif isinstance(current, deque):
                setattr(self, name, deque(saved[name], maxlen=current.maxlen))
            else:
                setattr(self, name, saved[name])


def checked_window(window: int) -> int:
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return window
