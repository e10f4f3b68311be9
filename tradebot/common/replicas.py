"""REDIS_MIN_REPLICAS: a commit counts only once that many replicas have it (Redis WAIT).

WAIT blocks until the replicas have acknowledged the last write *of its own connection*, so the
commit script and the WAIT go out together on one connection: a pipeline on one Redis; on a cluster
redis-py's ClusterPipeline, which sends the commands for one node on one connection, with the
keyless WAIT sent to the node that owns the commit's slot (``target_nodes``). Redirections are not
followed inside that pipeline (a redirected script would run on another connection than its WAIT):
a MOVED or ASK means the script did not run, the topology is read again and the caller retries.

A commit that did not reach its replicas (WAIT saw fewer, the reply was lost, the node went away)
is not known to be durable: the caller's retry finds it already applied and writes nothing, so the
next WAIT on that connection would wait for nothing. The retry therefore writes a small barrier key
in the commit's slot before its WAIT (``barrier``): replication is one ordered stream per master, so
a replica that has the barrier has everything written before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tradebot.common.streams import slot_tag

log = logging.getLogger(__name__)

# How long one WAIT blocks for the replicas; past it the commit is held as an outage and retried.
WAIT_TIMEOUT_MS = 2000


class ReplicasBehindError(ResponseError):  # type: ignore[misc]  # redis is untyped here (see pyproject)
    """Fewer replicas than REDIS_MIN_REPLICAS acknowledged a commit in time: not durable yet, an
    outage every retry loop rides out (the bus lists it among the recoverable errors)."""


def barrier_key(anchor: str) -> str:
    """A key in the cluster slot of ``anchor``."""
    return f"replicated:{slot_tag(anchor)}"


async def run_replicated(
    client: aioredis.Redis,
    script: AsyncScript | None,
    keys: Sequence[str],
    args: Sequence[Any],
    min_replicas: int,
    *,
    barrier: bool,
) -> Any:
    """Run ``script`` (None: only the barrier) and WAIT for ``min_replicas`` on the same connection.

    Returns the script's reply once enough replicas have it; raises :class:`ReplicasBehindError`
    when WAIT saw fewer, and the usual outage errors when a node is away or moved.
    """
    for _ in range(2):  # a second time only after NOSCRIPT (the script was not run)
        replies = await _pipeline(client, script, keys, args, min_replicas, barrier=barrier or script is None)
        first = replies[0]
        if isinstance(first, NoScriptError) and script is not None:
            await client.script_load(script.script)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                await _forget_topology(client, reply)
                if isinstance(reply, (MovedError, AskError)):
                    raise TryAgainError(f"the commit's slot moved ({reply}); it was not run")
                raise reply
        replicas = int(replies[-1])
        if replicas < min_replicas:
            log.error(
                "commit held: %d of REDIS_MIN_REPLICAS=%d replicas had it after %d ms; it counts once they do "
                "(is a replica down or far behind?)",
                replicas,
                min_replicas,
                WAIT_TIMEOUT_MS,
            )
            raise ReplicasBehindError(f"{replicas} of REDIS_MIN_REPLICAS={min_replicas} replicas have the commit")
        return first if script is not None else None
    raise NoScriptError("the commit script could not be loaded")


async def _pipeline(
    client: aioredis.Redis,
    script: AsyncScript | None,
    keys: Sequence[str],
    args: Sequence[Any],
    min_replicas: int,
    *,
    barrier: bool,
) -> list[Any]:
    cluster = isinstance(client, RedisCluster)
    if cluster:  # the topology read again first if it was dropped, so WAIT's node is the script's
        await client.initialize()
    pipe = client.pipeline() if cluster else client.pipeline(transaction=False)
    async with pipe:
        if script is not None:
            pipe.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args
            )  # (evalsha is blocked on a cluster pipe)
        if barrier:
            pipe.set(barrier_key(keys[0]), "1")
        target = {"target_nodes": client.get_node_from_key(keys[0])} if cluster else {}
        pipe.execute_command("WAIT", min_replicas, WAIT_TIMEOUT_MS, **target)
        if cluster:
            replies: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
        else:
            replies = await pipe.execute(raise_on_error=False)
        return replies


async def _forget_topology(client: aioredis.Redis, error: Exception) -> None:
    """After a redirect or a lost node, make the cluster client read the topology again (as its own
    command path does): the next attempt goes to the slot's current master."""
    if isinstance(client, RedisCluster) and isinstance(
        error, (MovedError, AskError, RedisConnectionError, RedisTimeoutError, OSError)
    ):
        await client.aclose()
