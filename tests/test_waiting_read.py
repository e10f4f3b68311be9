"""The shared waiting read (tradebot/common/waiting_read.py) hands every reader its share of one
commit at once, on every supported Redis."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.helpers import wait_until
from tradebot.common.bus import Bus
from tradebot.common.models import Tick
from tradebot.common.streams import tick_stream
from tradebot.common.waiting_read import WaitingReader

pytestmark = pytest.mark.usefixtures("redis_version")
START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    return versioned_redis_url


async def test_readers_woken_by_one_commit_of_every_stream_all_get_their_entries_from_that_read(bus: Bus) -> None:
    streams = [tick_stream(p) for p in range(3)]
    readers = [WaitingReader(bus, 10) for _ in streams]
    stop = asyncio.Event()
    reads = [
        asyncio.create_task(reader.read({stream: "0-0"}, block_ms=60_000, stop=stop))
        for reader, stream in zip(readers, streams, strict=True)
    ]
    await wait_until(lambda: bus.stats["shared_reads"] == 1, what="the readers' shared read")
    # one atomic write of all three streams, as the feed's batch is: Redis 6.2 and 7.0 wake the
    # blocked XREAD with one of them only
    ticks = [(stream, Tick.create("AAPL", 100 + p, 1, START, trade_id=p)) for p, stream in enumerate(streams)]
    assert await bus.publish_once("one-commit", 60_000, ticks)
    got = await asyncio.wait_for(asyncio.gather(*reads), timeout=30)
    for read, stream in zip(got, streams, strict=True):
        assert read is not None
        assert set(read[2]) == {stream}
        assert len(read[0]) == 1
    assert bus.stats["shared_reads"] == 1  # no reader needed a read of its own after the others
    for reader in readers:
        reader.close()
