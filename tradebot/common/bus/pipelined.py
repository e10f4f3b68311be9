"""A script's calls made in the same turn of the event loop, sent to Redis in one pipeline.

A worker whose partition readers are woken together (the strategy: one feed batch lands on every
partition, tradebot/common/waiting_read.py hands each its share at once) commits them together:
each reader's commit is its own EVALSHA, fenced by its own lease and atomic on its own, and only
the round trip is shared. A refused fence, a script error or NOSCRIPT is that caller's alone; a
connection lost under the pipeline fails every caller in it, each as if its own call had failed
(the commit may or may not have been applied: a reader's retry finds an applied one and writes
nothing, as after any lost reply). Not for REDIS_MIN_REPLICAS (WAIT must follow one commit on its
connection) nor a Redis Cluster (one slot per pipeline): there the script is called alone.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class PipelinedScript:
    """Call it as the script (``keys=``, ``args=``): calls queued in one turn go out in one pipeline."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript, stats: Counter[str]):
        self.client, self.script, self.stats = client, script, stats
        self._queued: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # (referenced until done)

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, future))
        if len(self._queued) == 1:  # its first step runs after every caller woken in this turn
            task = asyncio.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future  # (a caller cancelled before the pipeline went out is left out of it)

    async def _send(self) -> None:
        calls, self._queued = [call for call in self._queued if not call[2].done()], []
        if not calls:
            return
        try:
            await self._run(calls)
        finally:  # (cancelled itself: its callers are too, none is left waiting)
            for _, _, future in calls:
                if not future.done():
                    future.cancel()

    async def _run(self, calls: list[Call]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args, _ in calls:
                    pipe.evalsha(self.script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as error:  # noqa: BLE001 - every caller's call failed with it
            for _, _, future in calls:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats["commit_pipelines"] += 1
        self.stats["pipelined_commits"] += len(calls)
        for (keys, args, future), reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):  # a restarted Redis: not run; the script loads itself
                try:
                    reply = await self.script(keys=keys, args=args)
                except Exception as error:  # noqa: BLE001 - this caller's
                    reply = error
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
