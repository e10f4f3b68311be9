"""Gaps: live events a feed could not publish, and the records that say so.

A live publisher whose buffer is full while Redis cannot take writes collects what it cannot
publish in an :class:`OpenGap`. Once Redis takes writes again the gap is closed: committed as a
``gap:<source>:<first>`` record (JSON; /health lists them) and as one ``Gap`` event per symbol
(storage writes them to the ``gaps`` table), and handed to gap repair. When the repair's bars are
committed, the record is marked repaired in the same commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from tradebot.common.bus.connection import get_many
from tradebot.common.models import Bar, Event, Gap, Tick
from tradebot.common.streams import GAP_PATTERN, gap_key

log = logging.getLogger(__name__)


@dataclass
class OpenGap:
    """Live events not published since the buffer filled up during an outage."""

    first: datetime
    last: datetime
    symbols: set[str] = field(default_factory=set)
    dropped: int = 0

    def add(self, event: Tick | Bar) -> None:
        """One more event not published."""
        self.symbols.add(event.symbol)
        self.first, self.last = min(self.first, event.timestamp), max(self.last, event.timestamp)
        self.dropped += 1

    def record(self, source: str, repair: int | None) -> dict[str, Any]:
        """The JSON record of the gap (``gap:`` key, /health)."""
        return {
            "source": source,
            "symbols": sorted(self.symbols),
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "dropped": self.dropped,
            "repair": repair,
            "repaired": False,
        }


@dataclass(frozen=True)
class GapClosed:
    """An open gap, now that Redis takes writes again: committed like an event."""

    gap: OpenGap
    repair: int | None


async def read_gap_records(redis: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """Every gap record committed so far, by key (what the risk stage's data-gap rule reads)."""
    keys = sorted([key async for key in redis.scan_iter(match=GAP_PATTERN, count=500)])
    records = {}
    for key, raw in zip(keys, await get_many(redis, keys), strict=True):
        try:
            records[key] = json.loads(raw)
        except (TypeError, ValueError) as error:  # expired meanwhile, or not one of ours
            log.warning("ignoring malformed gap record %s: %s", key, error)
    return records


class GapRecords:
    """What a publisher's commits write about gaps: each closed gap, then its repair's completion."""

    def __init__(self, source: str):
        self.source = source
        self._repairing: dict[int, tuple[str, dict[str, Any], set[str]]] = {}  # repair -> (key, record, symbols left)

    def writes(self, closed: GapClosed) -> tuple[list[Event], dict[str, str]]:
        """The Gap events (one per symbol) and the record a closed gap commits."""
        gap = closed.gap
        events: list[Event] = [
            Gap.create(self.source, symbol, gap.first, gap.last, gap.dropped) for symbol in sorted(gap.symbols)
        ]
        key, record = gap_key(self.source, gap.first.isoformat()), gap.record(self.source, closed.repair)
        if closed.repair is not None:
            self._repairing[closed.repair] = (key, record, set(gap.symbols))
        return events, {key: json.dumps(record)}

    def repaired(self, done: Iterable[tuple[str, int]]) -> dict[str, str]:
        """Records whose repair completes with these (symbol, repair) completions, marked repaired."""
        state = {}
        for symbol, repair in done:
            if repair in self._repairing:
                key, record, left = self._repairing[repair]
                left.discard(symbol)
                if not left:
                    del self._repairing[repair]
                    state[key] = json.dumps(record | {"repaired": True})
        return state
