"""The Redis connection layer: a client that reports outages as such, and the errors every retry
loop rides out; what differs on a Redis Cluster (REDIS_CLUSTER) is asked here too."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import DefaultParser
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, ResponseError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from tradebot.common.replicas import ReplicasBehindError


class RedisRefusedError(ResponseError):  # type: ignore[misc]  # redis is untyped here (see pyproject)
    """Redis is up but cannot take this command for now: out of memory, persistence failing, a
    replica, loading, busy with a script. Says nothing about the entry at hand: wait and retry."""


# A cluster in failover answers CLUSTERDOWN / TRYAGAIN, or briefly serves no node for a slot: the
# cluster client re-reads the topology, and every retry loop rides it out like an outage.
RECOVERABLE_REDIS_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    RedisRefusedError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    ReplicasBehindError,  # REDIS_MIN_REPLICAS: the commit is held until its replicas have it
)

SOCKET_TIMEOUT_S = 30.0  # a hung Redis fails a command after this long, instead of after hours
# Error codes Redis answers when it refuses a command for a while; a script's error carries the
# code of the command inside it ("-OOM …" on Redis 6.2, the code itself on 7.x).
# UNBLOCKED: a blocked read cut off because the server just became a replica.
_REFUSING_CODES = (
    "OOM",
    "MISCONF",
    "READONLY",
    "BUSY",
    "LOADING",
    "NOREPLICAS",
    "MASTERDOWN",
    "TRYAGAIN",
    "UNBLOCKED",
)
_REFUSING_IN_SCRIPT = re.compile(r"-(" + "|".join(_REFUSING_CODES) + r") ")


class _OutageAwareParser(DefaultParser):  # type: ignore[misc]
    """redis-py's reply parser, turning every "refusing for now" error into :class:`RedisRefusedError`."""

    @classmethod
    def parse_error(cls, response: str) -> ResponseError:
        code = response.split(" ", 1)[0]
        if code in _REFUSING_CODES or (code == "ERR" and _REFUSING_IN_SCRIPT.search(response)):
            return RedisRefusedError(response)
        return super().parse_error(response)


_HIREDIS = HiredisRespSerializer() if HIREDIS_AVAILABLE else None


class _Connection(aioredis.Connection):  # type: ignore[misc]
    """redis-py's TCP connection (8.1), packing in C and sending a command without a task.

    redis-py sends every command through ``asyncio.wait_for(…, socket_timeout)``, which on Python
    3.11 makes a task, and a turn of the event loop, per command: a live feed batch costs the
    strategy two commands, its commit and its read, and every worker pays the same per call. Here
    the same send runs in the caller's task under ``asyncio.timeout`` (a timer, no task), as
    redis-py's reads already do; a cancellation lands as it is (3.11's ``wait_for`` could lose one
    that came as the send ended). Otherwise as redis-py's own ``send_packed_command``: a timeout
    or a lost connection fails the command (the connection dropped), nothing is retried.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        """As redis-py's, in C: its asyncio connection packs in Python (its sync one uses hiredis),
        ~3x the CPU for a commit of eight partitions' arguments; the same bytes, the same DataError."""
        return _HIREDIS.pack(*args) if _HIREDIS is not None else super().pack_command(*args)  # type: ignore[no-any-return]

    async def send_packed_command(self, command: str | bytes | Iterable[bytes], check_health: bool = True) -> None:
        if not self.socket_timeout:
            return await super().send_packed_command(command, check_health)  # type: ignore[no-any-return]
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            async with asyncio.timeout(self.socket_timeout):
                await self._send_packed_command(command)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as error:
            await self.disconnect(nowait=True)
            number, message = ("UNKNOWN", error.args[0]) if len(error.args) == 1 else error.args[:2]
            raise RedisConnectionError(f"Error {number} while writing to socket. {message}.") from error
        except BaseException:
            await self.disconnect(nowait=True)  # (half a command may have gone out: the connection goes)
            raise
        return None


def connect(url: str, *, cluster: bool = False, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> aioredis.Redis:
    """A client without transport-level retries, with socket timeouts, that reports outages as such.

    redis-py would silently re-send a command whose reply was lost, which could run a commit or
    an XREADGROUP twice; every caller rides out outages with its own backoff loop instead and
    knows how to resume (pending entries first, state from the checkpoint). ``socket_timeout_s``
    must outlast the longest blocking read (BUS_BLOCK_MS). With ``cluster`` (REDIS_CLUSTER), ``url``
    names one node of a Redis Cluster and redis-py's cluster client routes each command to the
    master of its slot (it follows MOVED itself, and re-reads the topology after a failed node).
    """
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(NoBackoff(), retries=0),
        "health_check_interval": 30,
        "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout_s,
        "socket_keepalive": True,
    }
    if not cluster:
        # (a rediss:// or unix:// URL names its own connection class, which wins over this one)
        return aioredis.Redis.from_url(url, parser_class=_OutageAwareParser, connection_class=_Connection, **options)
    client = RedisCluster.from_url(url, **options)
    # The cluster client takes no parser_class; every node it creates (now, or when it discovers
    # the topology) gets the connection options of this one dict, so the parser goes in there.
    client.connection_kwargs["parser_class"] = _OutageAwareParser
    for node in client.startup_nodes:
        node.connection_kwargs["parser_class"] = _OutageAwareParser
    return client


def is_cluster(client: aioredis.Redis) -> bool:
    """True for redis-py's cluster client (REDIS_CLUSTER)."""
    return isinstance(client, RedisCluster)


async def get_many(client: aioredis.Redis, keys: Sequence[str]) -> list[Any]:
    """The values of ``keys`` (None where absent), in order: one MGET, or on a cluster one per slot
    (a cluster refuses an MGET across slots)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


def by_slot(streams: Iterable[str]) -> list[list[str]]:
    """``streams`` grouped by cluster hash slot, in first-seen order: one multi-key command each."""
    groups: dict[int, list[str]] = {}
    for stream in streams:
        groups.setdefault(key_slot(stream.encode()), []).append(stream)
    return list(groups.values())
