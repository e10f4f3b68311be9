"""The generated /history table of the storage bench: its size, where it starts, the requests over it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FIRST_DAY = datetime(2021, 1, 4, tzinfo=UTC)
# Where ``tradebot bench storage --keep-table`` keeps the generated table between runs.
HISTORY_DATABASE = "tradebot_bench_history"
# The windows of the warm-cache run: ~5 MB of 1,000-bar 1m responses (~160 KB each), within the
# default HISTORY_CACHE_MB=8 of each API worker (64 of them thrash it: ~80 % hits).
WARM_WINDOWS = 32


@dataclass(frozen=True)
class StorageSizes:
    """How big the storage part of the run is."""

    table_ticks: int
    ingest_rows: int
    samples: int
    load_seconds: float
    concurrency: int = 8
    symbols: int = 5
    days: int = 1100  # the storage bench needs > 1,000 sessions for 1,000 daily bars
    keep_table: bool = False  # keep the generated table (HISTORY_DATABASE) and reuse it next time


def history_url(timeframe: str, days: int) -> Callable[[int, random.Random], str]:
    """Request n: /history?limit=1000 of one of the first symbols from a random session."""
    latest_start = max(1, days - (1000 if timeframe == "1d" else 4))

    def url(n: int, rng: random.Random) -> str:
        start = FIRST_DAY + timedelta(days=rng.randrange(latest_start))
        return f"/history/BENCH{n % 3}?timeframe={timeframe}&limit=1000&start={start:%Y-%m-%dT%H:%M:%SZ}"

    return url


def warm_urls(timeframe: str, days: int, windows: int = WARM_WINDOWS) -> list[str]:
    """``windows`` fixed /history requests (the random starts of ``history_url``, seeded)."""
    make, rng = history_url(timeframe, days), random.Random(windows)
    return [make(n, rng) for n in range(windows)]
