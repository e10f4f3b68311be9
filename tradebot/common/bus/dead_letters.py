"""Dead letters: the record of an entry that failed, written with its reason and raw fields, and
what ``tradebot dlq`` does with them (list, replay, drop)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from tradebot.common.bus.base import BusBase
from tradebot.common.bus.wire import RawEntry
from tradebot.common.codec import row_entry_data
from tradebot.common.streams import DEAD_LETTER_PATTERN, dead_letter_stream

log = logging.getLogger(__name__)

DEDUP_RECORDS = 1000  # a tick's dead letter is written once if the last this many records do not hold it


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter stream: where the entry came from, why it failed, its raw fields."""

    record_id: str
    stream: str
    entry_id: str
    group: str
    reason: str
    payload: dict[str, str]
    index: int | None = None  # one tick of a tick-batch entry: its index there (the payload holds it alone)

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
            int(fields["index"]) if fields.get("index", "").isdigit() else None,
        )


def tick_dead_letter(entry: RawEntry, index: int) -> RawEntry:
    """Tick ``index`` of tick-batch entry ``entry`` as a dead letter: a single-tick entry of its row as
    it is (what ``tradebot dlq replay`` re-publishes), with the entry's id and the index."""
    fields = {**(entry.fields or {}), "data": row_entry_data((entry.fields or {}).get("data", ""), index)}
    return RawEntry(entry.stream, entry.entry_id, fields, index)


def dead_letter_record(
    stream: str, entry_id: str, group: str, reason: str, fields: Mapping[str, str] | None, index: int | None = None
) -> tuple[str, dict[str, str]]:
    """The dead-letter stream of ``stream`` and the record of one entry that failed there (its raw
    fields as the payload, so ``tradebot dlq replay`` can re-publish it); with ``index``, of one
    tick of a tick-batch entry (``fields`` then a single-tick entry of it, see :func:`tick_dead_letter`)."""
    payload = json.dumps(dict(fields or {}))
    record = {"stream": stream, "entry_id": entry_id, "group": group, "reason": reason, "payload": payload}
    if index is not None:
        record["index"] = str(index)
    return dead_letter_stream(stream), record


class DeadLettering(BusBase):
    """Write dead-letter records, and list, replay or drop them."""

    async def dead_letter(
        self,
        group: str,
        stream: str,
        entry_id: str,
        fields: Mapping[str, str] | None,
        reason: str,
        *,
        lease: tuple[str, str] | None = None,
        index: int | None = None,
        last: bool = False,
    ) -> bool:
        """Move an entry to ``dlq.<stream>`` with its raw payload and the reason, and ack it, atomically.

        With ``index``, one tick of a tick-batch entry (``fields`` a single-tick entry of it, see
        :func:`tick_dead_letter`): recorded once, and the entry acked only with ``last`` (none of its
        ticks is left to process; otherwise its reader acks it with them). With ``lease``, only
        while the lease is ours (False, nothing written, once it is not). Dead-letter streams are
        never trimmed: ``tradebot dlq`` replays or drops their records.
        """
        payload = dead_letter_record(stream, entry_id, group, reason, fields)[1]["payload"]
        if lease and self._fence_groups(lease[0], [stream]) == [([stream], False)]:  # cluster, other slot
            if await self.redis.get(lease[0]) != lease[1]:
                return False
            lease = None
        keys = [stream, dead_letter_stream(stream), *([lease[0]] if lease else [])]
        args = ["", lease[1] if lease else "", group, entry_id, reason, payload]
        args += ["" if index is None else str(index), "1" if last else "", str(DEDUP_RECORDS)]
        if not await self._dead_letter(keys=keys, args=args):
            return False
        if index is None or last:
            self.last_errors.pop(entry_id, None)
        self.stats["dead_lettered"] += 1
        where = entry_id if index is None else f"{entry_id} tick {index}"
        log.warning("dead-lettered %s %s (group %s): %s", stream, where, group, reason)
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
