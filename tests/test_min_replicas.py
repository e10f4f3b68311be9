"""REDIS_MIN_REPLICAS: a commit counts only once that many replicas have it (WAIT on the connection
that wrote), on one Redis without replicas (held) and on a real Redis Cluster (one replica each)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import redis
from pydantic import SecretStr

from tests.redis_cluster import LocalCluster, commit_until_counted, connect_to
from tradebot.api.history_service import create_app
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, connect
from tradebot.common.bus.publishing import Commit, CommitResult
from tradebot.common.config import Settings
from tradebot.common.models import Tick
from tradebot.common.replicas import ReplicasBehindError, barrier_key
from tradebot.common.streams import ORDERS_NEW, tick_stream

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def tick(n: int) -> Tick:
    return Tick.create("AAPL", 100 + n, 1, START, trade_id=n)


def cursor_commit(partition: int, n: int) -> Commit:
    """A producer's commit like the mock feed's: an entry and its cursor, guarded by the last cursor."""
    cursor = f"cursor:test:{{{partition}}}"
    return Commit(
        publish=[(tick_stream(partition), tick(n))], state={cursor: str(n)}, guard=(cursor, str(n - 1) if n else "")
    )


@pytest.fixture
async def cluster_bus(redis_cluster: LocalCluster) -> AsyncIterator[Bus]:
    client = connect_to(redis_cluster.url)
    await client.flushall()
    instance = Bus(client, min_replicas=1)
    yield instance
    await instance.close()


def on_replica(cluster: LocalCluster, key: str) -> int:
    """XLEN of ``key`` read from the replica of its master (READONLY on one connection)."""
    master = cluster.master_of(key)
    for node in cluster.live():
        info = node.client().info("replication")
        if info["role"] == "slave" and int(info["master_port"]) == master.port:
            replica = redis.Redis(
                host="127.0.0.1", port=node.port, decode_responses=True, single_connection_client=True
            )
            replica.execute_command("READONLY")
            length = int(replica.xlen(key))
            replica.close()
            return length
    raise LookupError(f"no replica of {master.port}")


def test_barrier_key_shares_the_slot_of_its_anchor() -> None:
    from redis.crc import key_slot

    for anchor in ["lease:strategy:{3}", "cursor:mock", "webhook:alert:{0}:abc", "price.bars"]:
        assert key_slot(barrier_key(anchor).encode()) == key_slot(anchor.encode())


async def test_without_a_replica_a_commit_is_held_and_a_retry_waits_again(redis_url: str) -> None:
    client = connect(redis_url)
    await client.flushdb()
    await client.script_flush()  # the commit script is loaded on the way (NOSCRIPT: it did not run)
    bus = Bus(client, min_replicas=1)
    try:
        with pytest.raises(ReplicasBehindError) as raised:
            await bus.commit("", cursor_commit(0, 0))
        assert isinstance(raised.value, RECOVERABLE_REDIS_ERRORS), "retry loops must ride it out as an outage"
        assert await client.xlen(tick_stream(0)) == 1, "applied on the master, only not counted yet"
        # The retry finds it applied (the guard moved on: nothing written) and still does not count it.
        with pytest.raises(ReplicasBehindError):
            await bus.commit("", cursor_commit(0, 0))
        assert await client.xlen(tick_stream(0)) == 1
        with pytest.raises(ReplicasBehindError):
            await bus.publish_once("webhook:alert:{0}:x", 60_000, [(tick_stream(0), tick(1))])
        assert await Bus(client).commit("", cursor_commit(0, 1)) is CommitResult.APPLIED  # 0: no WAIT
    finally:
        await bus.close()


async def test_on_a_cluster_a_commit_returns_once_its_replica_has_it(
    cluster_bus: Bus, redis_cluster: LocalCluster
) -> None:
    for partition in range(4):  # slots on different masters
        for n in range(3):  # (a busy machine may hold one: retried, as a producer's loop does)
            await commit_until_counted(cluster_bus, cursor_commit(partition, n))
            assert on_replica(redis_cluster, tick_stream(partition)) == n + 1
    key, items = "webhook:alert:{0}:x", [(tick_stream(0), tick(9))]
    for _ in range(50):  # as the webhook's sender: resent until confirmed
        try:
            if not await cluster_bus.publish_once(key, 60_000, items):
                await cluster_bus.confirm_replicated(key)  # taken before: confirmed on the replica too
            break
        except RECOVERABLE_REDIS_ERRORS:
            await asyncio.sleep(0.1)  # the sender's backoff, not a wait on a condition
    assert on_replica(redis_cluster, tick_stream(0)) == 4
    assert not await cluster_bus.publish_once(key, 60_000, items)


async def test_on_a_cluster_a_script_unknown_to_a_new_master_is_loaded(
    cluster_bus: Bus, redis_cluster: LocalCluster
) -> None:
    for node in redis_cluster.live():  # as on a master that just took over, or restarted
        if node.client().info("replication")["role"] == "master":
            node.client().script_flush()
    await commit_until_counted(cluster_bus, cursor_commit(5, 0))
    assert on_replica(redis_cluster, tick_stream(5)) == 1


async def test_a_webhook_alert_or_control_command_no_replica_has_answers_503_also_when_resent(
    settings: Settings, clean_database: str, redis_url: str
) -> None:
    """With REDIS_MIN_REPLICAS=1 and no replica, the API never confirms: the alert is applied on the
    master but held, and a resend is a 503 too (not "duplicate") until a replica has it."""
    client = connect(redis_url)
    await client.flushdb()
    token = "test-token"
    held = settings.model_copy(
        update={"redis_min_replicas": 1, "webhook_secret": SecretStr("s3cret"), "api_token": SecretStr(token)}
    )
    app = create_app(held)
    alert = {"secret": "s3cret", "symbol": "AAPL", "side": "buy", "price": 187.5, "alert_id": "a-1"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as api,
    ):
        for _ in range(2):
            response = await api.post("/webhooks/tradingview", json=alert)
            assert response.status_code == 503, response.text
            assert "REDIS_MIN_REPLICAS=1" in response.json()["detail"]
        halt = await api.post("/control/halt", json={"reason": "test"}, headers={"Authorization": f"Bearer {token}"})
        assert halt.status_code == 503, halt.text
    assert await client.xlen(ORDERS_NEW) == 1, "applied once on the master, only never confirmed"
    await client.aclose()
