"""A positioned reader's wait for its next entries that returns them (tick → order latency).

A positioned reader (tradebot/common/partitions.py) keeps its place in its group, moved only by
its fenced commit, so reading takes nothing from anyone: the lease check that matters is the
commit's. Its wait for new entries can therefore be the read itself, one blocking XREAD that
returns them, instead of a wait whose reply is dropped and a fenced read of the same entries:
a round trip (and the entry sent twice) less on the path of every live batch. A wait that ends
with nothing (BLOCK elapsed, or stop) returns None, and the reader does a fenced read, which
also tells an idle reader that its lease is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tradebot.common.bus import Bus
from tradebot.common.bus.dead_letters import tick_dead_letter
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry
from tradebot.common.lifecycle import first_of

PositionedRead = tuple[list[Delivery], list[tuple[RawEntry, str]], dict[str, str]]


async def read_when_there(
    bus: Bus, positions: Mapping[str, str], *, count: int, block_ms: int, stop: asyncio.Event
) -> PositionedRead | None:
    """Up to ``count`` entries per stream after ``positions``, waiting up to ``block_ms`` for the
    first; as :meth:`Bus.read_positioned` returns them (the streams share a slot, as there).
    None when nothing came (or ``stop`` was set)."""
    waiting = asyncio.create_task(bus.redis.xread(dict(positions), count=count, block=block_ms))
    try:
        await first_of(stop, waiting)
    finally:  # (also when the reader itself is cancelled: no read is left behind)
        if not waiting.done():
            waiting.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read
        await asyncio.gather(waiting, return_exceptions=True)
    if waiting.cancelled():
        return None
    reply = waiting.result()  # (a Redis error is raised here: the reader's to handle)
    if not reply:
        return None
    deliveries: list[Delivery] = []
    rejected: list[tuple[RawEntry, str]] = []
    ended: dict[str, str] = {}
    for stream, rows in reply:
        for entry_id, fields in rows:
            entry = RawEntry(stream, entry_id, dict(fields or {}))
            ended[stream] = entry_id
            try:
                events, indexes, invalid = decode_entry(entry.fields or {})
            except ValueError as error:
                rejected.append((entry, str(error)))
                continue
            deliveries += [Delivery(stream, entry_id, *pair) for pair in zip(events, indexes, strict=True)]
            rejected += [(tick_dead_letter(entry, index), reason) for index, reason in invalid]
    return (deliveries, rejected, ended) if ended else None
