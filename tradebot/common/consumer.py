"""The consumer loop of stateless roles: one group over many streams, ack after the effect.

On start a consumer drains its own pending entries, then alternates between reclaiming entries
that dead consumers left idle and reading new ones. A handler error on a batch is retried entry by
entry so one poison entry cannot hold back the rest; the poison entry stays pending and reaches the
dead-letter stream after ``max_deliveries``. Transient errors (the database or Redis gone) are
retried with capped, jittered backoff and never count as deliveries.

On a schedule the consumer also keeps its streams tidy: it trims every stream below the oldest
entry some group still needs (``retained`` says which groups must read which stream) and removes
consumers of its group that hold nothing and have been idle for long (dead processes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.wire import Delivery
from tradebot.common.lifecycle import Backoff, end_if_cancelled

log = logging.getLogger(__name__)

Handler = Callable[[list[Delivery]], Awaitable[None]]
T = TypeVar("T")
RETENTION_INTERVAL_S = 2.0
IDLE_CONSUMER_CLAIMS = 20  # a consumer idle for this many claim intervals, holding nothing, is gone
STILL_WAITING_LOG_S = 60.0


async def ride_out_redis(operation: Callable[[], Awaitable[T]], stop: asyncio.Event, backoff: Backoff) -> T | None:
    """Run a Redis operation, retrying through outages with backoff; None if it failed once stopped.

    It is always tried at least once, so the ack of a finished batch still goes out while stopping.
    """
    while True:
        try:
            result = await operation()
            backoff.succeeded()
            return result
        except RECOVERABLE_REDIS_ERRORS as error:
            if stop.is_set():
                return None
            await backoff.wait(error, stop)


class GroupConsumer:
    """Consume ``streams`` as ``consumer`` in ``group``; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        batch_size: int,
        block_ms: int,
        claim_idle_ms: int,
        counters: Counter[str],
        transient_errors: tuple[type[BaseException], ...] = (),
        retained: Mapping[str, Sequence[str]] | None = None,
    ):
        self.bus = bus
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.counters = counters
        self.transient_errors = transient_errors + RECOVERABLE_REDIS_ERRORS
        self._redis_backoff = Backoff("redis")
        self._effect_backoff = Backoff(f"{group} effect")
        self._recheck_pending = True
        self._next_reclaim = 0.0
        # stream -> groups that must read it before it is trimmed; streams not named are left alone
        self.retained = {
            stream: tuple(readers) for stream, readers in (retained or {}).items() if stream in self.streams
        }
        self._next_retention = 0.0
        self._counted_retries = 0

    async def run(
        self, handle: Handler, *, stop: asyncio.Event, max_messages: int | None = None, burst: bool = False
    ) -> None:
        """Loop until ``stop`` (or, in burst mode, until nothing is left; or after max_messages)."""
        await self._with_redis(self._ensure_groups, stop)
        while not stop.is_set():
            end_if_cancelled()  # a cancellation a Redis command dropped (the runtime's grace period)
            if max_messages is not None and self.counters["handled"] >= max_messages:
                return
            batch = await self._with_redis(self._next_batch, stop)
            if batch:
                await self._handle(batch, handle, stop)
            elif burst and batch is not None and not self._recheck_pending:
                return

    async def _ensure_groups(self) -> None:
        for stream in self.streams:
            await self.bus.ensure_group(stream, self.group)

    async def _next_batch(self) -> list[Delivery]:
        if self._recheck_pending:
            pending = await self.bus.read(
                self.streams, self.group, self.consumer, count=self.batch_size, block_ms=None, pending=True
            )
            if pending:
                return pending
            self._recheck_pending = False
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
            await self._keep_retention()
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.claim_idle_ms / 2000
            for stream in self.streams:
                claimed = await self.bus.reclaim_idle(
                    stream, self.group, self.consumer, min_idle_ms=self.claim_idle_ms, count=self.batch_size
                )
                if claimed:
                    self.counters["reclaimed"] += len(claimed)
                    return claimed
        return await self.bus.read(
            self.streams, self.group, self.consumer, count=self.batch_size, block_ms=self.block_ms
        )

    async def _keep_retention(self) -> None:
        """Trim what every group has finished and forget consumers that died holding nothing."""
        for stream, readers in self.retained.items():
            self.counters["trimmed"] += await self.bus.trim_consumed(stream, readers)
            self.counters["idle_consumers_removed"] += await self.bus.remove_idle_consumers(
                stream, self.group, idle_ms=self.claim_idle_ms * IDLE_CONSUMER_CLAIMS, keep=self.consumer
            )
        self.counters["trimmed_before_ack"] = self.bus.stats["trimmed_before_ack"]

    async def _with_redis(self, operation: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
        try:
            return await ride_out_redis(operation, stop, self._redis_backoff)
        finally:
            retries = self._redis_backoff.total_retries - self._counted_retries
            if retries:  # a lost XREADGROUP reply leaves entries pending for us: look there first
                self.counters["redis_retries"] += retries
                self._counted_retries = self._redis_backoff.total_retries
                self._recheck_pending = True

    async def _handle(self, batch: list[Delivery], handle: Handler, stop: asyncio.Event) -> None:
        """Run the effect (retrying transient failures), then ack what succeeded."""
        while True:
            try:
                done = await self._effect(batch, handle)
                self._effect_backoff.succeeded()
                break
            except self.transient_errors as error:
                if stop.is_set():
                    return  # unacked: redelivered to whoever runs next
                self.counters["effect_retries"] += 1
                await self._effect_backoff.wait(error, stop)
        await self._with_redis(lambda: self.bus.ack(self.group, done), stop)
        self.counters["handled"] += len(done)

    async def _effect(self, batch: list[Delivery], handle: Handler) -> list[Delivery]:
        """The whole batch at once, or entry by entry when it fails, to set a poison entry aside.

        Transient errors propagate from either path: they say nothing about the entries, so they
        must not count as failed deliveries.
        """
        try:
            await handle(batch)
            return batch
        except self.transient_errors:
            raise
        except Exception as error:  # noqa: BLE001 - isolate the poison entry below
            log.warning("batch of %d failed (%s); retrying entry by entry", len(batch), error)
        done, failed = [], set()
        for delivery in batch:
            try:
                await handle([delivery])
                done.append(delivery)
            except self.transient_errors:
                raise
            except Exception as error:  # noqa: BLE001 - recorded, redelivered, dead-lettered after N
                self.bus.last_errors[delivery.entry_id] = f"{type(error).__name__}: {error}"
                self.counters["failed"] += 1
                self._recheck_pending = True
                failed.add(delivery.entry_id)
        return [d for d in done if d.entry_id not in failed]  # an entry is acked with all its ticks or not at all
