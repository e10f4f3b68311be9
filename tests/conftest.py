"""Session fixtures: the same embedded Redis and PostgreSQL the product runs, on free ports."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.redis_cluster import CLUSTER_MARK, LocalCluster, connect_to
from tests.redis_versions import REDIS_VERSIONS, use_redis
from tradebot.common.bus import Bus
from tradebot.common.config import Settings
from tradebot.common.embedded import ANY_PORT, EmbeddedRedis, embedded_servers


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(redis_url, database_url) of one embedded pair for the whole run.

    Not under pytest's own folder: every pytest run closes that to other users again, and
    PostgreSQL (run as an unprivileged user under root) then dies at its next checkpoint.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="tradebot-test-servers-"))
    try:
        with embedded_servers(data_dir, ANY_PORT, ANY_PORT) as urls:
            yield urls
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> str:
    return servers[0]


@pytest.fixture(scope="session")
def redis7_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis 7 for the whole run, started on first use."""
    monkeypatch = pytest.MonkeyPatch()
    use_redis("7", monkeypatch)
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis7"), ANY_PORT)
    try:
        server.start()
    finally:
        monkeypatch.undo()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster (3 masters, 3 replicas, Redis 7) for the whole run, started on first use."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=REDIS_VERSIONS, ids=lambda version: f"redis{version}")
def redis_version(request: pytest.FixtureRequest) -> str:
    """Each Redis version tradebot supports; a module opts in with ``redis_url = versioned_redis_url``."""
    return request.param


@pytest.fixture(params=[*REDIS_VERSIONS, "cluster"], ids=lambda version: f"redis{version}")
def redis_target(request: pytest.FixtureRequest) -> str:
    """Each Redis version and a Redis Cluster; a module opts in with ``redis_version = redis_target``."""
    return request.param


@pytest.fixture
def versioned_redis_url(redis_version: str, request: pytest.FixtureRequest) -> str:
    """The shared Redis of ``redis_version`` (module override target for ``redis_url``)."""
    if redis_version == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return request.getfixturevalue("servers")[0] if redis_version == "6.2" else request.getfixturevalue("redis7_url")


@pytest.fixture
def versioned_private_redis(
    redis_version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EmbeddedRedis]:
    """``private_redis`` of ``redis_version`` (restarts in the test run the same version)."""
    use_redis(redis_version, monkeypatch)
    server = EmbeddedRedis(tmp_path / "redis", ANY_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str]) -> str:
    return servers[1]


@pytest.fixture
def settings(redis_url: str, database_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test servers, with short timeouts so tests run quickly."""
    return Settings(
        _env_file=None,
        redis_url=redis_url.removesuffix(CLUSTER_MARK),
        redis_cluster=redis_url.endswith(CLUSTER_MARK),
        database_url=database_url,
        data_dir=tmp_path,
        bus_block_ms=100,
        claim_idle_ms=500,
        lease_ttl_ms=1500,
        heartbeat_ttl_s=3,
        grace_period_s=5,
        symbol_mode="custom",
        symbols=["AAPL", "MSFT", "NVDA"],
    )


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[Bus]:
    """A bus on an empty Redis database."""
    client = connect_to(redis_url)
    await client.flushdb()
    instance = Bus(client, max_deliveries=3)
    yield instance
    await instance.close()


@pytest.fixture
async def clean_database(database_url: str) -> str:
    """The test database with every tradebot table emptied (schema kept)."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        if tables:
            await conn.execute("TRUNCATE " + ", ".join(t["tablename"] for t in tables))
    finally:
        await conn.close()
    return database_url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, which the test may stop and restart."""
    server = EmbeddedRedis(tmp_path / "redis", ANY_PORT)
    server.start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name every TimescaleDB test with its outcome, so a log shows them PASSED (or why they skipped)."""
    lines = [
        f"{report.outcome.upper()} {report.nodeid}"
        for outcome in ("passed", "failed", "skipped", "error")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "keywords", {}).get("timescale") and (report.when == "call" or report.outcome != "passed")
    ]
    if lines:
        terminalreporter.section("TimescaleDB tests (TEST_TIMESCALE_DSN)")
        for line in sorted(set(lines)):
            terminalreporter.line(line)
