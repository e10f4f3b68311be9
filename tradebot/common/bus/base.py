"""What every part of the :class:`~tradebot.common.bus.Bus` shares: its client, scripts, settings
and counters, and the look-ups at a stream's groups and slots that several parts make."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ResponseError

from tradebot.common.bus.connection import by_slot, is_cluster
from tradebot.common.bus.scripts import (
    COMMIT_SCRIPT,
    DEAD_LETTER_SCRIPT,
    FENCED_READ_SCRIPT,
    POSITIONED_READ_SCRIPT,
    PUBLISH_ONCE_SCRIPT,
    REPLAY_SCRIPT,
    TAKE_OVER_PENDING_SCRIPT,
    TRIM_SCRIPT,
)
from tradebot.common.bus.wire import TICKS_PER_ENTRY

REMEMBERED_ERRORS = 10_000  # last_errors keeps this many entry ids (oldest forgotten first)


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


class BusBase:
    """The state every part of the Bus shares; the parts are mixins of it, assembled in ``Bus``."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_deliveries: int = 5,
        memory_budget_bytes: int | None = None,
        min_replicas: int = 0,
        ticks_per_entry: int = TICKS_PER_ENTRY,
    ) -> None:
        self.redis = client
        self.ticks_per_entry = ticks_per_entry  # BUS_TICKS_PER_ENTRY: what publish and commit put in an entry
        self.min_replicas = min_replicas  # REDIS_MIN_REPLICAS (0: a commit counts once its master has it)
        self._unconfirmed: set[str] = set()  # barrier keys of slots whose last commit is not confirmed
        self.max_deliveries = max_deliveries
        self.memory_budget_bytes = memory_budget_bytes  # None: no budget (tests, tools)
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._fenced_read = client.register_script(FENCED_READ_SCRIPT)
        self._positioned_read = client.register_script(POSITIONED_READ_SCRIPT)
        self._take_over_pending = client.register_script(TAKE_OVER_PENDING_SCRIPT)
        self._publish_once = client.register_script(PUBLISH_ONCE_SCRIPT)
        self._dead_letter = client.register_script(DEAD_LETTER_SCRIPT)
        self._trim = client.register_script(TRIM_SCRIPT)
        self._replay = client.register_script(REPLAY_SCRIPT)
        self.last_errors = LastErrors()
        self.stats: Counter[str] = Counter()  # trimmed_before_ack, trimmed, waits_for_room, dead_lettered
        self._next_room_log = 0.0

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        try:
            groups: list[dict[str, Any]] = await self.redis.xinfo_groups(stream)
            return groups
        except ResponseError:  # no such stream yet
            return []

    async def last_delivered_id(self, stream: str, group: str) -> str:
        """The id of the newest entry ``group`` has been given ("0-0" before the first)."""
        for info in await self._groups(stream):
            if info["name"] == group:
                return str(info["last-delivered-id"])
        return "0-0"

    def _fence_groups(self, lease_key: str, streams: Sequence[str]) -> list[tuple[list[str], bool]]:
        """``streams`` by slot, each with whether it shares the lease's slot (always, on one Redis)."""
        if not is_cluster(self.redis):
            return [(list(streams), True)]
        lease_slot = key_slot(lease_key.encode())
        return [(group, key_slot(group[0].encode()) == lease_slot) for group in by_slot(streams)]
