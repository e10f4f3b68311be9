"""GET /health: database and mode, Redis and its memory budget, every worker's heartbeat, stream
lengths and group lag, dead letters per stream, and the gaps live feeds recorded."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

import redis.asyncio as aioredis
from fastapi import APIRouter, Response

from tradebot.api.deps import PoolDep, ReadPoolDep, RedisDep, SettingsDep
from tradebot.api.schemas import DatabaseOut, GapOut, HealthOut, RedisMemoryOut, StreamOut, WorkerOut
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, get_many
from tradebot.common.config import Settings
from tradebot.common.db import TRANSIENT_DB_ERRORS, is_reachable
from tradebot.common.streams import (
    EXECUTION_ROLE,
    GAP_PATTERN,
    HEARTBEAT_PATTERN,
    STORAGE_GROUP,
    STRATEGY_ROLE,
    order_streams,
    storage_streams,
    tick_streams,
)
from tradebot.storage.timescale import database_mode

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


def watched_groups(settings: Settings) -> list[tuple[str, str]]:
    """(stream, group) pairs whose backlog /health reports."""
    partitions = settings.tick_partitions
    return (
        [(stream, STORAGE_GROUP) for stream in storage_streams(partitions)]
        + [(stream, STRATEGY_ROLE) for stream in tick_streams(partitions)]
        + [(stream, EXECUTION_ROLE) for stream in order_streams(partitions)]
    )


async def heartbeats(client: aioredis.Redis, now: datetime) -> list[WorkerOut]:
    """Workers whose TTL'd heartbeat key still exists, by role and name."""
    keys = sorted([key async for key in client.scan_iter(match=HEARTBEAT_PATTERN, count=500)])
    values = await get_many(client, keys)
    workers = []
    for key, raw in zip(keys, values, strict=True):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            worker = WorkerOut.model_validate(json.loads(raw))
        except ValueError as error:
            log.warning("ignoring malformed heartbeat %s: %s", key, error)
            continue
        if worker.updated_at:
            worker.age_s = round((now - worker.updated_at).total_seconds(), 3)
        workers.append(worker)
    return workers


async def stream_health(client: aioredis.Redis, settings: Settings) -> list[StreamOut]:
    """Length, pending and lag of every existing watched stream for its group."""
    bus = Bus(client)
    found: list[StreamOut] = []
    for stream, group in watched_groups(settings):
        if not await client.exists(stream):
            continue
        health = await bus.health(stream, group)
        found.append(
            StreamOut(
                stream=stream,
                group=group,
                length=health.length,
                pending=health.pending,
                lag=health.lag,
            )
        )
    return found


async def recorded_gaps(client: aioredis.Redis) -> list[GapOut]:
    """Every gap record a live feed committed, newest first."""
    keys = [key async for key in client.scan_iter(match=GAP_PATTERN, count=500)]
    gaps = []
    for raw in await get_many(client, keys):
        try:
            gaps.append(GapOut.model_validate(json.loads(raw)))
        except (TypeError, ValueError) as error:  # expired meanwhile, or not one of ours
            log.warning("ignoring malformed gap record: %s", error)
    return sorted(gaps, key=lambda gap: gap.first, reverse=True)


async def redis_memory(client: aioredis.Redis, settings: Settings) -> RedisMemoryOut:
    """Redis memory in use against the budget."""
    used = await Bus(client).memory_used()
    budget = int(settings.redis_memory_budget_mb * 2**20)
    return RedisMemoryOut(used_bytes=used, budget_bytes=budget, over_budget=used > budget)


@router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def health(
    pool: PoolDep, read_pool: ReadPoolDep, client: RedisDep, settings: SettingsDep, response: Response
) -> HealthOut:
    """Everything an operator checks first; 503 when the database, its replica or Redis does not answer."""
    reachable = await is_reachable(pool)
    replica_ok = None if read_pool is pool else await is_reachable(read_pool)
    mode = None
    if reachable:
        try:
            mode = await database_mode(pool)
        except TRANSIENT_DB_ERRORS:
            reachable = False
    workers: list[WorkerOut] = []
    streams: list[StreamOut] = []
    dead_letters: dict[str, int] = {}
    memory = None
    gaps: list[GapOut] = []
    redis_ok: bool | None = None
    if client is not None:
        try:
            workers = await heartbeats(client, datetime.now(UTC))
            streams = await stream_health(client, settings)
            dead_letters = await Bus(client).dead_letter_counts()
            memory = await redis_memory(client, settings)
            gaps = await recorded_gaps(client)
            redis_ok = True
        except RECOVERABLE_REDIS_ERRORS:
            redis_ok = False
    healthy = reachable and replica_ok is not False and redis_ok is not False
    status: Literal["ok", "degraded"] = "ok" if healthy else "degraded"
    response.status_code = 200 if status == "ok" else 503
    return HealthOut(
        status=status,
        database=DatabaseOut(reachable=reachable, mode=mode, replica_reachable=replica_ok),
        redis_reachable=redis_ok,
        workers=workers,
        streams=streams,
        dead_letters=dead_letters,
        redis_memory=memory,
        gaps=gaps,
    )


async def health_summary(client: aioredis.Redis, settings: Settings) -> dict[str, object]:
    """Workers and stream backlogs, as the live ``health`` channel sends them every few seconds."""
    workers = await heartbeats(client, datetime.now(UTC))
    streams = await stream_health(client, settings)
    return {
        "workers": [worker.model_dump(mode="json") for worker in workers],
        "streams": [stream.model_dump(mode="json") for stream in streams],
    }
