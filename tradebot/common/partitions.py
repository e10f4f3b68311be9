"""Stateful roles: each partition has one owner at a time, by lease, with checkpointed state.

Workers of a role announce themselves in a sorted set scored by heartbeat expiry; every live member
computes the same assignment (partition p goes to the (p mod n)-th member in name order), takes
leases on its share with SET NX PX, renews them, and hands back the ones it no longer should own.
A partition is always read as the consumer ``partition-<p>``, so a new owner inherits the old
owner's pending entries and processes them first. Reads and commits both check the lease inside
Redis (fencing): a worker that lost its lease can neither take entries (which would reorder the
partition for its new owner) nor write anything; a positioned reader's read takes nothing (its
group moves only with its commit), so its waiting read (tradebot/common/waiting_read.py) needs
no check. State, outputs and acks go in one atomic commit, so a crash neither loses nor repeats
an effect. A state kept in parts (:class:`PartedState`, e.g. one per symbol) is committed part
by part: only what the batch changed is written. A positioned reader may instead write its parts
only in a snapshot now and then, and replay the entries after it on restore
(tradebot/common/snapshots.py, the strategy's).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.dead_letters import dead_letter_record
from tradebot.common.bus.publishing import Commit
from tradebot.common.bus.wire import Delivery, RawEntry, encode
from tradebot.common.in_flight import InFlight, Taken
from tradebot.common.lifecycle import Backoff, backoff_delay_s, end_if_cancelled, first_of
from tradebot.common.models import Event
from tradebot.common.streams import (
    checkpoint_key,
    checkpoint_parts_key,
    lease_key,
    members_key,
    partition_consumer,
)
from tradebot.common.waiting_read import WaitingReader, decode_positioned

log = logging.getLogger(__name__)

# Renew only if still ours; release only if still ours.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class PartitionState(Protocol):
    """The pure state of one partition: restored from, and saved to, a checkpoint string."""

    def restore(self, checkpoint: str | None) -> None: ...

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Apply events in order; return (stream, event) outputs to publish."""
        ...

    def checkpoint(self) -> str: ...


@runtime_checkable
class PartedState(PartitionState, Protocol):
    """A state checkpointed in parts (say, one per symbol), so a commit writes only what changed.

    ``parts`` is the whole state and ``changed_parts`` what changed since the last call to either
    (None: a part that is gone); ``restore_parts`` starts from parts as committed.
    """

    def parts(self) -> dict[str, str]: ...

    def changed_parts(self) -> Mapping[str, str | None]: ...

    def restore_parts(self, parts: dict[str, str]) -> None: ...


PARTS_VERSION_FIELD = "_v"  # present in every parted checkpoint (an empty state is still one)


class PartitionRunner(Protocol):
    """What owns a partition while its lease is held; returns why it ended."""

    async def run(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd: ...


@dataclass
class PartitionSettings:
    """How a stateful role reads and leases its partitions."""

    role: str
    partitions: int
    # What a partition reads: its tick stream, or (execution) every partition's orders.
    streams_for: Callable[[int], list[str]]
    batch_size: int = 500
    block_ms: int = 1000
    lease_ttl_ms: int = 6000
    # Read with XREAD from the group's position, which the commit moves (XGROUP SETID), instead of
    # XREADGROUP and acks: for a role whose partition's streams share the lease's slot (strategy).
    # Nothing is pending, so Redis writes no XCLAIM per entry to its append-only file.
    positioned: bool = False
    # A snapshot reader (tradebot/common/snapshots.py) writes its parts only in a snapshot: every
    # this many entries or seconds (and when quiet, on a stop, past the budget, on an input change).
    snapshot_entries: int = 2000
    snapshot_s: float = 30.0
    membership_interval_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.membership_interval_s = self.lease_ttl_ms / 3000


def assigned_partitions(members: list[str], me: str, partitions: int) -> set[int]:
    """The partitions ``me`` should own among ``members`` (same answer on every member)."""
    ordered = sorted(members)
    if me not in ordered:
        return set()
    return {p for p in range(partitions) if ordered[p % len(ordered)] == me}


class PartitionedWorker:
    """Owns a fair share of a role's partitions and runs one reader task per owned partition."""

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        new_state: Callable[[int], PartitionState],
        counters: Counter[str],
        new_reader: Callable[[int], PartitionRunner] | None = None,
    ):
        self.bus = bus
        self.config = config
        self.member = member
        self.new_state = new_state
        self.new_reader = new_reader  # a reader of its own (a real broker's loop) instead of PartitionReader
        self.counters = counters
        self._renew = bus.redis.register_script(_RENEW)
        self._release = bus.redis.register_script(_RELEASE)
        self._owned: dict[int, tuple[asyncio.Task[object], asyncio.Event]] = {}
        self._wanted: set[int] | None = None
        self._drained: set[int] = set()  # burst mode: partitions read to the end
        self._failures: dict[int, int] = {}  # consecutive reader failures per partition
        self._retry_at: dict[int, float] = {}  # monotonic time before which it is not restarted
        self._backoff = Backoff("redis (membership)")

    async def run(self, *, stop: asyncio.Event, max_messages: int | None = None, burst: bool = False) -> None:
        """Keep membership and leases current until stopped, then hand every partition back.

        In burst mode it returns once every partition assigned to it has been drained.
        """
        self._max_messages, self._burst = max_messages, burst
        try:
            while not stop.is_set() and not self._finished():
                try:
                    await self._rebalance()
                    self._backoff.succeeded()
                except RECOVERABLE_REDIS_ERRORS as error:
                    await self._backoff.wait(error, stop)
                    continue
                if not self._finished():
                    await self._wait_for_change(stop)
        finally:
            await self._release_all()

    def _finished(self) -> bool:
        if self._max_messages is not None and self.counters["handled"] >= self._max_messages:
            return True
        return self._burst and self._wanted is not None and self._wanted <= self._drained

    async def _wait_for_change(self, stop: asyncio.Event) -> None:
        readers = [task for task, _ in self._owned.values()]
        await first_of(stop, *readers, timeout_s=self.config.membership_interval_s)

    async def _rebalance(self) -> None:
        role, ttl = self.config.role, self.config.lease_ttl_ms
        now_ms = int(time.time() * 1000)
        await self.bus.redis.zadd(members_key(role), {self.member: now_ms + ttl})
        await self.bus.redis.zremrangebyscore(members_key(role), "-inf", now_ms)
        members = await self.bus.redis.zrange(members_key(role), 0, -1)
        self._wanted = assigned_partitions(members, self.member, self.config.partitions)
        # Renew every lease first, then let go of what must go, all together: giving partitions up
        # one by one could outlast the TTL of the leases still to be renewed.
        lost, handed_back = [], []
        for partition, (task, _) in self._owned.items():
            if not await self._renew(keys=[lease_key(role, partition)], args=[self.member, ttl]):
                lost.append(partition)
            elif task.done() or partition not in self._wanted:
                handed_back.append(partition)
        await self._give_up(lost, lost=True)
        await self._give_up(handed_back, lost=False)
        now = time.monotonic()
        for partition in sorted(self._wanted - self._owned.keys() - self._drained):
            if self._retry_at.get(partition, 0.0) > now:
                continue  # its reader failed moments ago: back off instead of spinning
            if await self.bus.redis.set(lease_key(role, partition), self.member, nx=True, px=ttl):
                self._start(partition)

    def _start(self, partition: int) -> None:
        stop = asyncio.Event()
        reader: PartitionRunner = (
            self.new_reader(partition)
            if self.new_reader
            else PartitionReader(
                self.bus, self.config, self.member, partition, self.new_state(partition), self.counters
            )
        )
        task = asyncio.create_task(reader.run(stop, burst=self._burst, max_messages=self._max_messages))
        self._owned[partition] = (task, stop)
        self.counters["partitions_acquired"] += 1
        log.info("%s now owns partition %d", self.config.role, partition)

    async def _give_up(self, partitions: list[int], *, lost: bool) -> None:
        """Stop the readers of ``partitions`` together, then release the leases still ours."""
        owned = {partition: self._owned.pop(partition) for partition in partitions}
        for _, stop in owned.values():
            stop.set()
        results = await asyncio.gather(*(task for task, _ in owned.values()), return_exceptions=True)
        for partition, result in zip(owned, results, strict=True):
            if isinstance(result, BaseException) or result is ReaderEnd.ERROR:
                self._note_failure(partition, result)
            else:
                self._failures.pop(partition, None)
                if result is ReaderEnd.DRAINED:
                    self._drained.add(partition)
            if not lost:
                await self._release(keys=[lease_key(self.config.role, partition)], args=[self.member])
            log.info("%s %s partition %d", self.config.role, "lost" if lost else "released", partition)

    def _note_failure(self, partition: int, result: object) -> None:
        """A failed reader is taken up again after a capped, growing delay."""
        failures = self._failures.get(partition, 0) + 1
        self._failures[partition] = failures
        delay = backoff_delay_s(failures, base_s=0.5, cap_s=30.0, jitter=False)
        self._retry_at[partition] = time.monotonic() + delay
        if isinstance(result, BaseException):
            log.error(
                "%s reader of partition %d failed (%d in a row; again in %.1fs): %r",
                self.config.role,
                partition,
                failures,
                delay,
                result,
            )

    async def _release_all(self) -> None:
        try:
            await self._give_up(list(self._owned), lost=False)
        except RECOVERABLE_REDIS_ERRORS:
            self._owned.clear()  # the leases expire by themselves
        try:
            await self.bus.redis.zrem(members_key(self.config.role), self.member)
        except RECOVERABLE_REDIS_ERRORS:
            pass  # membership expires by itself


class ReaderEnd(enum.Enum):
    """Why a partition reader ended."""

    STOPPED = "stopped"  # asked to (lease given up, process stopping, MAX_MESSAGES reached)
    DRAINED = "drained"  # burst mode: nothing left to read
    LOST = "lost"  # another member holds the lease now
    ERROR = "error"  # Redis failed under it: taken up again after a backoff


class PartitionReader:
    """Reads one owned partition: restore checkpoint, pending entries first, then new ones."""

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        partition: int,
        state: PartitionState,
        counters: Counter[str],
        in_flight: InFlight | None = None,
    ):
        self.bus = bus
        self.config = config
        self.member = member
        self.partition = partition
        self.state = state
        self.counters = counters
        # A positioned reader's room for the entries it read and has not committed yet, shared by
        # its worker's readers (None: unbounded, each reader holds its own batch)
        self.in_flight = in_flight
        self.streams = config.streams_for(partition)
        self._committed: str | None = None  # the checkpoint as last committed (or restored)
        self._committed_parts: dict[str, str] | None = None  # the same, for a PartedState
        self.consumer = partition_consumer(partition)

    async def run(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        """Process until stopped; returns why it ended.

        On a Redis error it returns rather than retrying in place: the worker re-checks the lease,
        and a restarted reader begins again from the checkpoint and the pending entries.
        """
        try:
            return await self._restore_and_drain(stop, burst=burst, max_messages=max_messages)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.warning(
                "%s partition %d: redis error (%s); the partition will be taken up again",
                self.config.role,
                self.partition,
                error,
            )
            return ReaderEnd.ERROR

    async def _restore_and_drain(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        role = self.config.role
        lease = (lease_key(role, self.partition), self.member)
        for stream in self.streams:
            await self.bus.ensure_group(stream, role)
        await self._restore()
        if self.config.positioned:
            return await self._drain_positioned(stop, burst=burst, max_messages=max_messages)
        pending = True  # the previous owner's unacked entries come first, in order
        while not stop.is_set():
            end_if_cancelled()  # a cancellation a Redis command dropped (the runtime's grace period)
            if max_messages is not None and self.counters["handled"] >= max_messages:
                return ReaderEnd.STOPPED
            batch = await self._read(lease, pending=pending)
            work = bool(batch) or self._more_than_batch()
            if batch is None or (work and not await self._commit(batch)):
                log.warning("%s lost the lease on partition %d; leaving it to the new owner", role, self.partition)
                self.counters["fenced"] += 1
                return ReaderEnd.LOST
            if work:
                continue
            if pending:
                pending = False
            elif burst:
                return ReaderEnd.DRAINED
            else:
                await self._wait(stop)
        return ReaderEnd.STOPPED

    async def _read(self, lease: tuple[str, str], *, pending: bool) -> list[Delivery] | None:
        """The next batch (None once the lease is lost)."""
        return await self.bus.read_fenced(
            self.streams, self.config.role, self.consumer, lease, count=self.config.batch_size, pending=pending
        )

    def _more_than_batch(self) -> bool:
        """Whether there is state to commit beyond the batch read (a subclass's: execution's prices)."""
        return False

    async def _wait(self, stop: asyncio.Event, block_ms: int | None = None) -> None:
        """Until there is more to read, from the group's position (entries dead-lettered by the read
        were never returned)."""
        seen = {stream: await self.bus.last_delivered_id(stream, self.config.role) for stream in self.streams}
        await self.bus.wait_for_entries(seen, block_ms or self.config.block_ms, stop)

    async def _drain_positioned(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        """Read on from the group's position, committing each batch with the group's new position.

        After a batch its wait for entries after the new position is the next read (it ends at once
        if they came meanwhile; tradebot/common/waiting_read.py): no fenced read that finds nothing,
        then a wait, then a fenced read of what woke it, on the path of every live batch. The
        commit is fenced, so such a read changes nothing for anyone; a wait that ends with nothing
        is followed by a fenced read (an idle reader learns there that its lease is gone). In
        burst mode it reads on until a read finds nothing."""
        role = self.config.role
        lease = (lease_key(role, self.partition), self.member)
        positions = await self.bus.take_positions(self.streams, role, lease)
        if await self._started(positions):
            waiting = WaitingReader(self.bus, self.config.batch_size)  # its worker's readers wait together
            room = Taken(self.in_flight) if self.in_flight is not None else None
            try:
                end = await self._read_on(positions, lease, waiting, room, stop, burst=burst, max_messages=max_messages)
                if end is not None:
                    return end
            finally:
                waiting.close()
                if room is not None:
                    room.give_all()
        log.warning("%s lost the lease on partition %d; leaving it to the new owner", role, self.partition)
        self.counters["fenced"] += 1
        return ReaderEnd.LOST

    async def _read_on(
        self,
        positions: dict[str, str],
        lease: tuple[str, str],
        waiting: WaitingReader,
        room: Taken | None,
        stop: asyncio.Event,
        *,
        burst: bool,
        max_messages: int | None,
    ) -> ReaderEnd | None:
        """:meth:`_drain_positioned`'s loop: why it ended (stopped, drained, MAX_MESSAGES reached:
        the snapshot, if any, written), None once the lease is lost. The entries read are decoded
        only once there is ``room`` for them, and it is given back after the batch's commit and
        snapshot, when the reader holds none of them any more."""
        entries = None
        while not stop.is_set() and (max_messages is None or self.counters["handled"] < max_messages):
            end_if_cancelled()  # a cancellation a Redis command dropped (the runtime's grace period)
            if entries is None:  # fenced: None once the lease is lost
                entries = await self.bus.read_positioned_entries(positions, lease, count=self.config.batch_size)
            if entries is None:
                return None
            if entries and room is not None and not await room.take(stop, len(entries)):
                break  # stopped while waiting for room: nothing decoded, the group did not move
            batch, rejected, ended = decode_positioned(entries) or ([], [], {})
            entries = None
            if ended:
                if not await self._before_batch(positions):
                    return None
                if not await self._commit(batch, rejected=rejected, positions=ended):
                    return None
                positions.update(ended)
            elif burst:
                waiting.close()
                await self._ending(positions)
                return ReaderEnd.DRAINED
            del batch, rejected  # (the reader's last hold on the batch's events, with _after_batch's snapshot)
            if not await self._after_batch(positions):
                return None
            if room is not None:
                room.give_all()
            if not burst:  # the wait is the read (more already there: at once); nothing came: a fenced read
                entries = await waiting.read_entries(positions, block_ms=self.config.block_ms, stop=stop)
        waiting.close()  # (holding back no other reader's read while it writes its snapshot)
        await self._ending(positions)
        return ReaderEnd.STOPPED

    # What a positioned reader does around its batches; a reader that writes snapshots
    # (tradebot/common/snapshots.py) replays, and writes them, here. False: the lease is lost.
    async def _started(self, positions: dict[str, str]) -> bool:
        """Once the group's position is known, before the first read."""
        return True

    async def _before_batch(self, positions: dict[str, str]) -> bool:
        """Before a batch read after ``positions`` is applied and committed."""
        return True

    async def _after_batch(self, positions: dict[str, str]) -> bool:
        """After a batch was committed (or a read found nothing new)."""
        return True

    async def _ending(self, positions: dict[str, str]) -> None:
        """On a stop, a drained burst or MAX_MESSAGES reached (not when the lease is lost)."""

    async def _restore(self) -> None:
        """The state as last committed: from its parts when it keeps them (else, once, the whole string)."""
        role = self.config.role
        if isinstance(self.state, PartedState):
            parts = await self.bus.redis.hgetall(checkpoint_parts_key(role, self.partition))
            if parts:
                self._committed_parts = parts
                self.state.restore_parts(parts)
                return
            self._committed_parts = None  # first commit writes every part
        self._committed = await self.bus.redis.get(checkpoint_key(role, self.partition))
        self.state.restore(self._committed)

    def _restore_committed(self) -> None:
        if isinstance(self.state, PartedState) and self._committed_parts is not None:
            self.state.restore_parts(dict(self._committed_parts))
        else:
            self.state.restore(self._committed)

    def _checkpoint_writes(self) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, list[str]]]:
        """What the commit writes of the state: whole (``state``) or only the changed parts
        (``hashes``), and the parts that are gone (``deleted``)."""
        role = self.config.role
        if not isinstance(self.state, PartedState):
            return {checkpoint_key(role, self.partition): self.state.checkpoint()}, {}, {}
        key = checkpoint_parts_key(role, self.partition)
        if self._committed_parts is None:
            return {}, {key: {**self.state.parts(), PARTS_VERSION_FIELD: "1"}}, {}
        changed = self.state.changed_parts()
        written = {name: value for name, value in changed.items() if value is not None}
        gone = [name for name, value in changed.items() if value is None]
        return {}, {key: written} if written else {}, {key: gone} if gone else {}

    async def _commit(
        self,
        batch: list[Delivery],
        *,
        rejected: Sequence[tuple[RawEntry, str]] = (),
        positions: dict[str, str] | None = None,
    ) -> bool:
        """Apply the batch and commit its effect; with ``positions`` (a positioned reader) the group
        moves there and the dead-letter records of ``rejected`` and poisoned entries go in the same
        commit, else entries are acked and poisoned ones dead-lettered (and acked) first."""
        role = self.config.role
        outputs, poisoned = self._apply(batch)
        state, hashes, deleted = self._checkpoint_writes()
        lease = (lease_key(role, self.partition), self.member)
        failed = [(entry, reason) for entry, reason in rejected]
        # the wire form, so `tradebot dlq replay` can re-publish it
        failed += [(RawEntry(d.stream, d.entry_id, encode(d.event), d.index), reason) for d, reason in poisoned]
        commit = Commit(publish=outputs, state=state, hashes=hashes, deleted=deleted)
        if positions is not None:
            commit.positions = positions
            commit.records = [dead_letter_record(e.stream, e.entry_id, role, why, e.fields, e.row) for e, why in failed]
        else:
            for entry, reason in failed:  # fenced like the commit: a stale owner writes no record
                if not await self.bus.dead_letter(
                    role, entry.stream, entry.entry_id, entry.fields, reason, lease=lease, index=entry.row
                ):
                    return False
            skipped = {entry.entry_id for entry, _ in failed if entry.row is None}  # a tick: acked with the rest
            commit.acks = [(d.stream, d.entry_id) for d in batch if d.entry_id not in skipped]
        if not await self.bus.commit(role, commit, lease=lease):
            return False
        if positions is not None:
            for entry, reason in failed:
                self.bus.stats["dead_lettered"] += 1
                log.warning("dead-lettered %s %s (group %s): %s", entry.stream, entry.entry_id, role, reason)
        self._committed = next(iter(state.values()), None)
        for changed in hashes.values():
            self._committed_parts = {**(self._committed_parts or {}), **changed}
        for gone in deleted.values():
            for name in gone:
                (self._committed_parts or {}).pop(name, None)
        self.counters["commits"] += 1
        self.counters["handled"] += len(batch)
        self.counters["published"] += len(outputs)
        return True

    def _apply(self, batch: list[Delivery]) -> tuple[list[tuple[str, Event]], list[tuple[Delivery, str]]]:
        """Apply the batch; an event the state rejects is set aside for the dead-letter stream."""
        try:
            return self.state.apply([d.event for d in batch]), []
        except Exception:  # noqa: BLE001 - find the culprit below, entry by entry
            self._restore_committed()  # the state as of the last commit: no extra snapshot per batch
        outputs: list[tuple[str, Event]] = []
        poisoned: list[tuple[Delivery, str]] = []
        for delivery in batch:
            before = self.state.checkpoint()
            try:
                outputs += self.state.apply([delivery.event])
            except Exception as error:  # noqa: BLE001 - a deterministic failure would repeat forever
                self.state.restore(before)
                poisoned.append((delivery, f"{type(error).__name__}: {error}"))
        return outputs, poisoned
