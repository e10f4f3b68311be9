"""What the time-based checks remember: recent orders (rates, duplicates) and losses (protections).

Times are epoch seconds of event time. A rate limit of N per window lets the N-th order in any
window through and denies the next; a window is half-open, (t - length, t].
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from tradebot.risk import reasons
from tradebot.risk.limits import RiskLimits

Denial = tuple[str, str]
SECOND, MINUTE = 1.0, 60.0


def _count_since(times: deque[float], start: float) -> int:
    """Drop entries at or before ``start`` (they left the window) and count the rest."""
    while times and times[0] <= start:
        times.popleft()
    return len(times)


class SendTimes:
    """Times of sends as recorded, trimmed from the oldest end. They are event times, not always
    ascending (orders of several partitions come interleaved), so "sends in the last second" is the
    count from the newest end back to the first time at or before the window's start.

    ``count_after`` gives that count without walking the second's sends (up to the per-second
    limit's, on every order): beside the times it keeps their suffix minima (each time smaller than
    every time recorded after it; ascending), one of which is always the last time at or before a
    given start, found by bisection. Appending and trimming are O(1) amortised."""

    def __init__(self, times: Iterable[float] = ()) -> None:
        self.times: deque[float] = deque()
        self._recorded = 0  # times ever appended: numbers them
        self._minima: deque[float] = deque()
        self._minima_numbers: deque[int] = deque()
        for at in times:
            self.append(at)

    def __len__(self) -> int:
        return len(self.times)

    def __iter__(self) -> Iterator[float]:
        return iter(self.times)

    def append(self, at: float) -> None:
        minima = self._minima
        while minima and minima[-1] >= at:
            minima.pop()
            self._minima_numbers.pop()
        minima.append(at)
        self._minima_numbers.append(self._recorded)
        self._recorded += 1
        self.times.append(at)

    def count_since(self, start: float) -> int:
        """Drop the oldest times while at or before ``start`` (they left the window); count the rest."""
        times, numbers = self.times, self._minima_numbers
        while times and times[0] <= start:
            if numbers[0] == self._recorded - len(times):  # the oldest time was a minimum: it goes too
                self._minima.popleft()
                numbers.popleft()
            times.popleft()
        return len(times)

    def count_after(self, start: float) -> int:
        """Times after the last one at or before ``start`` (all of them if none is)."""
        at_or_before = bisect_right(self._minima, start)
        if not at_or_before:
            return len(self.times)
        return self._recorded - 1 - self._minima_numbers[at_or_before - 1]


class RateWindows:
    """Sent-order times overall and per symbol, last send per (symbol, side), losses and locks."""

    def __init__(self) -> None:
        self.sent = SendTimes()  # the last minute of sends, all symbols
        self.sends = 0  # sends ever recorded: numbers the entries of ``sent`` (checkpoint parts)
        self.sent_by_symbol: dict[str, SendTimes] = {}
        self.last_by_side: dict[str, float] = {}  # "SYMBOL:side" -> time of the last send
        self.cooldown_until: dict[str, float] = {}
        self.losses: deque[float] = deque()
        self.locked_until = 0.0

    def throttle(self, symbol: str, side: str, at: float, limits: RiskLimits, duplicates: bool = True) -> Denial | None:
        """Duplicate-order and rate checks for one order at ``at``."""
        last = self.last_by_side.get(f"{symbol}:{side}", -math.inf)
        # an order of the other side sent since makes it a new round trip (buy, sell, buy), not a repeat
        other = self.last_by_side.get(f"{symbol}:{'sell' if side == 'buy' else 'buy'}", -math.inf)
        if duplicates and limits.duplicate_window_s and other <= last and at - last < limits.duplicate_window_s:
            return reasons.DUPLICATE_ORDER, (
                f"{side} {symbol} again {at - last:.3f}s after the last one; RISK_DUPLICATE_WINDOW_S is "
                f"{limits.duplicate_window_s:g}"
            )
        mine = self.sent_by_symbol.get(symbol) or SendTimes()
        for times, per_second, per_minute, codes, scope in (
            (self.sent, limits.max_orders_per_second, limits.max_orders_per_minute, _OVERALL, "all symbols"),
            (mine, limits.max_symbol_orders_per_second, limits.max_symbol_orders_per_minute, _SYMBOL, symbol),
        ):
            in_minute = times.count_since(at - MINUTE)
            if per_minute and in_minute >= per_minute:
                return codes[1], f"{in_minute} orders for {scope} in the last minute; the limit is {per_minute}"
            in_second = times.count_after(at - SECOND) if per_second else 0
            if per_second and in_second >= per_second:
                return codes[0], f"{in_second} orders for {scope} in the last second; the limit is {per_second}"
        return None

    def protection(self, symbol: str, at: float) -> Denial | None:
        """Freqtrade-style protections on buys: a cooldown after a losing close, a lock after N losses."""
        if at < self.locked_until:
            return reasons.LOSS_LOCK, f"buying is locked until {self.locked_until:.0f} after repeated losing trades"
        until = self.cooldown_until.get(symbol, 0.0)
        if at < until:
            return reasons.COOLDOWN, f"{symbol} is cooling down for {until - at:.0f}s after a losing trade"
        return None

    def record(self, symbol: str, side: str, at: float) -> None:
        """An order was approved at ``at``."""
        self.sent.append(at)
        self.sends += 1
        self.sent_by_symbol.setdefault(symbol, SendTimes()).append(at)
        self.last_by_side[f"{symbol}:{side}"] = at

    def record_loss(self, symbol: str, at: float, limits: RiskLimits) -> None:
        """A losing close: cool the symbol down, and lock buying after too many losses in the window."""
        if limits.cooldown_s:
            self.cooldown_until[symbol] = at + limits.cooldown_s
        if not limits.loss_lock_count:
            return
        self.losses.append(at)
        if _count_since(self.losses, at - limits.loss_lock_window_s) >= limits.loss_lock_count:
            self.locked_until = at + limits.loss_lock_s
            self.losses.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": list(self.sent),
            "sends": self.sends,
            "by_symbol": {symbol: list(times) for symbol, times in self.sent_by_symbol.items() if times},
            "last": self.last_by_side,
            "cooldown": self.cooldown_until,
            "losses": list(self.losses),
            "locked_until": self.locked_until,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.sent = SendTimes(snapshot["sent"])
        self.sends = snapshot.get("sends", len(self.sent))  # not in checkpoints of older versions
        self.sent_by_symbol = {symbol: SendTimes(times) for symbol, times in snapshot["by_symbol"].items()}
        self.last_by_side = dict(snapshot["last"])
        self.cooldown_until = dict(snapshot["cooldown"])
        self.losses = deque(snapshot["losses"])
        self.locked_until = snapshot["locked_until"]


_OVERALL = (reasons.RATE_PER_SECOND, reasons.RATE_PER_MINUTE)
_SYMBOL = (reasons.SYMBOL_RATE_PER_SECOND, reasons.SYMBOL_RATE_PER_MINUTE)
