"""Where the benchmark runs: servers of its own, never the user's data.

With REDIS_URL / DATABASE_URL unset it starts embedded servers in ``<DATA_DIR>/bench`` on free
ports, so a running ``tradebot up`` (and its data) is never touched. With URLs given it works in
Redis database 15 and the PostgreSQL database ``tradebot_bench`` (the storage benchmark's), which
it flushes and recreates. Either way it only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from tradebot.common.bus.connection import connect
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.db import with_database
from tradebot.common.embedded import ANY_PORT, embedded_servers

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
AOF_REWRITE_TIMEOUT_S = 30.0

BENCH_DATABASE = "tradebot_bench"
BENCH_REDIS_DB = 15


class BenchTargetError(ValueError):
    """The benchmark cannot run on the servers it was given (remote, or only one URL set)."""


@dataclass(frozen=True)
class BenchTarget:
    """The settings every bench step uses: the server URLs and the bench's own database names."""

    settings: Settings  # redis_url / database_url: the servers (user's DB names; for the storage bench)
    redis_url: str  # Redis database BENCH_REDIS_DB: flushed freely
    database_url: str  # database BENCH_DATABASE: recreated freely
    embedded: bool = False

    @property
    def bench_settings(self) -> ReadySettings:
        """Settings pointing at the bench's own Redis and PostgreSQL databases."""
        return ReadySettings.resolved(self.settings, redis_url=self.redis_url, database_url=self.database_url)


def require_loopback(url: str) -> None:
    """Refuse any server that is not on this machine: a benchmark is heavy load."""
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise BenchTargetError(
            f"the benchmark only runs against 127.0.0.1, not {host!r}: "
            "unset REDIS_URL/DATABASE_URL to use embedded servers, or point them at localhost"
        )


def redis_database(url: str, number: int) -> str:
    """The same Redis server, another database number."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{number}"))


@contextmanager
def bench_target(settings: Settings) -> Iterator[BenchTarget]:
    """The servers to measure on (see the module docstring); embedded ones stop afterwards."""
    if bool(settings.redis_url) != bool(settings.database_url):
        raise BenchTargetError(
            "set both REDIS_URL and DATABASE_URL for the benchmark, or neither "
            "(then it starts embedded servers of its own)"
        )
    if settings.redis_cluster:
        raise BenchTargetError(
            "REDIS_CLUSTER=true: the benchmark works in a Redis database of its own (15), which a Redis "
            "Cluster does not have; unset REDIS_CLUSTER and REDIS_URL (embedded servers), or, from a "
            "checkout, measure a local cluster with `python -m tests.measure_cluster --e2e`"
        )
    if settings.redis_url and settings.database_url:
        require_loopback(settings.redis_url)
        require_loopback(settings.database_url)
        yield _target(settings)
        return
    data_dir = settings.data_dir / "bench"
    with embedded_servers(data_dir, ANY_PORT, ANY_PORT) as (redis_url, database_url):
        yield _target(
            settings.model_copy(update={"redis_url": redis_url, "database_url": database_url, "data_dir": data_dir}),
            embedded=True,
        )


def _target(settings: Settings, *, embedded: bool = False) -> BenchTarget:
    assert settings.redis_url
    assert settings.database_url
    return BenchTarget(
        settings,
        redis_database(settings.redis_url, BENCH_REDIS_DB),
        with_database(settings.database_url, BENCH_DATABASE),
        embedded,
    )


async def clear_bench_redis(target: BenchTarget) -> None:
    """Empty the bench's Redis database; on the bench's own server also compact its append-only file.

    Without the rewrite the file keeps every entry ever written and the next start loads it all.
    """
    client = connect(target.redis_url)
    try:
        await client.flushdb()
        if target.embedded:
            await client.bgrewriteaof()
            # Stopping the server now would abandon the rewrite and keep the old file.
            deadline = time.monotonic() + AOF_REWRITE_TIMEOUT_S
            while (await client.info("persistence"))["aof_rewrite_in_progress"] and time.monotonic() < deadline:  # noqa: ASYNC110 - server-side state: polled
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()
