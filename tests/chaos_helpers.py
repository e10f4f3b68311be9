"""Fault injection for the chaos suite: private servers, supervised workers, and the faults themselves.

The servers are this suite's own (it stops and restarts them); the workers run under the
supervisor's own restart logic (``tradebot.supervisor.supervise``), exactly as ``tradebot up``
runs them, except that each worker's output goes to a log file.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError

from tests.helpers import free_port
from tradebot.common.bus import Bus
from tradebot.common.embedded import EmbeddedPostgres, EmbeddedRedis
from tradebot.roles import module_for
from tradebot.supervisor import Managed, stop_all, supervise

log = logging.getLogger("tests.chaos")
T = TypeVar("T")

SUPERVISE_EVERY_S = 0.2

# Entries no worker can decode; each tick-reading group must dead-letter every one exactly once.
BAD_ENTRIES: list[dict[str, str]] = [
    {"v": "1", "type": "Tick", "data": "{not json"},
    {"v": "1", "type": "Quote", "data": "{}"},
    {"v": "9", "type": "Tick", "data": "{}"},
    {
        "v": "1",
        "type": "Tick",
        "data": '{"id": "x", "symbol": "lower", "timestamp": "2024-01-02T14:30:00Z", "price": 1, "size": 1}',
    },
    {"garbage": "no envelope at all"},
    {
        "v": "1",
        "type": "Tick",
        "data": '{"id": "x", "symbol": "AAPL", "timestamp": "2024-01-02T14:30:00Z", "price": -5, "size": 1}',
    },
    {
        "v": "1",
        "type": "Tick",
        "data": '{"id": "x", "symbol": "AAPL", "timestamp": "2024-01-02T14:30:00", '
        '"price": 5, "size": 1, "extra": true}',
    },
]


@dataclass
class ChaosServers:
    """A Redis and a PostgreSQL of the suite's own, in a temporary folder, on free ports."""

    redis: EmbeddedRedis
    postgres: EmbeddedPostgres

    def restart_redis(self) -> None:
        """Stop (SIGTERM: Redis writes and fsyncs its append-only file) and start again on the same data."""
        self.redis.stop()
        self.redis.start()


@contextmanager
def chaos_servers(data_dir: Path) -> Iterator[ChaosServers]:
    """Both servers, stopped on the way out whatever happened."""
    servers = ChaosServers(
        EmbeddedRedis(data_dir / "redis", free_port()), EmbeddedPostgres(data_dir / "postgres", free_port())
    )
    servers.redis.start()
    try:
        servers.postgres.start()
        yield servers
    finally:
        servers.postgres.stop("immediate")
        servers.redis.stop()


@dataclass
class LoggedWorker(Managed):
    """A supervised worker whose output goes to ``<log_dir>/<name>.log`` (appended across restarts)."""

    log_dir: Path = Path(".")

    def start(self) -> None:
        with (self.log_dir / f"{self.name}.log").open("ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module_for(self.role)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.monotonic()


@dataclass
class Supervision:
    """Workers supervised in the background, killed at random on demand."""

    workers: list[LoggedWorker]
    rng: random.Random
    kills: Counter = field(default_factory=Counter)
    _task: asyncio.Task | None = None

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self._task = asyncio.create_task(self._supervise_forever())

    async def _supervise_forever(self) -> None:
        while True:
            supervise(self.workers)
            await asyncio.sleep(SUPERVISE_EVERY_S)

    def kill_random(self) -> str:
        """SIGKILL one running worker chosen by the seeded generator; returns its name."""
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        victim = self.rng.choice(running)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        self.kills[victim.role] += 1
        log.warning("chaos: killed %s (pid %d) with SIGKILL", victim.name, victim.process.pid)
        return victim.name

    async def stop(self, grace_period_s: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(stop_all, self.workers, grace_period_s)

    def restarts(self) -> dict[str, int]:
        return {w.name: w.restarts for w in self.workers if w.restarts}

    def logs(self, tail_chars: int = 3000) -> str:
        """The end of every worker's log, for failure messages."""
        return "\n".join(
            f"--- {w.name}\n{(w.log_dir / f'{w.name}.log').read_text(errors='replace')[-tail_chars:]}"
            for w in self.workers
        )


async def through_outages(operation: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    """The test's own Redis calls: retried while Redis restarts (the workers have their own backoff)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await operation()
        except (RedisConnectionError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def inject_bad_entry(bus: Bus, stream: str, fields: dict[str, str]) -> str:
    """Append one malformed entry to ``stream``; returns its entry id."""
    return await through_outages(lambda: bus.publish_raw(stream, fields))


@dataclass(frozen=True)
class Fault:
    """One scheduled action: at ``at_s`` seconds after the feed starts."""

    at_s: float
    kind: str  # "kill", "bad", "redis_restart", "postgres_stop", "postgres_start"


def fault_schedule(kills: int, bad_entries: int, run_s: float) -> list[Fault]:
    """Kills and bad entries spread over the run, one Redis restart, one 20 s PostgreSQL stop."""
    faults = [Fault(run_s * (i + 0.5) / kills, "kill") for i in range(kills)]
    faults += [Fault(run_s * (i + 0.3) / bad_entries, "bad") for i in range(bad_entries)]
    faults += [
        Fault(run_s * 0.3, "redis_restart"),
        Fault(run_s * 0.5, "postgres_stop"),
        Fault(run_s * 0.5 + 20, "postgres_start"),
    ]
    return sorted(faults, key=lambda fault: fault.at_s)
