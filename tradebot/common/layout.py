"""Upgrading from the key layout before Redis Cluster support (keys without ``{p}`` hash tags).

Streams are not moved: an entry's id is its Redis time, and a consumer group's position cannot
follow it into another stream. So an upgrade needs the old streams drained (every group done with
them) and refuses to start otherwise. State keys (strategy checkpoints, the account, the trading
state) are renamed to their new names, so no position, cash or HALT is forgotten.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import is_cluster
from tradebot.common.config import SettingsError
from tradebot.common.streams import legacy_state_keys, legacy_streams

log = logging.getLogger(__name__)


async def unread_legacy_streams(bus: Bus, partitions: int) -> list[str]:
    """Old-layout streams holding entries some group has not finished (or no group has read)."""
    unread = []
    for stream in legacy_streams(partitions):
        if not await bus.redis.exists(stream):
            continue
        groups = [str(group["name"]) for group in await bus.redis.xinfo_groups(stream)]
        if (not groups and await bus.redis.xlen(stream)) or any([await bus.backlog([stream], g) for g in groups]):
            unread.append(stream)
    return unread


async def upgrade_key_layout(client: aioredis.Redis, partitions: int) -> list[str]:
    """Refuse (SettingsError) while old streams hold unread work; rename old state keys; returns
    the keys renamed. A cluster never held the old layout (it could not run it)."""
    if is_cluster(client):
        return []
    unread = await unread_legacy_streams(Bus(client), partitions)
    if unread:
        raise SettingsError(
            f"Redis holds unread entries in streams of the old key layout ({', '.join(unread[:3])}"
            f"{', …' if len(unread) > 3 else ''}): run the previous release until they are drained "
            "(tradebot status: no lag), then start this one (see README, Redis Cluster)"
        )
    renamed = []
    for old, new in legacy_state_keys(partitions).items():
        try:
            if await client.renamenx(old, new):
                renamed.append(old)
        except ResponseError:  # no such key: nothing to carry over (or another worker just did)
            continue
    if renamed:
        log.info("key layout upgraded: %s renamed to their hash-tagged names", ", ".join(renamed))
    return renamed
