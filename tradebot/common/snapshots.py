"""A partition's state as a snapshot now and then plus the entries after it, replayed on restore.

A positioned reader (tradebot/common/partitions.py) of a parted state would rewrite the parts its
batch touched with every commit; at ~one tick per symbol per batch that is a part per entry. The
:class:`SnapshotReader` commits only the outputs and the group's new position, and writes the parts
in a snapshot: every ``snapshot_entries`` entries or ``snapshot_s`` seconds, once the stream is
quiet for a whole wait (BUS_BLOCK_MS: a caught-up pipeline holds nothing back), on a stop, past the
memory budget, and whenever an input outside the entries (:meth:`ReplayedState.inputs`) changes.
A snapshot is one fenced, atomic write of the parts changed since the last one, its position
(``_at``: the group's committed position when it was taken), the inputs (``_in``) and the hold of
its stream (:func:`hold_key`: retention keeps the entries after ``_at``).

On restore: the parts as of ``_at``, then the entries after it up to the group's position are
applied again through the same code under the recorded inputs, their outputs dropped (they were
published by the commits that moved the group). Every commit after a snapshot applied its entries
under the inputs the snapshot records (a change forces a snapshot first), so the replay gives
exactly the state the last commit left. Parts without ``_at`` (a release before this, or a fresh
partition) are as of the group's position: a snapshot is written at once.

A cancelled reader ends at its next batch, replay read or snapshot even when the cancellation was
lost inside a Redis command (:func:`end_if_cancelled`), rather than reading on until its lease expires.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Protocol, runtime_checkable

from tradebot.common.bus import Bus
from tradebot.common.bus.publishing import Commit
from tradebot.common.bus.wire import Delivery, entry_order
from tradebot.common.in_flight import InFlight
from tradebot.common.lifecycle import end_if_cancelled
from tradebot.common.models import Event
from tradebot.common.partitions import PARTS_VERSION_FIELD, PartedState, PartitionReader, PartitionSettings
from tradebot.common.streams import checkpoint_parts_key, hold_key, lease_key

log = logging.getLogger(__name__)

SNAPSHOT_AT_FIELD = "_at"  # {stream: id} as JSON: the position the snapshot is as of
SNAPSHOT_INPUTS_FIELD = "_in"  # the inputs the entries after it were applied under
REPLAY_COUNT = 1000  # entries per read when replaying
ROOM_CHECK_S = 1.0  # how often a reader holding entries asks whether Redis is past its memory budget


@runtime_checkable
class ReplayedState(PartedState, Protocol):
    """A parted state restored from a snapshot plus the entries after it.

    ``inputs`` is everything outside the entries that decides what ``apply`` does (the strategy's
    run-time switches and trading state, and how often ``follow_account`` changed it), as a
    string. ``replay`` applies entries under such recorded inputs and keeps no outputs.
    """

    def inputs(self) -> str: ...

    def follow_account(self) -> None: ...

    def replay(self, events: list[Event], inputs: str) -> None: ...


class SnapshotReader(PartitionReader):
    """A positioned partition reader whose state is written in snapshots (see the module)."""

    state: ReplayedState

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        partition: int,
        state: ReplayedState,
        counters: Counter[str],
        in_flight: InFlight | None = None,
    ):
        super().__init__(bus, config, member, partition, state, counters, in_flight)
        if not config.positioned or len(self.streams) != 1:
            raise ValueError("a snapshot reader reads one stream, positioned (its replay keeps that order)")
        self._snapshot_at: dict[str, str] | None = None  # None: the parts are as of the group's position
        self._inputs = ""  # what the entries since the snapshot were applied under
        self._since: list[Event] = []  # entries applied since the snapshot (to rebuild the state in memory)
        self._snapshot_time = time.monotonic()
        self._room_checked = 0.0
        self._seen: dict[str, str] = {}  # the positions at the last _after_batch
        self._quiet_reads = 0  # reads in a row that found nothing new

    async def _restore(self) -> None:
        await super()._restore()
        saved = self._committed_parts or {}
        if SNAPSHOT_AT_FIELD in saved:
            self._snapshot_at = json.loads(saved[SNAPSHOT_AT_FIELD])
            self._inputs = saved.get(SNAPSHOT_INPUTS_FIELD, "")

    def _checkpoint_writes(self) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, list[str]]]:
        return {}, {}, {}  # a commit writes outputs and the position only

    async def _started(self, positions: dict[str, str]) -> bool:
        """Replay what came after the snapshot; parts without one are as of ``positions``."""
        end_if_cancelled()
        if self._snapshot_at is None:
            return await self._write_snapshot(positions)
        replayed = 0
        for stream, after in self._snapshot_at.items():
            until = positions.get(stream)
            while until is not None and entry_order(after) < entry_order(until):
                deliveries, last = await self.bus.entries_between(stream, after, until, count=REPLAY_COUNT)
                end_if_cancelled()
                if last is None:
                    break
                self._replay(deliveries)
                replayed += len(deliveries)
                after = last
        self.counters["replayed"] += replayed
        if replayed:
            log.info(
                "%s partition %d: replayed %d entries after its snapshot", self.config.role, self.partition, replayed
            )
        return True

    def _replay(self, deliveries: list[Delivery]) -> None:
        """Apply again under the recorded inputs; an entry the state rejects was dead-lettered when
        it was first applied, and is skipped again."""
        events = [d.event for d in deliveries]
        try:
            self.state.replay(events, self._inputs)
            self._since += events
            return
        except Exception:  # noqa: BLE001 - as _apply: find the culprit entry by entry
            self._restore_committed()
        for event in events:
            before = self.state.checkpoint()
            try:
                self.state.replay([event], self._inputs)
                self._since.append(event)
            except Exception:  # noqa: BLE001
                self.state.restore(before)

    def _restore_committed(self) -> None:
        """The state as of the last commit: the snapshot, and the entries applied since."""
        super()._restore_committed()
        if self._since:
            self.state.replay(self._since, self._inputs)

    def _apply(self, batch: list[Delivery]) -> tuple[list[tuple[str, Event]], list[tuple[Delivery, str]]]:
        outputs, poisoned = super()._apply(batch)
        skipped = {id(delivery) for delivery, _ in poisoned}
        self._since += [d.event for d in batch if id(d) not in skipped]
        return outputs, poisoned

    async def _before_batch(self, positions: dict[str, str]) -> bool:
        """Inputs changed since the snapshot: snapshot the state as of ``positions`` first, so every
        entry after a snapshot was applied under the inputs it records. What the state takes in from
        outside the entries (``follow_account``) is taken in first, so the snapshot holds it."""
        end_if_cancelled()
        self.state.follow_account()
        while self.state.inputs() != self._inputs:  # (they may change again while it is written)
            if not await self._write_snapshot(positions):
                return False
        return True  # nothing awaited from here to the batch's apply: the inputs hold for it

    async def _after_batch(self, positions: dict[str, str]) -> bool:
        end_if_cancelled()
        quiet = positions == self._seen  # a read found nothing new
        self._quiet_reads = self._quiet_reads + 1 if quiet else 0
        self._seen = dict(positions)
        if not self._since:
            return True
        # a read that found nothing follows a whole wait (or is the first: the replay is written then)
        due = len(self._since) >= self.config.snapshot_entries or self._quiet_reads >= 1
        due = due or time.monotonic() - self._snapshot_time >= self.config.snapshot_s
        return await self._write_snapshot(positions) if due or await self._over_budget() else True

    async def _over_budget(self) -> bool:
        """Past the memory budget the entries this reader holds are released (checked now and then)."""
        if self.bus.memory_budget_bytes is None or time.monotonic() - self._room_checked < ROOM_CHECK_S:
            return False
        self._room_checked = time.monotonic()
        return not await self.bus.has_room()

    async def _ending(self, positions: dict[str, str]) -> None:
        if self._since:
            await self._write_snapshot(positions)

    async def _write_snapshot(self, positions: dict[str, str]) -> bool:
        """Write the parts changed since the last snapshot, as of ``positions`` (the committed
        position), with the inputs and the holds, in one fenced commit."""
        role = self.config.role
        key = checkpoint_parts_key(role, self.partition)
        inputs = self.state.inputs()
        if self._committed_parts is None:
            written, gone = self.state.parts(), []
        else:
            changed = self.state.changed_parts()
            written = {name: value for name, value in changed.items() if value is not None}
            gone = [name for name, value in changed.items() if value is None]
        written |= {
            PARTS_VERSION_FIELD: "1",
            SNAPSHOT_AT_FIELD: json.dumps(positions, separators=(",", ":")),
            SNAPSHOT_INPUTS_FIELD: inputs,
        }
        hashes = {key: written}
        for stream, entry_id in positions.items():
            hold = hold_key(stream)
            if hold is not None:
                hashes[hold] = {role: entry_id}
        commit = Commit(hashes=hashes, deleted={key: gone} if gone else {})
        end_if_cancelled()
        if not await self.bus.commit(role, commit, lease=(lease_key(role, self.partition), self.member)):
            return False
        parts = {**(self._committed_parts or {}), **written}
        for name in gone:
            parts.pop(name, None)
        self._committed_parts = parts
        self._snapshot_at, self._inputs, self._since = dict(positions), inputs, []
        self._snapshot_time = time.monotonic()
        self.counters["snapshots"] += 1
        return True
