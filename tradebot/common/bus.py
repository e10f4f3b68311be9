"""The one module that speaks Redis Streams and knows the wire format.

An entry is ``{"v": schema version, "type": event class name, "data": event JSON}``. Delivery is
at-least-once: readers ack after their effect, and :meth:`Bus.commit` publishes, writes state and
acks in one atomic script so a crash can never split them.

Retention follows the consumers: nothing here trims by length. :meth:`Bus.trim_consumed` removes
only entries every group of a stream is done with, and memory is bounded by a budget
(:meth:`Bus.wait_for_room`) that producers respect. Errors that mean "Redis cannot take this
right now" (OOM, MISCONF, READONLY, BUSY, LOADING, timeouts) arrive as :class:`RedisRefusedError`, a
recoverable error every retry loop rides out, never as a failure of the entry at hand.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import DefaultParser
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, ResponseError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tradebot.common.codec import decode_event, encode_event
from tradebot.common.config import ReadySettings
from tradebot.common.lifecycle import first_of
from tradebot.common.models import EVENT_TYPES, Event
from tradebot.common.replicas import ReplicasBehindError, barrier_key, run_replicated
from tradebot.common.streams import DEAD_LETTER_PATTERN, SCHEMA_VERSION, dead_letter_stream, hold_key

log = logging.getLogger(__name__)


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
LAG_COUNT_CAP = 1000
SOCKET_TIMEOUT_S = 30.0  # a hung Redis fails a command after this long, instead of after hours
REMEMBERED_ERRORS = 10_000  # last_errors keeps this many entry ids (oldest forgotten first)
ROOM_CHECK_S = 0.5  # how often a producer waiting for memory looks again
ROOM_LOG_EVERY_S = 60.0  # a producer hovering at the budget says so once a minute, not per batch
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


@dataclass(frozen=True)
class Delivery:
    """One entry handed to a consumer: where it came from and the decoded event."""

    stream: str
    entry_id: str
    event: Event


@dataclass(frozen=True)
class StreamHealth:
    """Length, pending and lag of one stream for one group (lag = entries not yet delivered)."""

    stream: str
    group: str
    length: int
    pending: int
    lag: int


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter stream: where the entry came from, why it failed, its raw fields."""

    record_id: str
    stream: str
    entry_id: str
    group: str
    reason: str
    payload: dict[str, str]

    @classmethod
    def from_record(cls, record_id: str, fields: Mapping[str, str]) -> DeadLetter:
        try:
            payload = json.loads(fields.get("payload", "{}"))
        except ValueError:
            payload = {}
        return cls(
            record_id,
            fields.get("stream", ""),
            fields.get("entry_id", ""),
            fields.get("group", ""),
            fields.get("reason", ""),
            payload if isinstance(payload, dict) else {},
        )


class RawEntry(NamedTuple):
    """A stream entry as Redis returns it, before decoding; ``fields`` is None or empty once trimmed."""

    stream: str
    entry_id: str
    fields: dict[str, str] | None


class CommitResult(enum.IntEnum):
    """What :meth:`Bus.commit` did; truthy only when the commit is (now or already) applied."""

    LOST_LEASE = 0
    APPLIED = 1
    STALE = 2

    def __bool__(self) -> bool:
        return self is CommitResult.APPLIED


@dataclass
class Commit:
    """Everything one batch's effect writes to Redis, applied atomically by :meth:`Bus.commit`."""

    publish: list[tuple[str, Event]] = field(default_factory=list)
    acks: list[tuple[str, str]] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> fields to set (HSET)
    deleted: dict[str, list[str]] = field(default_factory=dict)  # key -> fields to delete (HDEL)
    # stream -> id: the group moves there (XGROUP SETID), for a reader that keeps no pending entries
    positions: dict[str, str] = field(default_factory=dict)
    # (stream, wire fields) appended as they are: dead-letter records written with the batch's effect
    records: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # (key, value the producer last read): the commit applies only if the key still holds it
    guard: tuple[str, str] | None = None


# Runs inside Redis as one unit: a worker that lost its lease writes nothing (fencing), and
# outputs, state and acks land together or not at all. A retried commit (its reply was lost)
# must not apply twice: with acks, the first entry is no longer pending; without (a producer),
# the guard key no longer holds the value the producer read. Every key is declared in KEYS (in
# the order lease?, guard?, ack streams, position streams, publish streams, record streams, state
# keys, hashes), as Redis Cluster requires; ARGV holds the counts and values. A reader that keeps no
# pending entries (it reads with XREAD from its group's position) moves its group instead of
# acking; a retry finds the group already there. On a cluster all of them share one slot. Every
# command takes all its arguments at once (one XACK per stream, one HSET and one HDEL per hash):
# Redis appends each command of a script to the AOF as it ran, so a command per entry or per field
# would repeat the key each time.
_COMMIT_SCRIPT = """
-- ARGV[first..last] as the trailing arguments of one command per 1,000 (Lua's unpack has a limit).
local function chunked(command, key, group, first, last)
  for from = first, last, 1000 do
    local to = math.min(from + 999, last)
    if group then redis.call(command, key, group, unpack(ARGV, from, to))
    else redis.call(command, key, unpack(ARGV, from, to)) end
  end
end
-- Whether stream KEYS[k]'s group is already at or past id (the commit that moves it there applied).
local function reached(key, group, id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = {}
    for j = 1, #flat, 2 do info[flat[j]] = flat[j + 1] end
    if info['name'] == group then
      local at_ms, at_seq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
      at_ms, at_seq, ms, seq = tonumber(at_ms), tonumber(at_seq), tonumber(ms), tonumber(seq)
      return at_ms > ms or (at_ms == ms and at_seq >= seq)
    end
  end
  return false
end
local k = 1
local has_lease, owner, group = ARGV[1], ARGV[2], ARGV[3]
if has_lease == '1' then
  if redis.call('GET', KEYS[k]) ~= owner then return 0 end
  k = k + 1
end
local has_guard, guard_value = ARGV[4], ARGV[5]
if has_guard == '1' then
  if (redis.call('GET', KEYS[k]) or '') ~= guard_value then return 2 end
  k = k + 1
end
local i = 6
local streams = tonumber(ARGV[i]); i = i + 1
if streams > 0 and #redis.call('XPENDING', KEYS[k], group, ARGV[i+1], ARGV[i+1], 1) == 0 then return 1 end
for _ = 1, streams do
  local ids = tonumber(ARGV[i])
  chunked('XACK', KEYS[k], group, i + 1, i + ids)
  k = k + 1; i = i + 1 + ids
end
local n = tonumber(ARGV[i]); i = i + 1
if n > 0 and reached(KEYS[k], group, ARGV[i]) then return 1 end
for _ = 1, n do
  redis.call('XGROUP', 'SETID', KEYS[k], group, ARGV[i])
  k = k + 1; i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('XADD', KEYS[k], '*', 'v', ARGV[i], 'type', ARGV[i+1], 'data', ARGV[i+2])
  k = k + 1; i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local fields = tonumber(ARGV[i]); i = i + 1
  redis.call('XADD', KEYS[k], '*', unpack(ARGV, i, i + fields - 1))
  k = k + 1; i = i + fields
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('SET', KEYS[k], ARGV[i]); k = k + 1; i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local fields, gone = tonumber(ARGV[i]), tonumber(ARGV[i+1]); i = i + 2
  chunked('HSET', KEYS[k], nil, i, i + 2 * fields - 1)
  i = i + 2 * fields
  chunked('HDEL', KEYS[k], nil, i, i + gone - 1)
  i = i + gone
  k = k + 1
end
return 1
"""


# XREADGROUP without BLOCK, only for the lease holder (scripts cannot block; waiting is done
# with a plain XREAD by the caller). Returns 0 when the lease is not ours.
# Publish only if KEYS[1] was not set before (an idempotency key kept for ARGV[1] ms): the check and
# the XADDs are one script, so a retried request can neither publish twice nor be lost in between.
# KEYS[2..] are the streams; ARGV[2..] hold, per stream, a field count and then the field pairs.
_PUBLISH_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local at = 2
for k = 2, #KEYS do
    local n = tonumber(ARGV[at])
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, at + 1, at + n))
    at = at + n + 1
end
return 1
"""

_FENCED_READ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local streams = {}
for k = 2, #KEYS do streams[k - 1] = KEYS[k]; streams[#KEYS + k - 2] = ARGV[5] end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', unpack(streams))
"""


# XREAD from positions, for the lease holder only (a reader that keeps its position in its group,
# moved by its commit, instead of pending entries). KEYS[1] is the lease, KEYS[2..] the streams,
# ARGV[3..] their positions. Returns 0 when the lease is not ours.
_POSITIONED_READ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local streams = {}
for k = 2, #KEYS do streams[k - 1] = KEYS[k]; streams[#KEYS + k - 2] = ARGV[k + 1] end
return redis.call('XREAD', 'COUNT', ARGV[2], 'STREAMS', unpack(streams)) or {}
"""


# A group that was read with XREADGROUP (a release before positioned readers) hands its pending
# entries over: they were delivered but never committed, so the group moves back to just before
# the oldest of them and they are acked, in one step, and the positioned reader reads them next.
# Fenced by the lease (KEYS[2], ARGV[2]). Returns the new position, or false when nothing was pending.
_TAKE_OVER_PENDING_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return false end
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
if tonumber(summary[1]) == 0 then return false end
local ms, seq = string.match(summary[2], '^(%d+)-(%d+)$')
local before = seq == '0' and string.format('%d-18446744073709551615', tonumber(ms) - 1)
  or string.format('%s-%d', ms, tonumber(seq) - 1)
repeat
  local rows = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000)
  local ids = {}
  for _, row in ipairs(rows) do ids[#ids + 1] = row[1] end
  if #ids > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
until #rows < 1000
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], before)
return before
"""


# A dead letter is fenced like a commit: a worker that lost its lease cannot write a second record
# of an entry the new owner is handling. Returns 0 when fenced out.
_DEAD_LETTER_SCRIPT = """
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
redis.call('XADD', KEYS[2], '*', 'stream', KEYS[1], 'entry_id', ARGV[4], 'group', ARGV[3], 'reason', ARGV[5],
  'payload', ARGV[6])
redis.call('XACK', KEYS[1], ARGV[3], ARGV[4])
return 1
"""


# The oldest entry of a stream that some group still needs: its oldest pending entry, or else the
# one after the last delivered, or the one after what its snapshot is as of (the hold hash KEYS[2],
# group -> id, when given: a group that restores a snapshot replays the entries after it). Everything
# older goes (XTRIM MINID ~, whole nodes only, so it is cheap). Run as one script so no group moves
# in between. Not trimmed (returns -1) while a group that must read the stream (ARGV) does not exist
# yet, or when it has no group at all. A hold of a group the stream no longer has is ignored.
_TRIM_SCRIPT = """
local info = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(info) ~= 'table' or info.err or #info == 0 then return -1 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local found, oldest_ms, oldest_seq = {}, nil, nil
for _, flat in ipairs(info) do
  local group = {}
  for j = 1, #flat, 2 do group[flat[j]] = flat[j + 1] end
  found[group['name']] = true
  local ms, seq
  if tonumber(group['pending']) > 0 then
    ms, seq = parse(redis.call('XPENDING', KEYS[1], group['name'])[2])
  else
    ms, seq = parse(group['last-delivered-id'])
    seq = seq + 1
  end
  if oldest_ms == nil or ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq) then
    oldest_ms, oldest_seq = ms, seq
  end
end
for _, reader in ipairs(ARGV) do
  if not found[reader] then return -1 end
end
if KEYS[2] then
  local held = redis.call('HGETALL', KEYS[2])
  for j = 1, #held, 2 do
    if found[held[j]] then
      local ms, seq = parse(held[j + 1])
      seq = seq + 1
      if ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq) then oldest_ms, oldest_seq = ms, seq end
    end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-%d', oldest_ms, oldest_seq))
"""


# Take a record out of its dead-letter stream and re-publish its entry, as one step: two replays
# running at once cannot both publish it. Returns the new entry id, or nil if the record is gone.
_REPLAY_SCRIPT = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


def encode(event: Event) -> dict[str, str]:
    """The wire fields of an event."""
    return {"v": SCHEMA_VERSION, "type": type(event).__name__, "data": encode_event(event)}


def decode(fields: Mapping[str, str]) -> Event:
    """The event in an entry; raises ValueError with the reason when it is not a valid one."""
    if fields.get("v") != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema version {fields.get('v')!r}")
    model = EVENT_TYPES.get(fields.get("type", ""))
    if model is None:
        raise ValueError(f"unknown event type {fields.get('type')!r}")
    return decode_event(model, fields.get("data", ""))


def dead_letter_record(
    stream: str, entry_id: str, group: str, reason: str, fields: Mapping[str, str] | None
) -> tuple[str, dict[str, str]]:
    """The dead-letter stream of ``stream`` and the record of one entry that failed there (its raw
    fields as the payload, so ``tradebot dlq replay`` can re-publish it)."""
    payload = json.dumps(dict(fields or {}))
    record = {"stream": stream, "entry_id": entry_id, "group": group, "reason": reason, "payload": payload}
    return dead_letter_stream(stream), record


def entry_ms(entry_id: str) -> int:
    """The millisecond time part of a stream entry id (Redis server time at XADD)."""
    return int(entry_id.split("-", 1)[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _fields(raw: list[str] | dict[str, str] | None) -> dict[str, str] | None:
    """An entry's fields as a dict, from a script's flat [field, value, …] reply or redis-py's dict
    (None for a trimmed entry)."""
    if not raw:
        return None
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


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
        return aioredis.Redis.from_url(url, parser_class=_OutageAwareParser, **options)
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


class LastErrors(OrderedDict[str, str]):
    """The last handler error per entry id, for the dead-letter reason; the oldest go past a bound."""

    def __init__(self, bound: int = REMEMBERED_ERRORS):
        super().__init__()
        self.bound = bound

    def __setitem__(self, entry_id: str, error: str) -> None:
        super().__setitem__(entry_id, error)
        self.move_to_end(entry_id)
        while len(self) > self.bound:
            self.popitem(last=False)


class Bus:
    """Publish, consume, ack, reclaim and dead-letter events on Redis Streams."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_deliveries: int = 5,
        memory_budget_bytes: int | None = None,
        min_replicas: int = 0,
    ) -> None:
        self.redis = client
        self.min_replicas = min_replicas  # REDIS_MIN_REPLICAS (0: a commit counts once its master has it)
        self._unconfirmed: set[str] = set()  # barrier keys of slots whose last commit is not confirmed
        self.max_deliveries = max_deliveries
        self.memory_budget_bytes = memory_budget_bytes  # None: no budget (tests, tools)
        self._commit = client.register_script(_COMMIT_SCRIPT)
        self._fenced_read = client.register_script(_FENCED_READ_SCRIPT)
        self._positioned_read = client.register_script(_POSITIONED_READ_SCRIPT)
        self._take_over_pending = client.register_script(_TAKE_OVER_PENDING_SCRIPT)
        self._publish_once = client.register_script(_PUBLISH_ONCE_SCRIPT)
        self._dead_letter = client.register_script(_DEAD_LETTER_SCRIPT)
        self._trim = client.register_script(_TRIM_SCRIPT)
        self._replay = client.register_script(_REPLAY_SCRIPT)
        self.last_errors = LastErrors()
        self.stats: Counter[str] = Counter()  # trimmed_before_ack, trimmed, waits_for_room, dead_lettered
        self._next_room_log = 0.0

    @classmethod
    def from_settings(cls, settings: ReadySettings) -> Bus:
        """The bus every worker uses: REDIS_URL, REDIS_MEMORY_BUDGET_MB, MAX_DELIVERIES, BUS_BLOCK_MS."""
        timeout_s = max(SOCKET_TIMEOUT_S, settings.bus_block_ms / 1000 + 10)
        client = connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout_s=timeout_s)
        return cls(
            client,
            max_deliveries=settings.max_deliveries,
            memory_budget_bytes=int(settings.redis_memory_budget_mb * 1024 * 1024),
            min_replicas=settings.redis_min_replicas,
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def publish(self, items: Iterable[tuple[str, Event]]) -> list[str]:
        """Append events in one pipelined round trip (never trimming: see :meth:`trim_consumed`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, event in items:
                pipe.xadd(stream, encode(event))
            ids: list[str] = await pipe.execute()
            return ids

    async def publish_fields(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries given as wire fields (a dead-letter replay re-publishes these unchanged)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, dict(fields))
            ids: list[str] = await pipe.execute()
            return ids

    async def publish_once(self, key: str, ttl_ms: int, items: Sequence[tuple[str, Event]]) -> bool:
        """Publish ``items`` unless ``key`` was used in the last ``ttl_ms``; False for a repeat."""
        args: list[object] = [ttl_ms]
        for _, event in items:
            flat = [part for pair in encode(event).items() for part in pair]
            args += [len(flat), *flat]
        return bool(await self._replicated(self._publish_once, [key, *(stream for stream, _ in items)], args))

    async def _replicated(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a commit script; with REDIS_MIN_REPLICAS, return only once that many replicas have it
        (see common/replicas.py), else raise an outage error the caller's retry loop rides out."""
        if not self.min_replicas:
            return await script(keys=keys, args=args)
        slot = barrier_key(keys[0])
        barrier = slot in self._unconfirmed  # a retry: it may find its commit applied and write nothing
        self._unconfirmed.add(slot)
        reply = await run_replicated(self.redis, script, keys, args, self.min_replicas, barrier=barrier)
        self._unconfirmed.discard(slot)
        return reply

    async def confirm_replicated(self, anchor: str) -> None:
        """With REDIS_MIN_REPLICAS, return once that many replicas have everything written so far in
        ``anchor``'s slot (a commit found already applied, whose own WAIT may have failed)."""
        if self.min_replicas:
            await run_replicated(self.redis, None, [anchor], [], self.min_replicas, barrier=True)

    async def entries(self, stream: str) -> list[Event]:
        """Every event on a stream, oldest first (replays and tools read results back with this)."""
        return [decode(fields) for _, fields in await self.redis.xrange(stream)]

    async def entries_of(self, streams: Iterable[str]) -> list[Event]:
        """Every event on ``streams`` (say, every partition's signals), stream after stream."""
        return [event for stream in streams for event in await self.entries(stream)]

    async def publish_raw(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an arbitrary entry (tests and tools inject malformed messages with this)."""
        entry_id: str = await self.redis.xadd(stream, dict(fields))
        return entry_id

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the group at the start of the stream; an existing group is fine (BUSYGROUP only)."""
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):
                raise

    async def read(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        pending: bool = False,
    ) -> list[Delivery]:
        """New entries (or, with ``pending``, this consumer's unacked ones), decoded.

        Entries that fail validation, or were delivered too often, go to the dead-letter stream
        here and are never returned; an empty list therefore always means "nothing to read".
        """
        start = "0" if pending else ">"
        while True:
            entries = await self._read_group(streams, group, consumer, start, count, None if pending else block_ms)
            if not entries:
                return []
            if pending:
                entries = await self._drop_overdelivered(group, consumer, await self._drop_trimmed(group, entries))
            deliveries = await self._decode_or_dead_letter(group, entries)
            if deliveries:
                return deliveries

    async def _read_group(
        self, streams: Sequence[str], group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[RawEntry]:
        """One XREADGROUP; on a cluster one per slot: a look at every slot first, then, if all were
        empty, a blocking read of each in turn with a share of ``block_ms`` (so no slot waits long)."""
        slots = by_slot(streams) if is_cluster(self.redis) else [list(streams)]
        blocks: list[int | None] = [None] if len(slots) > 1 or block_ms is None else [block_ms]
        if len(slots) > 1 and block_ms is not None:
            blocks.append(max(1, block_ms // len(slots)))
        for block in blocks:
            entries: list[RawEntry] = []
            for slot in slots:
                reply = await self.redis.xreadgroup(group, consumer, {s: start for s in slot}, count=count, block=block)
                entries += [RawEntry(stream, entry_id, fields) for stream, rows in reply for entry_id, fields in rows]
                if entries and block is not None:
                    return entries
            if entries:
                return entries
        return []

    async def read_fenced(
        self, streams: Sequence[str], group: str, consumer: str, lease: tuple[str, str], *, count: int, pending: bool
    ) -> list[Delivery] | None:
        """Like :meth:`read` without blocking, but only while ``lease`` is held; None once it is not.

        The lease check and the XREADGROUP run as one script, so a worker that lost its lease can
        no longer take entries that belong, in order, to the partition's new owner. On a cluster
        that holds for the streams in the lease's slot; a stream in another slot (execution reads
        every partition's orders) is read right after a check of the lease, its pending entries
        first: a stale owner paused between its check and its read may have taken some for this
        consumer, and they come next, in order.
        """
        start = "0" if pending else ">"
        while True:
            entries: list[RawEntry] = []
            for streams_of_slot, fenced in self._fence_groups(lease[0], streams):
                if fenced:
                    keys = [lease[0], *streams_of_slot]
                    reply = await self._fenced_read(keys=keys, args=[lease[1], group, consumer, count, start])
                elif await self.redis.get(lease[0]) != lease[1]:
                    reply = 0
                else:
                    reply = await self.redis.xreadgroup(
                        group, consumer, dict.fromkeys(streams_of_slot, "0"), count=count
                    )
                    if not pending and not any(rows for _, rows in reply):
                        wanted = dict.fromkeys(streams_of_slot, ">")
                        reply = await self.redis.xreadgroup(group, consumer, wanted, count=count)
                if reply == 0:
                    return None
                for stream, rows in reply or []:
                    entries += [RawEntry(stream, entry_id, _fields(raw)) for entry_id, raw in rows]
            live = await self._drop_trimmed(group, entries)
            deliveries = await self._decode_or_dead_letter(group, live)
            if deliveries or not entries:
                return deliveries

    async def read_positioned(
        self, positions: Mapping[str, str], lease: tuple[str, str], *, count: int
    ) -> tuple[list[Delivery], list[tuple[RawEntry, str]], dict[str, str]] | None:
        """Up to ``count`` entries per stream after ``positions`` (stream → id), with XREAD, only
        while ``lease`` is held (None once it is not); the streams share the lease's slot.

        For a reader that owns its streams and keeps its place in its commit (the group moved with
        XGROUP SETID, see :class:`Commit`): nothing is pending, so Redis writes no XCLAIM per entry
        and group to its append-only file. Returns the decoded deliveries, the entries that fail
        validation with the reason (for the commit's dead-letter records: written here, a crash
        before the commit would write them twice) and where each stream's read ended.
        """
        keys = [lease[0], *positions]
        reply = await self._positioned_read(keys=keys, args=[lease[1], count, *positions.values()])
        if reply == 0:
            return None
        deliveries: list[Delivery] = []
        rejected: list[tuple[RawEntry, str]] = []
        ended: dict[str, str] = {}
        for stream, rows in reply:
            for entry_id, raw in rows:
                fields = _fields(raw) or {}
                ended[stream] = entry_id
                try:
                    deliveries.append(Delivery(stream, entry_id, decode(fields)))
                except ValueError as error:
                    rejected.append((RawEntry(stream, entry_id, fields), str(error)))
        return deliveries, rejected, ended

    async def entries_between(
        self, stream: str, after: str, until: str, *, count: int
    ) -> tuple[list[Delivery], str | None]:
        """Up to ``count`` entries of ``stream`` after ``after`` up to ``until`` (both ids), decoded,
        and the id of the last one read (None: none left). An entry that fails validation is left
        out (its reader dead-lettered it when it read it): what a positioned reader replays on top
        of a snapshot."""
        rows = await self.redis.xrange(stream, min=f"({after}", max=until, count=count)
        deliveries = []
        for entry_id, raw in rows:
            try:
                deliveries.append(Delivery(stream, entry_id, decode(_fields(raw) or {})))
            except ValueError:
                continue
        return deliveries, rows[-1][0] if rows else None

    async def take_positions(self, streams: Sequence[str], group: str, lease: tuple[str, str]) -> dict[str, str]:
        """Where a positioned reader of ``streams`` starts: its group's position, after taking over
        the entries a reader of an older release left pending (see _TAKE_OVER_PENDING_SCRIPT)."""
        positions = {}
        for stream in streams:
            before = await self._take_over_pending(keys=[stream, lease[0]], args=[group, lease[1]])
            positions[stream] = before or await self.last_delivered_id(stream, group)
        return positions

    def _fence_groups(self, lease_key: str, streams: Sequence[str]) -> list[tuple[list[str], bool]]:
        """``streams`` by slot, each with whether it shares the lease's slot (always, on one Redis)."""
        if not is_cluster(self.redis):
            return [(list(streams), True)]
        lease_slot = key_slot(lease_key.encode())
        return [(group, key_slot(group[0].encode()) == lease_slot) for group in by_slot(streams)]

    async def wait_for_entries(self, positions: Mapping[str, str], block_ms: int, stop: asyncio.Event) -> None:
        """Block until a stream has an entry newer than its position, ``block_ms`` passes, or ``stop``.

        On a cluster one XREAD per slot waits, and the first to see news ends the wait.
        """
        groups = by_slot(positions) if is_cluster(self.redis) else [list(positions)]
        waiting = [
            asyncio.create_task(self.redis.xread({s: positions[s] for s in group}, count=1, block=block_ms))
            for group in groups
        ]
        try:
            await first_of(stop, *waiting)
        finally:  # (also when the reader itself is cancelled: no read is left behind)
            for task in waiting:
                if not task.done():
                    task.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read
            await asyncio.gather(*waiting, return_exceptions=True)

    async def tails(self, streams: Sequence[str]) -> dict[str, str]:
        """The id of each stream's newest entry ("0-0" for an empty or missing stream): where a
        follower starts to see only what comes next."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(stream, count=1)
            replies = await pipe.execute()
        return {stream: rows[0][0] if rows else "0-0" for stream, rows in zip(streams, replies, strict=True)}

    async def last_delivered_id(self, stream: str, group: str) -> str:
        """The id of the newest entry ``group`` has been given ("0-0" before the first)."""
        for info in await self._groups(stream):
            if info["name"] == group:
                return str(info["last-delivered-id"])
        return "0-0"

    async def reclaim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        """Take over entries another (presumably dead) consumer left unacked for too long."""
        claimed: list[RawEntry] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(stream, group, consumer, min_idle_ms, cursor, count=count)
            cursor, rows = reply[0], reply[1]
            claimed.extend(RawEntry(stream, entry_id, fields) for entry_id, fields in rows if entry_id is not None)
            if any(entry_id is None for entry_id, _ in rows):  # Redis 6.2: trimmed entries come back id-less
                await self._ack_vanished(stream, group, consumer)
            if len(reply) > 2 and reply[2]:  # Redis 7: ids of trimmed entries, already dropped from the PEL
                for entry_id in reply[2]:
                    self._note_trimmed(stream, entry_id, group)
            if cursor == "0-0" or len(claimed) >= count:
                break
        live = await self._drop_trimmed(group, claimed)
        if live:
            live = await self._drop_overdelivered(group, consumer, live)
        return await self._decode_or_dead_letter(group, live)

    async def ack(self, group: str, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge handled entries, one XACK per stream."""
        await self._ack_ids(group, [(delivery.stream, delivery.entry_id) for delivery in deliveries])

    async def _ack_ids(self, group: str, entries: Iterable[tuple[str, str]]) -> None:
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, group, *ids)
            await pipe.execute()

    async def commit(self, group: str, commit: Commit, *, lease: tuple[str, str] | None = None) -> CommitResult:
        """Publish, write state (whole keys, and fields of hashes set or deleted) and ack atomically.

        LOST_LEASE (nothing written) if ``lease`` is no longer ours; STALE (nothing written) if the
        guard key moved on; a retry of an already applied commit reports APPLIED and writes nothing.

        On a cluster everything but acks must share the slot of the lease (or guard): a commit that
        does not fails loudly. Acks of streams in other slots (execution acks every partition's
        orders) follow the script, one XACK per stream: a crash in between leaves them pending, and
        they come back to a reader whose state already holds them (execution ignores an order id it
        has decided), so nothing is lost and nothing applied twice.
        """
        commit, later_acks = self._split_acks(commit, lease)
        result = await self._commit_script(group, commit, lease)
        if result is CommitResult.APPLIED and later_acks:
            await self._ack_ids(group, later_acks)
        return result

    def _split_acks(self, commit: Commit, lease: tuple[str, str] | None) -> tuple[Commit, list[tuple[str, str]]]:
        """The commit's script part, and the acks (of a cluster's other slots) that follow it."""
        anchor = lease[0] if lease else commit.guard[0] if commit.guard else None
        if not is_cluster(self.redis) or anchor is None:
            return commit, []
        slot = key_slot(anchor.encode())
        here = [(stream, entry_id) for stream, entry_id in commit.acks if key_slot(stream.encode()) == slot]
        later = [(stream, entry_id) for stream, entry_id in commit.acks if key_slot(stream.encode()) != slot]
        return replace(commit, acks=here), later

    async def _commit_script(self, group: str, commit: Commit, lease: tuple[str, str] | None) -> CommitResult:
        keys: list[str] = [lease[0]] if lease else []
        args: list[str | int] = ["1" if lease else "", lease[1] if lease else "", group]
        if commit.guard:
            keys.append(commit.guard[0])
        args += ["1", commit.guard[1]] if commit.guard else ["", ""]
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in commit.acks:  # the first ack's stream first: it tells a retry apart
            by_stream.setdefault(stream, []).append(entry_id)
        args.append(len(by_stream))
        for stream, ids in by_stream.items():
            keys.append(stream)
            args += [len(ids), *ids]
        args.append(len(commit.positions))
        for stream, entry_id in commit.positions.items():
            keys.append(stream)
            args.append(entry_id)
        args.append(len(commit.publish))
        for stream, event in commit.publish:
            fields = encode(event)
            keys.append(stream)
            args += [fields["v"], fields["type"], fields["data"]]
        args.append(len(commit.records))
        for stream, record in commit.records:
            keys.append(stream)
            args += [2 * len(record), *(part for pair in record.items() for part in pair)]
        args.append(len(commit.state))
        for key, value in commit.state.items():
            keys.append(key)
            args.append(value)
        hash_keys = list(commit.hashes) + [key for key in commit.deleted if key not in commit.hashes]
        args.append(len(hash_keys))
        for key in hash_keys:
            fields, gone = commit.hashes.get(key, {}), commit.deleted.get(key, [])
            keys.append(key)
            args += [len(fields), len(gone)]
            for name, value in fields.items():
                args += [name, value]
            args += gone
        return CommitResult(await self._replicated(self._commit, keys, args))

    async def dead_letter(
        self,
        group: str,
        stream: str,
        entry_id: str,
        fields: Mapping[str, str] | None,
        reason: str,
        *,
        lease: tuple[str, str] | None = None,
    ) -> bool:
        """Move an entry to ``dlq.<stream>`` with its raw payload and the reason, and ack it, atomically.

        With ``lease``, only while the lease is ours (False, nothing written, once it is not).
        Dead-letter streams are never trimmed: ``tradebot dlq`` replays or drops their records.
        """
        payload = dead_letter_record(stream, entry_id, group, reason, fields)[1]["payload"]
        if lease and self._fence_groups(lease[0], [stream]) == [([stream], False)]:  # cluster, other slot
            if await self.redis.get(lease[0]) != lease[1]:
                return False
            lease = None
        keys = [stream, dead_letter_stream(stream), *([lease[0]] if lease else [])]
        args = ["", lease[1] if lease else "", group, entry_id, reason, payload]
        if not await self._dead_letter(keys=keys, args=args):
            return False
        self.last_errors.pop(entry_id, None)
        self.stats["dead_lettered"] += 1
        log.warning("dead-lettered %s %s (group %s): %s", stream, entry_id, group, reason)
        return True

    async def dead_letter_counts(self) -> dict[str, int]:
        """Records per dead-letter stream (what /health and ``tradebot dlq list`` show)."""
        streams = sorted([key async for key in self.redis.scan_iter(match=DEAD_LETTER_PATTERN, count=500)])
        return {stream: await self.redis.xlen(stream) for stream in streams}

    async def dead_letters(self, dead_letters: str, *, start: str = "-", count: int = 100) -> list[DeadLetter]:
        """Records of one dead-letter stream, oldest first, from ``start``."""
        rows = await self.redis.xrange(dead_letters, min=start, max="+", count=count)
        return [DeadLetter.from_record(record_id, fields) for record_id, fields in rows]

    async def replay_dead_letter(self, dead_letters: str, record: DeadLetter) -> str | None:
        """Re-publish a record's raw entry to its original stream and remove the record, atomically.

        The entry keeps its payload, so its event id too: every group of that stream sees it again
        and applies it at most once (effects are idempotent on event ids). Returns the new entry id,
        or None if the record was already gone (replayed or dropped by someone else meanwhile).
        """
        if not record.payload or not record.stream:
            raise ValueError(f"{record.record_id} has no entry to replay (payload or stream missing)")
        flat = [part for pair in record.payload.items() for part in pair]
        replayed: str | None = await self._replay(keys=[dead_letters, record.stream], args=[record.record_id, *flat])
        return replayed

    async def drop_dead_letter(self, dead_letters: str, record_id: str) -> bool:
        """Delete one record for good (after an operator decided it is not worth replaying)."""
        return bool(await self.redis.xdel(dead_letters, record_id))

    async def trim_consumed(self, stream: str, readers: Sequence[str] = ()) -> int:
        """Trim ``stream`` below the oldest entry any of its groups still needs; returns entries removed.

        Nothing is trimmed while one of ``readers`` (the groups that must read it) is missing, or
        when the stream has no group at all: nobody has said what it still needs. What a group's
        snapshot still needs (its hold, see :func:`hold_key`) is kept too.
        """
        hold = hold_key(stream)
        removed = int(await self._trim(keys=[stream, *([hold] if hold else [])], args=list(readers)))
        if removed > 0:
            self.stats["trimmed"] += removed
        return max(0, removed)

    async def remove_idle_consumers(self, stream: str, group: str, *, idle_ms: int, keep: str) -> int:
        """Delete consumers of ``group`` that hold no pending entries and were idle for ``idle_ms``.

        A consumer holding entries is never deleted (that would drop its entries from the PEL);
        reclaiming moves them to a live consumer first. Returns how many were removed.
        """
        try:
            consumers = await self.redis.xinfo_consumers(stream, group)
        except ResponseError:  # no such stream or group yet
            return 0
        removed = 0
        for consumer in consumers:
            if consumer["name"] != keep and int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                await self.redis.xgroup_delconsumer(stream, group, consumer["name"])
                removed += 1
        return removed

    async def memory_used(self) -> int:
        """Bytes Redis has allocated (INFO memory used_memory; on a cluster, of its fullest master)."""
        if is_cluster(self.redis):  # the budget holds per master: the fullest one counts
            per_node = await self.redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return max(int(info["used_memory"]) for info in per_node.values())
        return int((await self.redis.info("memory"))["used_memory"])

    async def has_room(self) -> bool:
        """True when Redis is within the memory budget (always, without a budget)."""
        return self.memory_budget_bytes is None or await self.memory_used() <= self.memory_budget_bytes

    async def wait_for_room(self, retained: Mapping[str, Sequence[str]], stop: asyncio.Event, who: str) -> bool:
        """Wait while Redis is over its memory budget, trimming what consumers finished meanwhile.

        ``retained`` maps each stream to the groups that must read it. Logs once when it starts
        waiting and once when it goes on; returns True when there is room, False if stopped first.
        """
        started, logged = None, False
        while True:
            if await self.has_room():
                break
            for stream, readers in retained.items():
                await self.trim_consumed(stream, readers)
            if await self.has_room():
                break
            if started is None:
                started = time.monotonic()
                self.stats["waits_for_room"] += 1
            if not logged and time.monotonic() >= self._next_room_log:
                logged = True
                self._next_room_log = time.monotonic() + ROOM_LOG_EVERY_S
                log.warning(
                    "%s waits: Redis uses %.1f MB, over REDIS_MEMORY_BUDGET_MB=%.1f; consumers are behind "
                    "(see /health), and entries are kept until every group has them",
                    who,
                    await self.memory_used() / 2**20,
                    (self.memory_budget_bytes or 0) / 2**20,
                )
            try:
                await asyncio.wait_for(stop.wait(), timeout=ROOM_CHECK_S)
                return False
            except TimeoutError:
                continue
        if logged and started is not None:
            log.info("%s goes on: Redis is back within its memory budget after %.1fs", who, time.monotonic() - started)
        return True

    async def follow(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, str, Event | None]]:
        """Entries after ``positions`` (stream → last seen id, ``$`` for "from now"), with plain XREAD:
        a fan-out read that joins no group, so a watcher never holds back or takes work from a worker.
        An entry that fails validation comes back as None (a watcher only looks; dead-lettering is
        the consumers' job)."""
        followed: list[tuple[str, str, Event | None]] = []
        for stream, entry_id, fields in await self.follow_fields(positions, count=count, block_ms=block_ms):
            try:
                followed.append((stream, entry_id, decode(fields)))
            except ValueError:
                followed.append((stream, entry_id, None))
        return followed

    async def follow_fields(
        self, positions: Mapping[str, str], *, count: int, block_ms: int
    ) -> list[tuple[str, str, dict[str, str]]]:
        """As :meth:`follow`, with each entry's fields as stored (for a reader that decodes only
        what it needs, e.g. the live fan-out, which passes a tick's JSON on as it is)."""
        slots = by_slot(positions) if is_cluster(self.redis) else [list(positions)]
        reply: list[Any] = []
        for slot in slots:  # on a cluster one XREAD per slot, the last one waiting for news
            block = block_ms if slot is slots[-1] and not reply else None
            reply += await self.redis.xread({s: positions[s] for s in slot}, count=count, block=block) or []
        return [(stream, entry_id, fields) for stream, rows in reply for entry_id, fields in rows]

    async def health(self, stream: str, group: str) -> StreamHealth:
        """Length, pending count and lag of ``stream`` for ``group``.

        The lag is counted here, up to LAG_COUNT_CAP undelivered entries; beyond that it is
        estimated from entry times, so /health stays cheap exactly when the backlog is large.
        The lag Redis 7 reports is not used: 7.0 restores a group's entries-read from the snapshot
        of a rewritten append-only file, and the reads replayed after it do not advance it, so
        after such a restart its lag stays too high by their number forever (6.2 reports none).
        """
        length = await self.redis.xlen(stream)
        groups = {g["name"]: g for g in await self._groups(stream)}
        info = groups.get(group)
        if info is None:
            return StreamHealth(stream, group, length, 0, length)
        lag = await self._counted_lag(stream, info["last-delivered-id"], length)
        return StreamHealth(stream, group, length, int(info["pending"]), lag)

    async def backlog(self, streams: Sequence[str], group: str) -> int:
        """Entries of ``streams`` that ``group`` has not finished: pending plus not yet delivered."""
        total = 0
        for stream in streams:
            health = await self.health(stream, group)
            total += health.pending + health.lag
        return total

    async def _counted_lag(self, stream: str, last_delivered: str, length: int) -> int:
        after = await self.redis.xrange(stream, min=f"({last_delivered}", max="+", count=LAG_COUNT_CAP + 1)
        if len(after) <= LAG_COUNT_CAP:
            return len(after)
        first = await self.redis.xrange(stream, count=1)
        last = await self.redis.xrevrange(stream, count=1)
        first_ms, last_ms = entry_ms(first[0][0]), entry_ms(last[0][0])
        unread_share = (last_ms - entry_ms(last_delivered)) / max(1, last_ms - first_ms)
        return max(len(after), min(length, round(length * unread_share)))

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
            return groups
        except ResponseError:  # no such stream yet
            return []

    async def _drop_overdelivered(self, group: str, consumer: str, entries: list[RawEntry]) -> list[RawEntry]:
        """Dead-letter entries delivered more than ``max_deliveries`` times; return the rest."""
        times: dict[str, int] = {}
        for stream in {stream for stream, _, _ in entries}:
            ids = [entry_id for s, entry_id, _ in entries if s == stream]
            rows = await self.redis.xpending_range(
                stream, group, min=ids[0], max=ids[-1], count=len(ids) + 1000, consumername=consumer
            )
            times.update((row["message_id"], row["times_delivered"]) for row in rows)
        keep = []
        for stream, entry_id, fields in entries:
            delivered = times.get(entry_id, 0)
            if delivered > self.max_deliveries:
                last = self.last_errors.get(entry_id, "no ack (handler failed or worker died)")
                await self.dead_letter(
                    group, stream, entry_id, fields, f"delivered {delivered} times without ack; last error: {last}"
                )
            else:
                keep.append(RawEntry(stream, entry_id, fields))
        return keep

    async def _ack_vanished(self, stream: str, group: str, consumer: str) -> None:
        """Ack this consumer's pending entries whose data is gone (Redis 6.2 claims them as nil, id-less)."""
        for row in await self.redis.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer):
            entry_id = row["message_id"]
            if not await self.redis.xrange(stream, min=entry_id, max=entry_id):
                await self.redis.xack(stream, group, entry_id)
                self._note_trimmed(stream, entry_id, group)

    async def _drop_trimmed(self, group: str, entries: list[RawEntry]) -> list[RawEntry]:
        """Ack pending entries whose data was trimmed away (nothing left to process); return the rest.

        XADD needs at least one field, so an entry without fields can only be a trimmed one.
        """
        gone = [(stream, entry_id) for stream, entry_id, fields in entries if not fields]
        for stream, entry_id in gone:
            await self.redis.xack(stream, group, entry_id)
            self._note_trimmed(stream, entry_id, group)
        return [entry for entry in entries if entry.fields]

    def _note_trimmed(self, stream: str, entry_id: str, group: str) -> None:
        """A pending entry whose data is gone (someone trimmed or deleted it): counted and logged, never silent."""
        self.stats["trimmed_before_ack"] += 1
        log.error(
            "%s %s was deleted before %s acked it: its event is lost to this group (trimmed by hand, "
            "or with MAXLEN by another tool?)",
            stream,
            entry_id,
            group,
        )

    async def _decode_or_dead_letter(self, group: str, entries: list[RawEntry]) -> list[Delivery]:
        deliveries = []
        for stream, entry_id, fields in entries:
            try:
                deliveries.append(Delivery(stream, entry_id, decode(fields or {})))  # trimmed ones are gone by now
            except ValueError as error:
                await self.dead_letter(group, stream, entry_id, fields, str(error))
        return deliveries
