"""The risk memory's send times: the counts without a walk are the walk's, whatever order times come in."""

from __future__ import annotations

import math
import random
from collections import Counter, deque

import pytest

from tradebot.risk import reasons
from tradebot.risk.limits import RiskLimits
from tradebot.risk.windows import MINUTE, SECOND, Denial, RateWindows, SendTimes


def walked_after(times: deque[float], start: float) -> int:
    """What the risk memory counted before SendTimes: from the newest end to the first time at or before start."""
    count = 0
    for sent in reversed(times):
        if sent <= start:
            break
        count += 1
    return count


def trimmed_since(times: deque[float], start: float) -> int:
    while times and times[0] <= start:
        times.popleft()
    return len(times)


@pytest.mark.parametrize("seed", range(20))
def test_send_times_count_as_the_walk_with_times_out_of_order_and_repeated(seed: int):
    rng = random.Random(seed)
    times, walked = SendTimes(), deque[float]()
    now = 0.0
    for _ in range(3_000):
        now += rng.choice([0.0, 0.001, 0.01, 0.2, 1.0, 3.0])  # repeats, bursts and gaps
        at = round(now - rng.choice([0.0, 0.0, 0.004, 0.5, 1.5, 70.0]), 3)  # late, some past the minute
        start = at - rng.choice([SECOND, MINUTE, 0.0])
        assert times.count_after(start) == walked_after(walked, start)
        if rng.random() < 0.3:
            assert times.count_since(at - MINUTE) == trimmed_since(walked, at - MINUTE)
        assert times.count_after(start) == walked_after(walked, start)
        if rng.random() < 0.7:
            times.append(at)
            walked.append(at)
        assert list(times) == list(walked)
    restored = SendTimes(list(times))
    for start in sorted({*walked, -1.0, now + 1}):
        assert restored.count_after(start) == times.count_after(start) == walked_after(walked, start)


def test_throttle_decides_and_says_why_as_the_walk_did_through_a_random_order_flow():
    """The duplicate and rate checks of a flow whose times go back and forth (orders of several
    partitions), with tight limits: every decision and reason as the walked deques gave."""
    rng = random.Random(7)
    limits = RiskLimits(
        max_orders_per_second=6,
        max_orders_per_minute=90,
        max_symbol_orders_per_second=2,
        max_symbol_orders_per_minute=40,
        duplicate_window_s=0.05,
    )
    windows, walked = RateWindows(), WalkedWindows()
    now, denials = 0.0, Counter[str]()
    for _ in range(5_000):
        now += rng.expovariate(8.0)
        at = now - rng.choice([0.0, 0.002, 0.3])
        symbol, side = rng.choices("ABC", weights=[6, 3, 1])[0], rng.choice(["buy", "sell"])
        denial = windows.throttle(symbol, side, at, limits)
        assert denial == walked.throttle(symbol, side, at, limits)
        denials[denial[0] if denial else "approved"] += 1
        if denial is None:
            windows.record(symbol, side, at)
            walked.record(symbol, side, at)
    assert len(denials) == 6  # every check denied some and some passed


class WalkedWindows(RateWindows):
    """RateWindows's duplicate and rate checks as they were, over plain deques walked per order."""

    def __init__(self) -> None:
        super().__init__()
        self.walked: deque[float] = deque()
        self.walked_by_symbol: dict[str, deque[float]] = {}

    def record(self, symbol: str, side: str, at: float) -> None:
        self.walked.append(at)
        self.walked_by_symbol.setdefault(symbol, deque()).append(at)
        self.last_by_side[f"{symbol}:{side}"] = at

    def throttle(self, symbol: str, side: str, at: float, limits: RiskLimits, duplicates: bool = True) -> Denial | None:
        last = self.last_by_side.get(f"{symbol}:{side}", -math.inf)
        other = self.last_by_side.get(f"{symbol}:{'sell' if side == 'buy' else 'buy'}", -math.inf)
        if duplicates and limits.duplicate_window_s and other <= last and at - last < limits.duplicate_window_s:
            return reasons.DUPLICATE_ORDER, (
                f"{side} {symbol} again {at - last:.3f}s after the last one; RISK_DUPLICATE_WINDOW_S is "
                f"{limits.duplicate_window_s:g}"
            )
        mine = self.walked_by_symbol.get(symbol) or deque()
        for times, per_second, per_minute, codes, scope in (
            (self.walked, limits.max_orders_per_second, limits.max_orders_per_minute, OVERALL, "all symbols"),
            (mine, limits.max_symbol_orders_per_second, limits.max_symbol_orders_per_minute, SYMBOL, symbol),
        ):
            in_minute = trimmed_since(times, at - MINUTE)
            if per_minute and in_minute >= per_minute:
                return codes[1], f"{in_minute} orders for {scope} in the last minute; the limit is {per_minute}"
            in_second = walked_after(times, at - SECOND) if per_second else 0
            if per_second and in_second >= per_second:
                return codes[0], f"{in_second} orders for {scope} in the last second; the limit is {per_second}"
        return None


OVERALL = (reasons.RATE_PER_SECOND, reasons.RATE_PER_MINUTE)
SYMBOL = (reasons.SYMBOL_RATE_PER_SECOND, reasons.SYMBOL_RATE_PER_MINUTE)
