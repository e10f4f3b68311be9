"""Writing to the bus: publishing events, and the commit that publishes a batch's effect, writes
state and acks in one atomic script so a crash can never split them."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redis.crc import key_slot

from tradebot.common.bus.base import BusBase
from tradebot.common.bus.connection import is_cluster
from tradebot.common.bus.scripts import commit_arguments
from tradebot.common.bus.together import CommitsTogether
from tradebot.common.bus.wire import Delivery, encode_entries
from tradebot.common.models import Event
from tradebot.common.replicas import barrier_key, run_replicated


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
    # (stream, wire fields of a tick-batch entry) already encoded (wire.tick_entries), after publish's
    entries: list[tuple[str, dict[str, str]]] = field(default_factory=list)
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


class Publishing(BusBase):
    """Publish events, and commit a batch's effect (outputs, state, acks) atomically."""

    _commits_together: CommitsTogether | None = None

    def commit_together(self) -> None:
        """From now on, commits made in the same turn of the event loop go to Redis as one call of
        the commit script (common/bus/together.py; each still fenced and atomic on its own). For a
        worker whose partitions commit at once (strategy, storage, the mock feed); not with
        REDIS_MIN_REPLICAS nor on a cluster, where each commit stays its own call."""
        if not self.min_replicas and not is_cluster(self.redis):
            self._commits_together = CommitsTogether(self._commit, self.stats)

    async def publish(self, items: Iterable[tuple[str, Event]]) -> list[str]:
        """Append events in one pipelined round trip (never trimming: see :meth:`trim_consumed`),
        ticks several to an entry (:func:`encode_entries`); returns the ids of the entries."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, fields in encode_entries(items, self.ticks_per_entry):
                pipe.xadd(stream, fields)
            ids: list[str] = await pipe.execute()
            return ids

    async def publish_fields(self, stream: str, entries: Sequence[Mapping[str, str]]) -> list[str]:
        """Append entries given as wire fields (a dead-letter replay re-publishes these unchanged)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, dict(fields))
            ids: list[str] = await pipe.execute()
            return ids

    async def publish_raw(self, stream: str, fields: Mapping[str, str]) -> str:
        """Append an arbitrary entry (tests and tools inject malformed messages with this)."""
        entry_id: str = await self.redis.xadd(stream, dict(fields))
        return entry_id

    async def publish_once(self, key: str, ttl_ms: int, items: Sequence[tuple[str, Event]]) -> bool:
        """Publish ``items`` unless ``key`` was used in the last ``ttl_ms``; False for a repeat."""
        args: list[object] = [ttl_ms]
        entries = encode_entries(items, self.ticks_per_entry)
        for _, fields in entries:
            flat = [part for pair in fields.items() for part in pair]
            args += [len(flat), *flat]
        return bool(await self._replicated(self._publish_once, [key, *(stream for stream, _ in entries)], args))

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
        published = encode_entries(commit.publish, self.ticks_per_entry) + commit.entries
        args.append(len(published))
        for stream, fields in published:
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
        if self._commits_together is not None:
            return CommitResult(await self._commits_together(keys=keys, args=args))
        (reply,) = await self._replicated(self._commit, *commit_arguments([(keys, args)]))
        if isinstance(reply, Exception):  # (the script replies with each commit's error, here the one's)
            raise reply
        return CommitResult(reply)

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
