"""One token bucket: every caller of a broker's API waits on it (and a 429 pauses them all); the
webhook endpoint and the alert channels ask it without waiting."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """``per_minute`` requests a minute, bursts up to ``burst``; ``pause`` stops everyone for a while."""

    def __init__(self, per_minute: int, burst: int | None = None):
        self.rate = per_minute / 60.0
        # Burst plus a minute of refill stays within the budget over any 60 s window (190/min: 9 + 190).
        self.capacity = float(burst if burst is not None else max(1, min(per_minute // 20, 10)))
        self.tokens = self.capacity
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time callers spent waiting (for the benchmark)

    async def take(self) -> None:
        """Wait for a token (callers are served in order)."""
        async with self._lock:
            while (wait := self.try_take()) > 0:
                self.waited_s += wait
                await asyncio.sleep(wait)  # rate limiting is waiting for time itself

    def ready_in(self) -> float:
        """Seconds until ``take`` would return at once (0 if now)."""
        now = time.monotonic()
        tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        return max(self._paused_until - now, (1 - tokens) / self.rate if tokens < 1 else 0.0, 0.0)

    def try_take(self) -> float:
        """Take a token now if one is there: 0.0; else the seconds until one is (nothing taken)."""
        wait = self.ready_in()
        self.tokens = min(self.capacity, self.tokens + (time.monotonic() - self._updated) * self.rate)
        self._updated = time.monotonic()
        if wait <= 0:
            self.tokens -= 1
        return wait

    def pause(self, seconds: float) -> None:
        """The broker answered 429: nobody sends for ``seconds`` and the bucket starts empty."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self.tokens = 0.0
