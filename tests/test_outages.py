"""Outage, not poison: a database or Redis that cannot take writes for now makes workers wait and
go on; nothing is dead-lettered, nothing is lost, and heartbeats come back."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.bus_workers import APPLIED, SequenceState
from tests.helpers import free_port, tick_count, wait_until
from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.wire import decode_all
from tradebot.common.config import Settings
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.models import Tick
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import DEAD_LETTER_PATTERN, heartbeat_key, tick_stream, tick_stream_for
from tradebot.storage import timeseries_service
from tradebot.storage.schema import apply_migrations

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
ROLE = "sequencer"


@pytest.fixture
def redis_url(versioned_redis_url: str) -> str:
    """Every test here runs on Redis 6.2 and on Redis 7."""
    return versioned_redis_url


@pytest.fixture
def private_redis(versioned_private_redis: EmbeddedRedis) -> EmbeddedRedis:
    """A Redis of the test's own, of each version."""
    return versioned_private_redis


def sequenced_ticks(count: int, symbols: tuple[str, ...] = ("AAPL", "MSFT")) -> list[Tick]:
    return [
        Tick.create(symbol, 100.0 + i * 0.01, 1, START + timedelta(seconds=i), source="test", trade_id=i)
        for i in range(count)
        for symbol in symbols
    ]


_REFUSE_DISK_FULL = """
CREATE OR REPLACE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100'; END $$;
CREATE TRIGGER test_disk_full BEFORE INSERT ON ticks FOR EACH STATEMENT EXECUTE FUNCTION test_disk_full();
"""


async def test_a_full_disk_makes_storage_wait_and_then_store_everything_once(
    clean_database: str, settings: Settings, bus: Bus
) -> None:
    await apply_migrations(clean_database)
    conn = await asyncpg.connect(clean_database)
    run_settings = settings.model_copy(update={"database_url": clean_database, "max_deliveries": 2})
    counters: Counter = Counter()
    stop = asyncio.Event()
    storage = None
    try:
        await conn.execute(_REFUSE_DISK_FULL)
        sent = sequenced_ticks(150)
        await bus.publish((tick_stream_for(t.symbol, run_settings.tick_partitions), t) for t in sent)
        storage = asyncio.create_task(timeseries_service.run(run_settings, stop=stop, counters=counters))
        # more failed attempts than MAX_DELIVERIES: had they counted, the ticks would be dead letters now
        await wait_until(lambda: counters["effect_retries"] > 4, what="storage to meet the full disk")
        assert await conn.fetchval("SELECT count(*) FROM ticks") == 0
        await conn.execute("DROP TRIGGER test_disk_full ON ticks")

        async def all_stored() -> bool:
            return await conn.fetchval("SELECT count(*) FROM ticks") == len(sent)

        await wait_until(all_stored, what="every tick to be stored once the disk has room")
        assert await conn.fetchval("SELECT count(DISTINCT id) FROM ticks") == len(sent)
        assert [key async for key in bus.redis.scan_iter(match=DEAD_LETTER_PATTERN)] == []
        assert counters["failed"] == 0
    finally:
        stop.set()
        if storage is not None:
            await asyncio.gather(storage, return_exceptions=True)
        await conn.execute("DROP TRIGGER IF EXISTS test_disk_full ON ticks")
        await conn.close()


class Refusal:
    """Makes a Redis refuse writes one way, and lifts it again."""

    def __init__(self, kind: str, bus: Bus, data_dir: Path):
        self.kind, self.redis, self.data_dir = kind, bus.redis, data_dir

    async def inject(self) -> None:
        if self.kind == "OOM":
            await self.redis.config_set("maxmemory", 1)
        elif self.kind == "MISCONF":  # a failed snapshot with stop-writes-on-bgsave-error (the default)
            (self.data_dir / "dump.rdb").mkdir()  # the snapshot cannot be renamed into place
            await self.redis.config_set("save", "3600 1")
            await self.redis.bgsave()
            await wait_until(self._snapshot_failed, what="the snapshot to fail")
        else:  # a replica of a master that is not there keeps its data and refuses writes
            await self.redis.execute_command("REPLICAOF", "127.0.0.1", free_port())

    async def lift(self) -> None:
        if self.kind == "OOM":
            await self.redis.config_set("maxmemory", 0)
        elif self.kind == "MISCONF":
            (self.data_dir / "dump.rdb").rmdir()
            await self.redis.config_set("save", "")
            await self.redis.bgsave()
            await wait_until(lambda: self._snapshot_failed(False), what="a snapshot to succeed")
        else:
            await self.redis.execute_command("REPLICAOF", "NO", "ONE")

    async def refused(self) -> int:
        """How often the server refused a command this way so far (INFO errorstats)."""
        stats = await self.redis.info("errorstats")
        return int(stats.get(f"errorstat_{self.kind}", {}).get("count", 0))

    async def _snapshot_failed(self, failed: bool = True) -> bool:
        info = await self.redis.info("persistence")
        return not info["rdb_bgsave_in_progress"] and (info["rdb_last_bgsave_status"] == "err") == failed


@pytest.fixture
async def refusable_bus(private_redis: EmbeddedRedis) -> AsyncIterator[Bus]:
    bus = Bus(connect(private_redis.url), max_deliveries=3)
    yield bus
    await bus.close()


@pytest.mark.parametrize("kind", ["OOM", "MISCONF", "READONLY"])
async def test_redis_refusing_writes_makes_workers_wait_and_go_on(
    kind: str, refusable_bus: Bus, private_redis: EmbeddedRedis, settings: Settings
) -> None:
    bus, sent = refusable_bus, sequenced_ticks(100)
    await bus.publish((tick_stream(int(t.symbol == "MSFT")), t) for t in sent)
    refusal = Refusal(kind, bus, private_redis.data_dir)
    await refusal.inject()
    config = PartitionSettings(
        role=ROLE, partitions=2, streams_for=lambda partition: [tick_stream(partition)], batch_size=20, block_ms=100
    )
    worker = PartitionedWorker(bus, config, "worker-1", lambda _: SequenceState(), Counter())
    beat_settings = settings.model_copy(update={"redis_url": private_redis.url})
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(worker.run(stop=stop)),
        asyncio.create_task(runtime._heartbeat(ROLE, beat_settings, Counter(), stop)),
    ]
    try:
        await wait_until(lambda: _at_least(refusal.refused(), 5), what=f"the workers to meet {kind}")
        assert not any(task.done() for task in tasks)  # they wait; nothing crashed
        assert await tick_count(bus.redis, [APPLIED]) == 0
        await refusal.lift()
        lifted = datetime.now(UTC)
        await wait_until(
            lambda: _at_least(tick_count(bus.redis, [APPLIED]), len(sent)), what="every tick to be applied"
        )
        await wait_until(lambda: _beat_since(bus, lifted), what="the heartbeat to come back")
        assert not any(task.done() for task in tasks)
        applied = [tick.id for _, fields in await bus.redis.xrange(APPLIED) for tick in decode_all(fields)]
        assert len(applied) == len(set(applied)) == len(sent)  # once each, in order (SequenceState checks)
        assert [key async for key in bus.redis.scan_iter(match=DEAD_LETTER_PATTERN)] == []
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if kind == "READONLY":
            await bus.redis.execute_command("REPLICAOF", "NO", "ONE")


async def _at_least(value, minimum: int) -> bool:  # type: ignore[no-untyped-def]
    return await value >= minimum


async def _beat_since(bus: Bus, moment: datetime) -> bool:
    raw = await bus.redis.get(heartbeat_key(ROLE, runtime.consumer_name()))
    return raw is not None and datetime.fromisoformat(json.loads(raw)["updated_at"]) > moment
