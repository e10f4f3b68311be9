"""A bound on what a worker's partition readers hold read and not yet committed, shared by them all.

A worker behind its streams has every partition's reader read a full batch; eight partitions hold
eight batches of decoded events at once, most of them only waiting for their turn at the CPU or
the database. An :class:`InFlight` is the room for them: a reader takes room for what it read
before it decodes it and gives it back once the batch is committed, so the worker holds at most
``limit`` units however many partitions it owns. The unit is the reader's: storage counts batches
(one per batch, read ahead or written), the strategy counts stream entries (each up to
BUS_TICKS_PER_ENTRY ticks). Room is granted first come, first served, and a read bigger than the
whole room takes all of it, alone, so every read goes through.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque

from tradebot.common.lifecycle import first_of


class InFlight:
    """Room for ``limit`` units read and not yet committed; ``peak`` is the most ever held at once
    (also kept in ``counters[peak_key]``, if given: what an operator or a test sees)."""

    def __init__(self, limit: int, counters: Counter[str] | None = None, peak_key: str = "in_flight_peak"):
        if limit < 1:
            raise ValueError(f"an in-flight bound needs room for at least one unit, not {limit}")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.counters, self.peak_key = counters, peak_key
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Readers waiting for room."""
        return len(self._waiting)

    def room_for(self, amount: int) -> int:
        """What a read of ``amount`` units takes: all the room at most."""
        return min(amount, self.limit)

    def try_take(self, amount: int) -> bool:
        """Take ``amount`` (see :meth:`room_for`) if it is free now and no reader waits before it."""
        if self._waiting or self.held + amount > self.limit:
            return False
        self._grant(amount)
        return True

    async def take(self, amount: int) -> None:
        """Take ``amount`` once it is free, after the readers that wait before it."""
        if self.try_take(amount):
            return
        granted = asyncio.get_running_loop().create_future()
        waiter = (amount, granted)
        self._waiting.append(waiter)
        try:
            await granted
        except BaseException:
            if granted.done() and not granted.cancelled():
                self.give(amount)  # granted just as the reader was cancelled: hand it on
            else:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                self._grant_waiting()  # a smaller read behind it may fit now
            raise

    def give(self, amount: int) -> None:
        self.held -= amount
        self._grant_waiting()

    def _grant(self, amount: int) -> None:
        self.held += amount
        if self.held > self.peak:
            self.peak = self.held
            if self.counters is not None:
                self.counters[self.peak_key] = self.peak

    def _grant_waiting(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.limit:
            amount, granted = self._waiting.popleft()
            if not granted.done():
                self._grant(amount)
                granted.set_result(None)


class Taken:
    """What one reader holds of a shared :class:`InFlight`, so it can hand it all back when it ends."""

    def __init__(self, shared: InFlight):
        self.shared = shared
        self.held: deque[int] = deque()  # oldest first, as the reader commits

    async def take(self, stop: asyncio.Event, amount: int = 1) -> bool:
        """Room for ``amount`` units, once it is free; False (none taken) if ``stop`` is set first:
        a reader being stopped (its partition handed over) never waits for room."""
        if not stop.is_set() and self.take_if_free(amount):
            return True  # free now (every batch of a worker that keeps up): no task, no wait
        amount = self.shared.room_for(amount)
        taking = asyncio.ensure_future(self.shared.take(amount))
        try:
            await first_of(stop, taking)
        except BaseException:
            if taking.done() and not taking.cancelled() and taking.exception() is None:
                self.shared.give(amount)  # taken just as this reader was cancelled: give it back
            raise
        finally:
            if not taking.done():
                taking.cancel()  # (InFlight.take hands on room it was granted as it was cancelled)
            await asyncio.gather(taking, return_exceptions=True)
        if taking.cancelled():
            return False
        self.held.append(amount)
        return True

    def take_if_free(self, amount: int = 1) -> bool:
        """Room for ``amount`` if it is free right now (and no other reader waits for room)."""
        amount = self.shared.room_for(amount)
        if not self.shared.try_take(amount):
            return False
        self.held.append(amount)
        return True

    def give(self) -> None:
        """Give back the oldest room taken (the batch just committed)."""
        self.shared.give(self.held.popleft())

    def give_all(self) -> None:
        while self.held:
            self.give()
