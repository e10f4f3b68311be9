"""Encoded /history responses of closed windows, kept per API process and served again while
their symbol's history version is unchanged.

A 1,000-bar response costs ~5 ms of API CPU and ~15 ms of database CPU to spell; a window whose
buckets have all closed and that no write has touched since is the same bytes every time.
Correctness rests on the database, not on this process (so several API workers each keep their
own): every write that can change a window already served changes the symbol's version in its
own transaction (storage/migrations/postgresql/0024_history_versions.sql), and every request
reads the version (with the stored sources and the kept-series switch) in its first query — for
a window not kept, in the very statement that reads its bars where it can (queries.series) — so
bytes are served only under the stamp they were computed under.

A response is kept only when everything it depends on lies at or before the symbol's frontier
(the newest time written; later writes past it do not change the version) and before now:

* with ``start`` and ``limit`` bars found: up to the end of the last bar's bucket (later data
  can only add bars after it);
* otherwise with ``end``: up to ``end``'s bucket boundary;
* without either, the window follows the open end (the latest bars, the open bucket): never kept,
  served fresh.

Only plain PostgreSQL keeps versions: TimescaleDB's continuous aggregates change in background
refreshes without a write of ours, so there every response is computed fresh. The cache holds at
most HISTORY_CACHE_MB of response bytes, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import NamedTuple

from tradebot.api.deps import BarQuery
from tradebot.storage.buckets import ceil_bucket, next_bucket
from tradebot.storage.queries import HistoryStamp, Series

# The header that tells a client (and the bench) how a response was served.
CACHE_HEADER = "x-history-cache"


class Entry(NamedTuple):
    stamp: HistoryStamp
    closed_through: datetime  # every bucket the response depends on ends at or before this
    body: bytes


def may_cache(query: BarQuery) -> bool:
    """Whether a response to ``query`` can ever be kept: a window fixed by ``start`` or ``end``."""
    return query.range.start is not None or query.range.end is not None


def closed_through(query: BarQuery, found: Series) -> datetime | None:
    """The end of the last bucket the response to ``query`` depends on, or None if it follows now."""
    if query.range.start is not None and found.bar_count >= query.limit and found.last is not None:
        return next_bucket(found.last, query.timeframe)
    if query.range.end is not None:
        return ceil_bucket(query.range.end, query.timeframe)
    return None


class HistoryCache:
    """Response bytes by request, at most ``max_bytes`` of them; counts hits and misses."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[BarQuery, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, query: BarQuery) -> bool:
        """Whether a response to ``query`` is kept (``get`` decides whether it is still served);
        a query without one counts as a miss."""
        if query in self._entries:
            return True
        self.misses += 1
        return False

    def get(self, query: BarQuery, stamp: HistoryStamp, now: datetime) -> bytes | None:
        """The kept response to ``query`` if it was computed under ``stamp`` (and is closed by ``now``)."""
        entry = self._entries.get(query)
        if entry is None or entry.stamp.facts != stamp.facts or stamp.version is None or entry.closed_through > now:
            self.misses += 1
            return None
        self._entries.move_to_end(query)
        self.hits += 1
        return entry.body

    def offer(self, query: BarQuery, stamp: HistoryStamp, found: Series, now: datetime, body: bytes) -> bool:
        """Keep ``body`` (the response to ``query`` computed after reading ``stamp``) if it is a
        closed window no later write can change without changing the version; whether it was kept."""
        end = closed_through(query, found)
        if end is None or stamp.version is None or stamp.frontier is None:
            return False
        if end > stamp.frontier or end > now or len(body) > self.max_bytes:
            return False
        self._drop(query)
        self._entries[query] = Entry(stamp, end, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def _drop(self, query: BarQuery) -> None:
        entry = self._entries.pop(query, None)
        if entry is not None:
            self.size -= len(entry.body)
