"""Measure the commits a worker makes at once: client and Redis CPU per batch of partition commits.

    .venv/bin/python -m tests.measure_commits [--batches 3000] [--partitions 8]

Per batch, every partition commits as the strategy does after a feed batch (its group moved to the
batch's end, two checkpoint fields written, behind its lease), all in one turn of the event loop,
on a bus that commits them together (common/bus/together.py). Against a fresh embedded Redis, in
this process: client CPU is ``time.process_time``; Redis's is INFO cpu (``used_cpu_user`` +
``used_cpu_sys``) over the same batches; EVALSHA calls from INFO commandstats. For an A/B against
another checkout, run it with ``PYTHONPATH`` set to that checkout (round 6's main names
``Bus.commit_together`` ``pipeline_commits``; the measure calls whichever the bus has).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.bus.publishing import Commit
from tradebot.common.embedded import ANY_PORT, EmbeddedRedis
from tradebot.common.streams import checkpoint_key, lease_key, tick_stream

ROLE, OWNER = "strategy", "me"


async def redis_cpu_s(bus: Bus) -> float:
    info: dict[str, Any] = await bus.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(redis_url: str, batches: int, partitions: int) -> tuple[float, float, int]:
    """(client CPU µs, Redis CPU µs, EVALSHA calls) per batch of ``partitions`` commits."""
    bus = Bus(connect(redis_url))
    together = next(name for name in ("commit_together", "pipeline_commits") if hasattr(bus, name))
    getattr(bus, together)()
    ends: dict[int, list[str]] = {}
    for p in range(partitions):
        await bus.redis.set(lease_key(ROLE, p), OWNER)
        ends[p] = [await bus.redis.xadd(tick_stream(p), {"n": "1"}) for _ in range(batches + 1)]
        await bus.redis.xgroup_create(tick_stream(p), ROLE, id="0")

    async def batch(n: int) -> None:
        await asyncio.gather(
            *(
                bus.commit(
                    ROLE,
                    Commit(
                        positions={tick_stream(p): ends[p][n]},
                        hashes={checkpoint_key(ROLE, p): {"AAPL": "a" * 60, "MSFT": "m" * 60}},
                    ),
                    lease=(lease_key(ROLE, p), OWNER),
                )
                for p in range(partitions)
            )
        )

    try:
        await batch(0)  # (the script loaded, the connection made)
        await bus.redis.config_resetstat()
        redis_before, cpu_before = await redis_cpu_s(bus), time.process_time()
        for n in range(1, batches + 1):
            await batch(n)
        cpu, redis_cpu = time.process_time() - cpu_before, await redis_cpu_s(bus) - redis_before
        stats: dict[str, Any] = await bus.redis.info("commandstats")
    finally:
        await bus.close()
    return cpu / batches * 1e6, redis_cpu / batches * 1e6, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="measure-commits-"))
    redis = EmbeddedRedis(folder, ANY_PORT)
    redis.start()
    try:
        client_us, redis_us, calls = asyncio.run(measure(redis.url, args.batches, args.partitions))
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    sys.stdout.write(
        f"{args.batches:,} batches of {args.partitions} commits: client CPU {client_us:.0f} µs/batch, "
        f"Redis CPU {redis_us:.0f} µs/batch, {calls / args.batches:.1f} EVALSHA/batch\n"
    )


if __name__ == "__main__":
    main()
