"""The one module that speaks Redis Streams and knows the wire format.

An entry is ``{"v": schema version, "type": event class name, "data": event JSON}``. Delivery is
at-least-once: readers ack after their effect, and :meth:`Bus.commit` publishes, writes state and
acks in one atomic script so a crash can never split them.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tradebot.common.config import Settings
from tradebot.common.models import EVENT_TYPES, Event
from tradebot.common.streams import SCHEMA_VERSION, dead_letter_stream

log = logging.getLogger(__name__)

RECOVERABLE_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
LAG_COUNT_CAP = 1000


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
    lag: int | None
    maxlen: int

    @property
    def near_cap(self) -> bool:
        """True when unconsumed entries approach MAXLEN, i.e. trimming could eat them."""
        backlog = self.pending + (self.lag or 0)
        return backlog > 0.8 * self.maxlen


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
    # (key, value the producer last read): the commit applies only if the key still holds it
    guard: tuple[str, str] | None = None


# Runs inside Redis as one unit: a worker that lost its lease writes nothing (fencing), and
# outputs, state and acks land together or not at all. A retried commit (its reply was lost)
# must not apply twice: with acks, the first entry is no longer pending; without (a producer),
# the guard key no longer holds the value the producer read.
_COMMIT_SCRIPT = """
local lease_key, owner, group, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if lease_key ~= '' and redis.call('GET', lease_key) ~= owner then return 0 end
local guard_key, guard_value = ARGV[5], ARGV[6]
if guard_key ~= '' and (redis.call('GET', guard_key) or '') ~= guard_value then return 2 end
local i = 7
local acks = tonumber(ARGV[i]); i = i + 1
if acks > 0 and #redis.call('XPENDING', ARGV[i], group, ARGV[i+1], ARGV[i+1], 1) == 0 then return 1 end
for _ = 1, acks do redis.call('XACK', ARGV[i], group, ARGV[i+1]); i = i + 2 end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('XADD', ARGV[i], 'MAXLEN', '~', maxlen, '*', 'v', ARGV[i+1], 'type', ARGV[i+2], 'data', ARGV[i+3])
  i = i + 4
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('SET', ARGV[i], ARGV[i+1]); i = i + 2 end
return 1
"""


# XREADGROUP without BLOCK, only for the lease holder (scripts cannot block; waiting is done
# with a plain XREAD by the caller). Returns 0 when the lease is not ours.
_FENCED_READ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[2], ARGV[5])
"""


def encode(event: Event) -> dict[str, str]:
    """The wire fields of an event."""
    return {"v": SCHEMA_VERSION, "type": type(event).__name__, "data": event.model_dump_json()}


def decode(fields: Mapping[str, str]) -> Event:
    """The event in an entry; raises ValueError with the reason when it is not a valid one."""
    if fields.get("v") != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema version {fields.get('v')!r}")
    model = EVENT_TYPES.get(fields.get("type", ""))
    if model is None:
        raise ValueError(f"unknown event type {fields.get('type')!r}")
    try:
        return model.model_validate_json(fields.get("data", ""))
    except ValidationError as error:
        raise ValueError(f"invalid {model.__name__}: {_first_error(error)}") from None


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


def entry_ms(entry_id: str) -> int:
    """The millisecond time part of a stream entry id (Redis server time at XADD)."""
    return int(entry_id.split("-", 1)[0])


def entry_order(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _pairs(flat: list | None) -> dict[str, str] | None:
    """A script's flat [field, value, …] reply as a dict (None for a trimmed entry)."""
    return dict(zip(flat[::2], flat[1::2], strict=True)) if flat else None


def connect(url: str) -> aioredis.Redis:
    """A client without transport-level retries.

    redis-py would silently re-send a command whose reply was lost, which could run a commit or
    an XREADGROUP twice; every caller rides out outages with its own backoff loop instead and
    knows how to resume (pending entries first, state from the checkpoint).
    """
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_keepalive=True,
    )


class Bus:
    """Publish, consume, ack, reclaim and dead-letter events on Redis Streams."""

    def __init__(self, client: aioredis.Redis, *, maxlen: int = 1_000_000, max_deliveries: int = 5):
        self.redis = client
        self.maxlen = maxlen
        self.max_deliveries = max_deliveries
        self._commit = client.register_script(_COMMIT_SCRIPT)
        self._fenced_read = client.register_script(_FENCED_READ_SCRIPT)
        self.last_errors: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Bus:
        """The bus every worker uses: REDIS_URL, STREAM_MAXLEN, MAX_DELIVERIES."""
        if not settings.redis_url:
            raise ValueError("REDIS_URL is not set (the runtime fills it in when it starts the embedded servers)")
        return cls(connect(settings.redis_url), maxlen=settings.stream_maxlen, max_deliveries=settings.max_deliveries)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def publish(self, items: Iterable[tuple[str, Event]]) -> list[str]:
        """Append events in one pipelined round trip, trimming each stream with MAXLEN ~."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, event in items:
                pipe.xadd(stream, encode(event), maxlen=self.maxlen, approximate=True)
            return await pipe.execute()

    async def entries(self, stream: str) -> list[Event]:
        """Every event on a stream, oldest first (replays and tools read results back with this)."""
        return [decode(fields) for _, fields in await self.redis.xrange(stream)]

    async def publish_raw(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an arbitrary entry (tests and tools inject malformed messages with this)."""
        return await self.redis.xadd(stream, dict(fields))

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
            reply = await self.redis.xreadgroup(
                group, consumer, {s: start for s in streams}, count=count, block=None if pending else block_ms
            )
            entries = [(stream, entry_id, fields) for stream, rows in reply for entry_id, fields in rows]
            if not entries:
                return []
            if pending:
                entries = await self._drop_overdelivered(group, consumer, await self._drop_trimmed(group, entries))
            deliveries = await self._decode_or_dead_letter(group, entries)
            if deliveries:
                return deliveries

    async def read_fenced(
        self, stream: str, group: str, consumer: str, lease: tuple[str, str], *, count: int, pending: bool
    ) -> list[Delivery] | None:
        """Like :meth:`read` without blocking, but only while ``lease`` is held; None once it is not.

        The lease check and the XREADGROUP run as one script, so a worker that lost its lease can
        no longer take entries that belong, in order, to the partition's new owner.
        """
        while True:
            reply = await self._fenced_read(
                keys=[lease[0], stream], args=[lease[1], group, consumer, count, "0" if pending else ">"]
            )
            if reply is None or reply == 0:
                return None if reply == 0 else []
            rows = [(entry_id, _pairs(fields)) for entry_id, fields in reply[0][1]]
            entries = await self._drop_trimmed(group, [(stream, entry_id, fields) for entry_id, fields in rows])
            deliveries = await self._decode_or_dead_letter(group, entries)
            if deliveries or not rows:
                return deliveries

    async def wait_for_entries(self, stream: str, after_id: str, block_ms: int, stop: asyncio.Event) -> None:
        """Block until ``stream`` has an entry newer than ``after_id``, ``block_ms`` passes, or ``stop``."""
        waiting = asyncio.create_task(self.redis.xread({stream: after_id}, count=1, block=block_ms))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not waiting.done():
            waiting.cancel()  # redis-py drops the connection of a cancelled command: nothing half-read
        await asyncio.gather(waiting, stopping, return_exceptions=True)

    async def last_delivered_id(self, stream: str, group: str) -> str:
        """The id of the newest entry ``group`` has been given ("0-0" before the first)."""
        for info in await self._groups(stream):
            if info["name"] == group:
                return info["last-delivered-id"]
        return "0-0"

    async def reclaim_idle(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        """Take over entries another (presumably dead) consumer left unacked for too long."""
        claimed: list[tuple[str, str, dict[str, str] | None]] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(stream, group, consumer, min_idle_ms, cursor, count=count)
            cursor, rows = reply[0], reply[1]
            claimed.extend((stream, entry_id, fields) for entry_id, fields in rows if entry_id is not None)
            if any(entry_id is None for entry_id, _ in rows):
                await self._ack_vanished(stream, group, consumer)
            if cursor == "0-0" or len(claimed) >= count:
                break
        live = await self._drop_trimmed(group, claimed)
        if live:
            live = await self._drop_overdelivered(group, consumer, live)
        return await self._decode_or_dead_letter(group, live)

    async def ack(self, group: str, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge handled entries, one XACK per stream."""
        by_stream: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_stream.setdefault(delivery.stream, []).append(delivery.entry_id)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, group, *ids)
            await pipe.execute()

    async def commit(self, group: str, commit: Commit, *, lease: tuple[str, str] | None = None) -> CommitResult:
        """Publish, write state and ack atomically.

        LOST_LEASE (nothing written) if ``lease`` is no longer ours; STALE (nothing written) if the
        guard key moved on; a retry of an already applied commit reports APPLIED and writes nothing.
        """
        args: list[str | int] = [lease[0] if lease else "", lease[1] if lease else "", group, self.maxlen]
        args += list(commit.guard) if commit.guard else ["", ""]
        args.append(len(commit.acks))
        for stream, entry_id in commit.acks:
            args += [stream, entry_id]
        args.append(len(commit.publish))
        for stream, event in commit.publish:
            fields = encode(event)
            args += [stream, fields["v"], fields["type"], fields["data"]]
        args.append(len(commit.state))
        for key, value in commit.state.items():
            args += [key, value]
        return CommitResult(await self._commit(keys=[], args=args))

    async def dead_letter(
        self, group: str, stream: str, entry_id: str, fields: Mapping[str, str] | None, reason: str
    ) -> None:
        """Move an entry to ``dlq.<stream>`` with its raw payload and the reason, and ack it."""
        record = {
            "stream": stream,
            "entry_id": entry_id,
            "group": group,
            "reason": reason,
            "payload": json.dumps(dict(fields or {})),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(dead_letter_stream(stream), record, maxlen=self.maxlen, approximate=True)
            pipe.xack(stream, group, entry_id)
            await pipe.execute()
        self.last_errors.pop(entry_id, None)
        log.warning("dead-lettered %s %s (group %s): %s", stream, entry_id, group, reason)

    async def health(self, stream: str, group: str) -> StreamHealth:
        """Length, pending count and lag of ``stream`` for ``group``.

        Redis 7 reports lag itself. Redis 6.2 does not: up to LAG_COUNT_CAP undelivered entries are
        counted; beyond that the lag is estimated from entry times, so /health stays cheap exactly
        when the backlog is large.
        """
        length = await self.redis.xlen(stream)
        groups = {g["name"]: g for g in await self._groups(stream)}
        info = groups.get(group)
        if info is None:
            return StreamHealth(stream, group, length, 0, length, self.maxlen)
        lag = info.get("lag")
        if lag is None:
            lag = await self._counted_lag(stream, info["last-delivered-id"], length)
        return StreamHealth(stream, group, length, int(info["pending"]), lag, self.maxlen)

    async def backlog(self, streams: Sequence[str], group: str) -> int:
        """Entries of ``streams`` that ``group`` has not finished: pending plus not yet delivered."""
        total = 0
        for stream in streams:
            health = await self.health(stream, group)
            total += health.pending + (health.lag or 0)
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

    async def _groups(self, stream: str) -> list[dict]:
        try:
            return await self.redis.xinfo_groups(stream)
        except ResponseError:  # no such stream yet
            return []

    async def _drop_overdelivered(self, group: str, consumer: str, entries: list) -> list:
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
                keep.append((stream, entry_id, fields))
        return keep

    async def _ack_vanished(self, stream: str, group: str, consumer: str) -> None:
        """Ack this consumer's pending entries whose data is gone (Redis 6.2 claims them as nil, id-less)."""
        for row in await self.redis.xpending_range(stream, group, min="-", max="+", count=1000, consumername=consumer):
            entry_id = row["message_id"]
            if not await self.redis.xrange(stream, min=entry_id, max=entry_id):
                await self.redis.xack(stream, group, entry_id)
                log.warning(
                    "%s %s was trimmed before %s acked it (STREAM_MAXLEN too small for the backlog?)",
                    stream,
                    entry_id,
                    group,
                )

    async def _drop_trimmed(self, group: str, entries: list) -> list:
        """Ack pending entries whose data was trimmed away (nothing left to process); return the rest.

        XADD needs at least one field, so an entry without fields can only be a trimmed one.
        """
        gone = [(stream, entry_id) for stream, entry_id, fields in entries if not fields]
        for stream, entry_id in gone:
            await self.redis.xack(stream, group, entry_id)
            log.warning(
                "%s %s was trimmed before %s acked it (STREAM_MAXLEN too small for the backlog?)",
                stream,
                entry_id,
                group,
            )
        return [entry for entry in entries if entry[2]]

    async def _decode_or_dead_letter(self, group: str, entries: list) -> list[Delivery]:
        deliveries = []
        for stream, entry_id, fields in entries:
            try:
                deliveries.append(Delivery(stream, entry_id, decode(fields)))
            except ValueError as error:
                await self.dead_letter(group, stream, entry_id, fields, str(error))
        return deliveries
