"""Shared by the live-feed, gap-repair and backfill tests: running a feed, reading what it
published, storing it and asking the history API."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from tests.helpers import wait_until
from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.bus.wire import decode, decode_all
from tradebot.common.config import Settings
from tradebot.common.models import Bar, Tick
from tradebot.common.streams import BARS, tick_streams
from tradebot.storage import timeseries_service

# Monday 11 March 2024, 10:30 New York: inside a regular session, after the DST switch.
T0 = datetime(2024, 3, 11, 14, 30, tzinfo=UTC)
KEY, SECRET = "test-key", "test-secret"
STOP_TIMEOUT_S = 15.0


@dataclass
class FakeClock:
    """Emulator time: tests move it; the feed reads it when it (re)connects."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def with_keys(settings: Settings, **updates: Any) -> Settings:
    """Test settings with provider keys (secrets must be SecretStr: model_copy does not validate)."""
    secrets = {"alpaca_key": SecretStr(KEY), "alpaca_secret": SecretStr(SECRET), "polygon_api_key": SecretStr(KEY)}
    for name, value in list(updates.items()):
        if name in secrets and isinstance(value, str):
            updates[name] = SecretStr(value)
    return settings.model_copy(update={**secrets, "symbols": ["AAPL", "MSFT"], **updates})


@dataclass
class RunningFeed:
    """A feed worker running as a task, with its counters."""

    task: asyncio.Task
    stop: asyncio.Event
    counters: Counter = field(default_factory=Counter)


@asynccontextmanager
async def running(
    run_feed: Callable[..., Awaitable[None]], settings: Settings, **kwargs: Any
) -> AsyncIterator[RunningFeed]:
    """Run ``run_feed`` until the block ends; then stop it and check it ended cleanly."""
    stop, counters = asyncio.Event(), Counter()
    task = asyncio.create_task(run_feed(settings, stop=stop, counters=counters, **kwargs))
    feed = RunningFeed(task, stop, counters)
    try:
        yield feed
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)


async def published(bus: Bus, partitions: int) -> tuple[list[Tick], list[Bar]]:
    """Every tick (all partitions) and bar on the streams, decoded, in stream order per stream."""
    ticks = [t for s in tick_streams(partitions) for _, fields in await bus.redis.xrange(s) for t in decode_all(fields)]
    bars = [decode(fields) for _, fields in await bus.redis.xrange(BARS)]
    return ticks, bars  # type: ignore[return-value]


async def wait_for_published(
    bus: Bus, partitions: int, *, ticks: int = 0, bars: int = 0, timeout: float = 10.0
) -> tuple[list[Tick], list[Bar]]:
    """Wait until at least this many ticks and bars are on the streams; return them all."""

    async def enough() -> bool:
        got_ticks, got_bars = await published(bus, partitions)
        return len(got_ticks) >= ticks and len(got_bars) >= bars

    await wait_until(enough, timeout, f"{ticks} ticks and {bars} bars published")
    return await published(bus, partitions)


async def store_everything(settings: Settings) -> Counter:
    """Run the storage worker in burst mode until the streams are drained."""
    counters: Counter = Counter()
    await timeseries_service.run(settings.model_copy(update={"burst": True}), stop=asyncio.Event(), counters=counters)
    return counters


async def history(settings: Settings, symbol: str, **params: str) -> list[dict]:
    """``GET /history/{symbol}`` through the real app (in process); the bars."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        response = await client.get(f"/history/{symbol}", params=params)
    assert response.status_code == 200, response.text
    return response.json()["bars"]


def when(value: str) -> datetime:
    """An API timestamp as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
