"""The small pieces every long-running loop is made of: back off after a failure, wait for stop.

One backoff formula serves every retry in tradebot (Redis and database outages, provider requests,
failed partition readers, restarted worker processes): capped exponential growth, by default with
equal jitter so that many processes failing together do not retry in step. ``first_of`` is the one
way to wait for "stop, or whichever of these happens first".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)
STILL_WAITING_LOG_S = 60.0  # an outage is logged when it starts, then again every minute it lasts


def backoff_delay_s(failures: int, *, base_s: float, cap_s: float, jitter: bool = True) -> float:
    """The wait after ``failures`` failures in a row (1-based): ``min(cap, base·2^(failures-1))``,
    jittered into its upper half unless ``jitter`` is False."""
    ceiling = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling) if jitter else ceiling


class Backoff:
    """Capped, jittered delays that reset after a success; logs once per outage."""

    def __init__(self, what: str, cap_s: float = 5.0, *, base_s: float = 0.2):
        self.what = what
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self.total_retries = 0
        self._next_reminder = 0.0

    async def wait(self, error: object, stop: asyncio.Event) -> None:
        """Sleep before the next attempt (cut short by ``stop``); says so again every minute of an outage."""
        if self.failures == 0 or time.monotonic() >= self._next_reminder:
            still = "still " if self.failures else ""
            log.warning("%s %sunavailable (%s); retrying with backoff", self.what, still, error)
            self._next_reminder = time.monotonic() + STILL_WAITING_LOG_S
        self.failures += 1
        self.total_retries += 1
        await wait_or_stop(stop, backoff_delay_s(self.failures, base_s=self.base_s, cap_s=self.cap_s))

    def succeeded(self) -> None:
        """Reset after a success, logging the recovery once."""
        if self.failures:
            log.info("%s is back after %d retries", self.what, self.failures)
        self.failures = 0


async def first_of(
    stop: asyncio.Event, *waits: asyncio.Future[Any] | asyncio.Event, timeout_s: float | None = None
) -> None:
    """Return once ``stop`` or any of ``waits`` is set or done, or after ``timeout_s`` seconds.

    Waits on events end with the call; futures (tasks) are left as they are, done or not, for the
    caller to use or cancel.
    """
    events = [asyncio.ensure_future(event.wait()) for event in (stop, *waits) if isinstance(event, asyncio.Event)]
    futures: Iterable[asyncio.Future[Any]] = (wait for wait in waits if not isinstance(wait, asyncio.Event))
    try:
        await asyncio.wait({*events, *futures}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in events:
            waiter.cancel()
        await asyncio.gather(*events, return_exceptions=True)


def end_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled but the cancellation was lost on its way.

    On Python 3.11 ``asyncio.wait_for`` returns normally when a cancellation lands just as what it
    waits for completes, and redis-py sends every command of a client with a socket timeout (all of
    tradebot's) through it: the task then runs on as if never cancelled, though its
    ``cancelling()`` still counts the request. A loop that must end when cancelled (a partition
    reader: the runtime cancels a worker past its grace period) calls this between its awaits.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True if ``stop`` was set meanwhile (a sleep that stop cuts short)."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False
