"""The commits made in the same turn of the event loop, applied by one call of the commit script.

A worker whose partition readers are woken together (the strategy: one feed batch lands on every
partition, tradebot/common/waiting_read.py hands each its share at once; the mock feed, whose
batch is one commit per partition) commits them together: one EVALSHA carries every commit, and
the script runs each as if alone (scripts.py COMMIT_SCRIPT), fenced by its own lease and guard.
A refused fence or a script error is that caller's alone: each learns its own result. A connection
lost under the call fails every caller in it, each as if its own call had failed (the commits may
or may not have been applied: a caller's retry finds an applied one and writes nothing, as after
any lost reply). NOSCRIPT (a restarted Redis) loads the script and calls again. Not for
REDIS_MIN_REPLICAS (WAIT must follow one commit on its connection) nor a Redis Cluster (the keys of
one call share one slot): there each commit is its own call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript

from tradebot.common.bus.scripts import commit_arguments

Queued = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class CommitsTogether:
    """Call it with one commit's ``keys=``, ``args=``; commits queued in one turn go out in one call."""

    def __init__(self, script: AsyncScript, stats: Counter[str]):
        self.script, self.stats = script, stats
        self._queued: list[Queued] = []
        self._sending: set[asyncio.Task[None]] = set()  # (referenced until done)

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """This commit's result (0, 1 or 2), or its error raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((keys, args, future))
        if len(self._queued) == 1:  # its first step runs after every caller woken in this turn
            task = asyncio.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future  # (a caller cancelled before the call went out is left out of it)

    async def _send(self) -> None:
        queued, self._queued = [item for item in self._queued if not item[2].done()], []
        if not queued:
            return
        try:
            await self._run(queued)
        finally:  # (cancelled itself: its callers are too, none is left waiting)
            for _, _, future in queued:
                if not future.done():
                    future.cancel()

    async def _run(self, queued: list[Queued]) -> None:
        keys, args = commit_arguments([(commit_keys, commit_args) for commit_keys, commit_args, _ in queued])
        try:
            replies: list[Any] = await self.script(keys=keys, args=args)
        except Exception as error:  # noqa: BLE001 - every caller's call failed with it
            for _, _, future in queued:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats["commit_calls"] += 1
        self.stats["commits_together"] += len(queued)
        for (_, _, future), reply in zip(queued, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
