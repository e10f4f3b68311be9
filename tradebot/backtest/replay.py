"""`tradebot replay`: stored ticks through the real workers, in a Redis database of their own.

The separate namespace is a Redis logical database (``--redis-db``, default 1): the live system's
streams, leases and checkpoints are untouched, and the strategy and execution workers run
unchanged (their own ``run`` entries, in burst mode) on the replayed ticks. The replay's signals,
orders and order events can then be compared with a backtest of the same ticks: they are equal.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings
from tradebot.common.models import Event, Order, OrderEvent, Signal, Tick
from tradebot.common.streams import ORDER_EVENTS, order_streams, signal_streams, tick_stream_for
from tradebot.execution import service as execution_service
from tradebot.strategy import service as strategy_service

PUBLISH_BATCH = 1_000
DEFAULT_REPLAY_DB = 1


class ReplayError(ValueError):
    """The replay cannot start as asked; the message says what to fix."""


def with_redis_db(url: str, database: int) -> str:
    """The same server, another logical database: ``redis://host:6379/0`` → ``…/database``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class ReplayOutcome:
    """What the real workers published for the replayed ticks."""

    signals: list[Signal] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    events: list[OrderEvent] = field(default_factory=list)


async def replay(
    settings: ReadySettings, ticks: Sequence[Tick], *, database: int = DEFAULT_REPLAY_DB, flush: bool = False
) -> ReplayOutcome:
    """Publish ``ticks`` into Redis database ``database`` and run the strategy, then the execution worker."""
    replay_settings = ReadySettings.resolved(
        settings.model_copy(update={"burst": True, "max_messages": None}),
        redis_url=with_redis_db(settings.redis_url, database),
        database_url=settings.database_url,
    )
    bus = Bus.from_settings(replay_settings)
    try:
        if flush:
            await bus.redis.flushdb()
        elif await bus.redis.dbsize():
            raise ReplayError(f"Redis database {database} is not empty: pass --flush, or another --redis-db")
        for start in range(0, len(ticks), PUBLISH_BATCH):
            batch = ticks[start : start + PUBLISH_BATCH]
            await bus.publish((tick_stream_for(t.symbol, settings.tick_partitions), t) for t in batch)
        # The workers' own entries, one after the other: execution starts once every order is out.
        await strategy_service.run(replay_settings, stop=asyncio.Event(), counters=Counter())
        await execution_service.run(replay_settings, stop=asyncio.Event(), counters=Counter())
        return ReplayOutcome(
            signals=_only(await bus.entries_of(signal_streams(settings.tick_partitions)), Signal),
            orders=_only(await bus.entries_of(order_streams(settings.tick_partitions)), Order),
            events=_only(await bus.entries(ORDER_EVENTS), OrderEvent),
        )
    finally:
        await bus.close()


def _only(events: list[Event], kind: type) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]


def differences(
    replayed: ReplayOutcome, signals: list[Signal], orders: list[Order], events: list[OrderEvent]
) -> list[str]:
    """How the replay differs from a backtest's outputs, compared as multisets (partitions interleave symbols)."""
    found = []
    for what, live, tested in (
        ("signals", replayed.signals, signals),
        ("orders", replayed.orders, orders),
        ("order events", replayed.events, events),
    ):
        only_live, only_test = Counter(live) - Counter(tested), Counter(tested) - Counter(live)
        if only_live or only_test:
            found.append(
                f"{what}: {sum(only_live.values())} only in the replay, {sum(only_test.values())} only in the backtest"
            )
    return found
