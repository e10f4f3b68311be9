"""Fault injection for the chaos suite: private servers, a supervised pipeline, and the faults themselves.

The servers are this suite's own (it stops, kills and restarts them); the workers run under a real
`tradebot up` process pointed at them (REDIS_URL / DATABASE_URL set), which the suite also kills.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

from tests.helpers import wait_until
from tests.up_process import UpProcess, descendants, still_running
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.embedded import ANY_PORT, EmbeddedPostgres, EmbeddedRedis
from tradebot.roles import ROLES

log = logging.getLogger("tests.chaos")
T = TypeVar("T")

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

    def rewrite_aof(self) -> None:
        """BGREWRITEAOF, waited for: the next restart loads a snapshot plus the commands after it,
        as a Redis does once its file has grown (Redis 7.0's own group lag goes wrong there)."""
        client = redis.Redis(port=self.redis.port, decode_responses=True, socket_timeout=5)
        try:
            try:
                client.bgrewriteaof()
            except redis.ResponseError:  # one is already running: wait for that one
                pass
            deadline = time.monotonic() + 60
            while _rewriting(client.info("persistence")):
                if time.monotonic() > deadline:
                    raise AssertionError("the append-only file rewrite did not finish within 60 s")
                time.sleep(0.05)  # polling a condition with a deadline (in a thread)
        finally:
            client.close()

    def restart_redis(self) -> None:
        """Stop (SIGTERM: Redis writes and fsyncs its append-only file) and start again on the same data."""
        self.redis.stop()
        self.redis.start()

    def kill_redis(self) -> None:
        """SIGKILL and start again: up to a second of acknowledged writes may be gone (appendfsync everysec)."""
        assert self.redis.process is not None
        self.redis.process.kill()
        self.redis.process.wait()
        self.redis.process = None
        self.redis.start()


def _rewriting(persistence: dict[str, object]) -> bool:
    return bool(persistence["aof_rewrite_in_progress"]) or bool(persistence["aof_rewrite_scheduled"])


@contextmanager
def chaos_servers(data_dir: Path) -> Iterator[ChaosServers]:
    """Both servers, stopped on the way out whatever happened."""
    servers = ChaosServers(
        EmbeddedRedis(data_dir / "redis", ANY_PORT), EmbeddedPostgres(data_dir / "postgres", ANY_PORT)
    )
    servers.redis.start()
    try:
        servers.postgres.start()
        yield servers
    finally:
        servers.postgres.stop("immediate")
        servers.redis.stop()


@dataclass
class UpSupervision:
    """Every worker under a real `tradebot up` process: workers killed at random, the supervisor itself too."""

    up: UpProcess
    scale: dict[str, int]
    rng: random.Random
    kills: Counter = field(default_factory=Counter)
    supervisor_kills: int = 0

    def start(self) -> None:
        self.up.process = None
        # the API and the alerts role take part in nothing the chaos checks
        self.up.start(
            *(f"--scale={role}={count}" for role, count in self.scale.items()), "--scale=api=0", "--scale=alerts=0"
        )

    def workers(self) -> dict[int, str]:
        """pid → role of every worker process of the running supervisor."""
        assert self.up.process is not None
        found = {}
        for pid in descendants(self.up.process.pid):
            module = _module_of(pid)
            if module in ROLE_OF_MODULE:
                found[pid] = ROLE_OF_MODULE[module]
        return found

    async def kill_random_worker(self) -> str:
        """SIGKILL one running worker chosen by the seeded generator; returns its role."""
        await wait_until(lambda: len(self.workers()) == sum(self.scale.values()), timeout=60, what="every worker")
        pid, role = self.rng.choice(sorted(self.workers().items()))
        os.kill(pid, signal.SIGKILL)
        self.kills[role] += 1
        log.warning("chaos: killed %s (pid %d) with SIGKILL", role, pid)
        return role

    async def kill_supervisor(self) -> None:
        """SIGKILL `tradebot up` itself: every worker must stop (within its GRACE_PERIOD_S); then restart it."""
        assert self.up.process is not None
        await wait_until(lambda: len(self.workers()) == sum(self.scale.values()), timeout=60, what="every worker")
        tree = descendants(self.up.process.pid)
        self.up.process.send_signal(signal.SIGKILL)
        self.up.process.wait()
        self.supervisor_kills += 1
        await wait_until(lambda: not still_running(tree), timeout=60, what=f"orphans to stop: {still_running(tree)}")
        self.start()

    def stop(self) -> int | None:
        return self.up.stop()

    def logs(self, tail_chars: int = 3000) -> str:
        return self.up.log(tail_chars)


ROLE_OF_MODULE = {module: role for role, module in ROLES.items()}


def _module_of(pid: int) -> str | None:
    """The ``-m`` module a Python process runs, if any."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return arguments[arguments.index("-m") + 1] if "-m" in arguments[:-1] else None


async def through_outages(operation: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    """The test's own Redis calls: retried while Redis restarts (the workers have their own backoff)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await operation()
        except RECOVERABLE_REDIS_ERRORS:  # a cluster in failover answers CLUSTERDOWN / TRYAGAIN too
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
    kind: str  # "kill", "bad", "redis_rewrite", "redis_restart", "redis_kill", "postgres_stop", "postgres_start",
    # "supervisor_kill"


# A malformed entry injected just before Redis is killed may be among the writes Redis loses; then
# nothing could dead-letter it. Bad entries keep this far from a Redis kill.
REDIS_LOSS_S = 3.0


def fault_schedule(kills: int, bad_entries: int, run_s: float, postgres_outage_s: float) -> list[Fault]:
    """Worker kills and bad entries spread over the run; an AOF rewrite, then a Redis restart and a
    Redis kill; one PostgreSQL outage; one kill of the supervisor."""
    faults = [Fault(run_s * (i + 0.5) / kills, "kill") for i in range(kills)]
    redis_kill_at = run_s * 0.42
    faults += [Fault(_clear_of(run_s * (i + 0.3) / bad_entries, redis_kill_at), "bad") for i in range(bad_entries)]
    faults += [
        Fault(run_s * 0.2, "redis_rewrite"),
        Fault(run_s * 0.25, "redis_restart"),
        Fault(redis_kill_at, "redis_kill"),
        Fault(run_s * 0.55, "postgres_stop"),
        Fault(run_s * 0.55 + postgres_outage_s, "postgres_start"),
        Fault(run_s * 0.8, "supervisor_kill"),
    ]
    return sorted(faults, key=lambda fault: fault.at_s)


def _clear_of(at_s: float, redis_kill_at_s: float) -> float:
    """A bad entry's moment, moved out of the seconds before the Redis kill."""
    return at_s - REDIS_LOSS_S if redis_kill_at_s - REDIS_LOSS_S < at_s <= redis_kill_at_s else at_s
