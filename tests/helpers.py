"""Small helpers shared by tests: free ports and waiting on a condition (never a bare sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from tradebot.common.bus.wire import decode_entry
from tradebot.common.embedded import free_port

__all__ = ["free_port", "stream_lengths", "tick_count", "wait_until"]


async def stream_lengths(redis: Any, streams: Iterable[str]) -> int:
    """Entries on ``streams`` together (say, every partition's signals)."""
    return sum([await redis.xlen(stream) for stream in streams])


async def tick_count(redis: Any, streams: Iterable[str]) -> int:
    """Events on ``streams`` together: a tick-batch entry counts its ticks (valid or not)."""
    total = 0
    for stream in streams:
        for _, fields in await redis.xrange(stream):
            try:
                events, _, invalid = decode_entry(fields)
                total += len(events) + len(invalid)
            except ValueError:
                total += 1
    return total


async def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll an (a)sync condition until it is truthy; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
