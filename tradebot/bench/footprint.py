"""Redis footprint of the pipeline: AOF bytes per tick and memory per million unread ticks.

``python -m tradebot.bench.footprint [--ticks N] [--symbols N]`` starts fresh embedded servers in a
temporary folder and runs, in this process, the mock feed (unpaced, at the default 100 symbols)
with storage, strategy and execution until every tick is stored; the AOF growth over that run
(INFO aof_current_size, rewrites off) divided by the ticks is the first figure. Then, with no
consumer running, it publishes the same number of ticks again: the growth of used_memory, scaled
to a million, is what a backlog costs while consumers are down (the budget's unit). Last, with
storage down but strategy and execution running, the memory per tick the budget holds during a
storage outage: budget / (that × ticks per second) is how long a feed rides out such an outage.

``--breakdown`` also reads the bytes the pipeline run appended to the AOF and sums them per command
and key family (digits folded: ``XCLAIM price.ticks:#``, ``SET feed:cursor:…``), per tick: what
each write costs, so a change can be aimed and checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings
from tradebot.common.embedded import ANY_PORT, embedded_servers
from tradebot.common.streams import (
    EXECUTION_ROLE,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    order_streams,
    storage_streams,
    tick_stream_for,
    tick_streams,
)
from tradebot.execution import service as execution_service
from tradebot.market_data import service as feed_service
from tradebot.market_data.mock_feed import MockFeed, stepping_clock
from tradebot.storage import timeseries_service as storage_service
from tradebot.strategy import service as strategy_service
from tradebot.universe import resolve_symbols

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


async def aof_bytes(bus: Bus) -> int:
    """Bytes of the append-only file(s) right now."""
    return int((await bus.redis.info("persistence"))["aof_current_size"])


async def aof_files(bus: Bus) -> dict[Path, int]:
    """The files Redis appends to (6.2: appendonly.aof; 7: appendonlydir/*.incr.aof) and their sizes."""
    folder = Path((await bus.redis.config_get("dir"))["dir"])
    name = (await bus.redis.config_get("appendfilename"))["appendfilename"]
    return file_sizes(folder, name)


def file_sizes(folder: Path, name: str) -> dict[Path, int]:
    single = folder / name
    files = [single] if single.exists() else sorted(folder.glob("*/*.incr.aof"))
    return {path: path.stat().st_size for path in files}


def commands_in(data: bytes) -> Iterator[list[bytes]]:
    """The RESP arrays (commands) in a stretch of AOF; a partial one at the end is left out."""
    position = 0
    while position < len(data) and data[position : position + 1] == b"*":
        end = data.find(b"\r\n", position)
        count, position = int(data[position + 1 : end]), end + 2
        parts = []
        for _ in range(count):
            end = data.find(b"\r\n", position)
            if end < 0:
                return
            length = int(data[position + 1 : end])
            parts.append(data[end + 2 : end + 2 + length])
            position = end + 4 + length
        if position > len(data):
            return
        yield parts


def command_family(parts: list[bytes]) -> str:
    """``XCLAIM price.ticks:#``: the command and its first key, digits folded."""
    name = parts[0].decode().upper()
    at = 2 if name == "XGROUP" else 1  # XGROUP SETID <key> …
    key = parts[at].decode(errors="replace") if len(parts) > at and name not in NO_KEY_COMMANDS else ""
    return f"{name} {re.sub(r'[0-9]+', '#', key)}".strip()


NO_KEY_COMMANDS = {"MULTI", "EXEC", "SELECT"}


def resp_size(parts: list[bytes]) -> int:
    """Bytes of a command in RESP: ``*<n>\\r\\n`` then ``$<len>\\r\\n<part>\\r\\n`` per part."""
    return 3 + len(str(len(parts))) + sum(5 + len(str(len(part))) + len(part) for part in parts)


def breakdown(before: dict[Path, int], after: dict[Path, int], ticks: int) -> dict[str, float]:
    """AOF bytes per tick appended between two ``aof_files`` snapshots, per command family."""
    totals: Counter[str] = Counter()
    for path, size in after.items():
        with path.open("rb") as file:
            file.seek(before.get(path, 0))
            data = file.read(size - before.get(path, 0))
        for parts in commands_in(data):
            totals[command_family(parts)] += resp_size(parts)
    return {family: round(size / ticks, 1) for family, size in totals.most_common() if size / ticks >= 0.5}


async def pipeline_run(settings: ReadySettings, ticks: int, *, detail: bool = False) -> dict[str, Any]:
    """AOF bytes per tick with every worker running until all ticks are stored."""
    bus = Bus.from_settings(settings)
    await bus.redis.config_set("auto-aof-rewrite-percentage", 0)  # keep the file growing, to measure it
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(module.run(settings, stop=stop, counters=Counter()))
        for module in (storage_service, strategy_service, execution_service)
    ]
    conn = await asyncpg.connect(settings.database_url)
    try:
        while await conn.fetchval("SELECT to_regclass('ticks')") is None:  # storage migrates first
            await asyncio.sleep(0.2)
        before, files_before = await aof_bytes(bus), await aof_files(bus)
        symbols = resolve_symbols(settings)
        await feed_service.produce(
            bus, settings, symbols, stop=stop, counters=Counter(), clock=stepping_clock(START), pace=False
        )
        while await conn.fetchval("SELECT count(*) FROM ticks") < ticks:
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # the last acks, checkpoints and a retention pass
        grown = await aof_bytes(bus) - before
        parts = breakdown(files_before, await aof_files(bus), ticks) if detail else {}
        kept = sum([await bus.redis.xlen(stream) for stream in storage_streams(settings.tick_partitions)])
        memory = int((await bus.redis.info("memory"))["used_memory"])
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await conn.close()
    await bus.close()
    return {
        "aof_bytes_per_tick": grown / ticks,
        "symbols": len(symbols),
        "entries_kept_after_all_consumed": kept,
        "used_memory_after_all_consumed": memory,
        **({"aof_bytes_per_tick_by_command": parts} if detail else {}),
    }


async def backlog_memory(settings: ReadySettings, ticks: int) -> float:
    """used_memory growth per million ticks published while no consumer runs."""
    bus = Bus.from_settings(settings)
    await bus.redis.flushdb()
    symbols = resolve_symbols(settings)
    before = int((await bus.redis.info("memory"))["used_memory"])
    feed = MockFeed(symbols, settings.mock_seed, clock=stepping_clock(START))
    for start in range(0, ticks, 500):
        batch = feed.take(min(500, ticks - start))
        await bus.publish((tick_stream_for(t.symbol, settings.tick_partitions), t) for t in batch)
    after = int((await bus.redis.info("memory"))["used_memory"])
    await bus.close()
    return (after - before) / ticks * 1_000_000


async def storage_outage_memory(settings: ReadySettings, ticks: int) -> dict[str, float]:
    """used_memory per tick while storage is down and strategy and execution run (what the
    budget holds during a storage outage), and Redis's baseline before it."""
    bus = Bus.from_settings(settings)
    await bus.redis.flushdb()
    partitions = settings.tick_partitions
    for stream in storage_streams(partitions):
        await bus.ensure_group(stream, STORAGE_GROUP)  # storage ran before: its group holds everything back
    baseline = await bus.memory_used()
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(module.run(settings, stop=stop, counters=Counter()))
        for module in (strategy_service, execution_service)
    ]
    try:
        await feed_service.produce(
            bus,
            settings,
            resolve_symbols(settings),
            stop=stop,
            counters=Counter(),
            clock=stepping_clock(START),
            pace=False,
        )
        while await bus.backlog(tick_streams(partitions), STRATEGY_ROLE) or await bus.backlog(
            order_streams(partitions), EXECUTION_ROLE
        ):
            await asyncio.sleep(0.5)
        grown = await bus.memory_used() - baseline
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    await bus.close()
    return {"redis_baseline_bytes": baseline, "storage_outage_bytes_per_tick": grown / ticks}


async def measure(ticks: int, symbols: int, *, detail: bool = False) -> dict[str, Any]:
    """Both figures, on fresh servers in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder, embedded_servers(Path(folder), ANY_PORT, ANY_PORT) as urls:
        settings = ReadySettings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=urls[0],
            database_url=urls[1],
            data_dir=Path(folder),
            max_symbols=symbols,
            mock_max_ticks=ticks,
        )
        figures = await pipeline_run(settings, ticks, detail=detail)
        figures["redis_bytes_per_million_backlog_ticks"] = await backlog_memory(settings, ticks)
        figures |= await storage_outage_memory(settings, ticks)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=50_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--breakdown", action="store_true", help="AOF bytes per tick by command and key")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.ticks, args.symbols, detail=args.breakdown)), indent=2))


if __name__ == "__main__":
    main()
