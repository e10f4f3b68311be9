"""The paper execution's price source: the ticks of every partition, for the orders that rest.

A resting order (tradebot/broker/resting.py) is judged on the prices after it. The paper account
reads them from ``price.ticks:{p}`` with plain XRANGE (no consumer group: reading them adds no
reader the streams' trimming waits for), from a position per stream kept in its checkpoint, and
applies them in the same commit as the orders it reads: the fills they cause, the positions read
and the orders' acks are one atomic write (in slot {0}; the ticks of other slots are only read).
A worker killed between a price and its fill reads the same ticks again from the committed
position, and judging a price twice fills nothing twice.

**In event time, as the backtester.** Orders come from the strategy role, which reads the same
ticks first: left alone, execution would see a tick before the order that tick (or one before it)
caused. So a tick is applied only once every order it could follow has been read:

- only ticks the strategy group has finished with (acked: its orders are committed with that
  ack, in the tick's slot) — the *frontier*, read before the orders are;
- and only when the orders streams were read to their end (fewer than a batch came back); else
  only ticks stamped no later than the last order read from that partition;
- merged with the batch's orders by timestamp: a tick stamped no later than an order is applied
  before it (so an order is never judged on its own instant), one stamped later after it.

That is the backtester's order (tradebot/backtest/engine.py applies each observation stamped no
later than an order before it), so both fill a resting order on the same tick at the same price.

Ticks are read only while an order rests in their partition, or for a batch holding an order that
may rest (then the frontier is read after the orders, and only ticks stamped no later than the
newest order read from that partition count). Nothing resting costs nothing per batch; every
SKIP_EVERY_S a partition with none moves up to its frontier, so a first resting order reads
from there rather than from the start of the stream.

A tick-batch entry holds several ticks, and the order bound may fall between two of them: a
position is then ``<entry id>/<index>`` (read through that tick of the entry), else the id of the
last entry read whole.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from tradebot.common.bus import Bus
from tradebot.common.bus.connection import is_cluster
from tradebot.common.bus.wire import Delivery, RawEntry, decode_entry, entry_order
from tradebot.common.models import Event, Order, OrderChange, Tick
from tradebot.common.partitions import PartitionReader, PartitionSettings
from tradebot.common.streams import STRATEGY_ROLE, order_stream, partition_for, tick_streams

if TYPE_CHECKING:
    from tradebot.execution.service import BrokerPartition

CHUNK = 1000  # ticks per XRANGE
SKIP_EVERY_S = 5.0  # how often partitions with nothing resting move up to their frontier
PRICE_POLL_MS = 100  # how long an idle reader waits while orders rest (ticks do not wake it: see _wait)
MAX_SEQUENCE = 2**64 - 1


def before(entry_id: str) -> str:
    """The greatest stream id below ``entry_id``."""
    millis, sequence = entry_order(entry_id)
    return f"{millis}-{sequence - 1}" if sequence else f"{millis - 1}-{MAX_SEQUENCE}"


def earlier(a: str, b: str) -> str:
    return a if entry_order(a) <= entry_order(b) else b


async def frontier(bus: Bus, stream: str) -> str | None:
    """The last tick of ``stream`` the strategy role has finished with (None: none yet).

    Entries up to the group's last-delivered id were delivered before it was read (a positioned
    strategy reader moves it in the commit that publishes their orders); of those, the ones below
    the oldest still pending, read after, are acked, and their orders are published.
    Without a strategy group nobody makes orders from the stream: all of it counts.
    """
    try:
        groups = [g for g in await bus.redis.xinfo_groups(stream) if g["name"] == STRATEGY_ROLE]
    except ResponseError:  # no such stream yet
        return None
    if not groups:
        tail = (await bus.tails([stream]))[stream]
        return None if tail == "0-0" else tail
    delivered = str(groups[0]["last-delivered-id"])
    if delivered == "0-0":
        return None
    pending = await bus.redis.xpending(stream, STRATEGY_ROLE)
    if not pending or not pending.get("pending"):
        return delivered
    return earlier(delivered, before(str(pending["min"])))


def position_entry(position: str) -> str:
    """The entry id of a price position (``<entry id>`` or ``<entry id>/<index>``)."""
    return position.partition("/")[0]


async def read_ticks(bus: Bus, stream: str, after: str, upto: str, until: datetime | None) -> list[tuple[str, Tick]]:
    """The ticks of ``stream`` after position ``after`` up to entry ``upto``, each with its
    position: one chunk, or, to reach ``until`` (the newest order read), as many as it takes."""
    ticks: list[tuple[str, Tick]] = []
    entry, _, through = after.partition("/")
    start = entry if through else f"({entry}"  # the rest of a partly read entry first
    while True:
        rows = await bus.redis.xrange(stream, min=start, max=upto, count=CHUNK)
        for entry_id, fields in rows:
            try:
                events, indexes, _ = decode_entry(fields)  # without the ticks the strategy role dead-letters
            except ValueError:
                continue  # the strategy role dead-letters it; not a price
            last = len(events) - 1
            for n, (event, index) in enumerate(zip(events, indexes, strict=True)):
                if through and entry_id == entry and index is not None and index <= int(through):
                    continue  # read before
                if isinstance(event, Tick):
                    ticks.append((entry_id if n == last else f"{entry_id}/{index}", event))
        if len(rows) < CHUNK or until is None or (ticks and ticks[-1][1].timestamp > until):
            return ticks
        start = f"({rows[-1][0]}"


def merged(orders: list[Event], ticks: dict[int, list[Tick]]) -> Iterator[Event]:
    """Orders in their order, each after the ticks stamped no later than it (every partition's
    ticks in stream order; between partitions by timestamp)."""
    prices = heapq.merge(*ticks.values(), key=lambda tick: tick.timestamp)
    waiting = next(prices, None)
    for order in orders:
        while waiting is not None and waiting.timestamp <= order.timestamp:
            yield waiting
            waiting = next(prices, None)
        yield order
    while waiting is not None:
        yield waiting
        waiting = next(prices, None)


def may_rest(event: Event) -> bool:
    """Whether an order (or a replace: its replacement) may rest, and so need the ticks after it."""
    if isinstance(event, OrderChange):
        return event.action == "replace"
    if not isinstance(event, Order):
        return False
    return event.order_type != "market" or event.take_profit_price is not None or event.stop_loss_price is not None


def in_time(batch: list[Delivery]) -> list[Event]:
    """The batch's orders by timestamp, each stream's in its order (a batch holds each stream's
    entries one stream after the other; the backtester has them all in time order)."""
    streams: dict[str, list[Event]] = {}
    for delivery in batch:
        streams.setdefault(delivery.stream, []).append(delivery.event)
    return list(heapq.merge(*streams.values(), key=lambda event: event.timestamp))


class PricedReader(PartitionReader):
    """The paper execution's reader: orders as any partition reader, and the ticks they need."""

    state: BrokerPartition

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        partition: int,
        state: BrokerPartition,
        counters: Counter[str],
        tick_partitions: int,
    ):
        super().__init__(bus, config, member, partition, state, counters)
        self.tick_streams = tick_streams(tick_partitions)
        self.tick_partitions = tick_partitions
        self._skip_at = 0.0  # monotonic time of the next frontier read while nothing rests
        self._ticks: dict[int, list[tuple[str, Tick]]] = {}
        self._frontier: dict[str, str | None] = {}
        self._caught_up: set[int] = set()
        # On one Redis the orders are read with XREAD from the group's position, which the commit
        # moves (see _read_orders); on a cluster (streams in other slots than the account's) with
        # XREADGROUP and acks.
        self._positioned = not is_cluster(bus.redis)
        self._positions: dict[str, str] = {}
        self._ended: dict[str, str] = {}  # where the last read ended, per stream (the commit moves there)
        self._rejected: list[tuple[RawEntry, str]] = []  # entries of that read that are no valid event

    def _resting_partitions(self) -> set[int]:
        return {partition_for(order.symbol, self.tick_partitions) for order in self.state.broker.resting.values()}

    async def _read(self, lease: tuple[str, str], *, pending: bool) -> list[Delivery] | None:
        self._ticks, self._caught_up, self._frontier = {}, set(), {}
        resting = self._resting_partitions()
        # The frontier before the orders (what lets ticks after the newest order count) only while
        # something rests, or now and then to move idle partitions up (SKIP_EVERY_S).
        before = not pending and (bool(resting) or time.monotonic() >= self._skip_at)
        if before:
            self._frontier = await self._frontiers()
            self._skip_at = time.monotonic() + SKIP_EVERY_S
        batch = await self._read_orders(lease, pending=pending)
        if batch is None or pending:  # the previous owner's entries come back alone: no prices among them
            return batch
        read = Counter(d.stream for d in batch) + Counter(entry.stream for entry, _ in self._rejected)
        full = {s for s, n in read.items() if n >= self.config.batch_size}
        if before:  # every order of these partitions before the frontier was read
            # orders from outside a strategy (partition 0's stream) may be of any partition's symbol
            self._caught_up = {p for p in range(self.tick_partitions) if not {order_stream(p), order_stream(0)} & full}
        if not batch and not resting:
            return batch
        newest: dict[str, datetime] = {}
        for delivery in batch:
            stamp = delivery.event.timestamp
            newest[delivery.stream] = max(newest.get(delivery.stream, stamp), stamp)
        own = {partition_for(d.event.symbol, self.tick_partitions) for d in batch if may_rest(d.event)}
        if not before:  # an order that may rest came: the frontier now, ticks only up to the orders read
            if not own:
                return batch
            self._frontier = await self._frontiers()
            own = {p for p in own if order_stream(p) in newest}
        last = max(newest.values(), default=None)
        for partition in resting | own:
            stream, upto = self.tick_streams[partition], self._frontier.get(self.tick_streams[partition])
            unread = {order_stream(partition), order_stream(0)} & (full if before else set(newest))
            if upto is None:
                continue
            ticks = await read_ticks(self.bus, stream, self.state.price_positions.get(stream, "0-0"), upto, last)
            if unread:  # an order not read yet may be stamped as early as the newest one read there
                bound = min(newest[s] for s in unread)
                ticks = ticks[: next((i for i, (_, t) in enumerate(ticks) if t.timestamp > bound), len(ticks))]
            if ticks:
                self._ticks[partition] = ticks
        return batch

    async def _read_orders(self, lease: tuple[str, str], *, pending: bool) -> list[Delivery] | None:
        """The next orders. Positioned (one Redis): XREAD after the group's position, fenced by the
        lease in the same script; the commit moves the group to where the read ended, atomically
        with the account and the events (XGROUP SETID), so nothing is pending and Redis writes no
        XCLAIM per entry to its append-only file. A kill -9 before the commit reads the same
        orders again from the same position. The first call of a reader (``pending``) takes the
        group's position, after taking over the entries an XREADGROUP reader of a release before
        left pending."""
        if not self._positioned:
            return await super()._read(lease, pending=pending)
        self._ended, self._rejected = {}, []
        if pending:
            self._positions = await self.bus.take_positions(self.streams, self.config.role, lease)
            return []
        read = await self.bus.read_positioned(self._positions, lease, count=self.config.batch_size)
        if read is None:
            return None
        batch, self._rejected, self._ended = read
        return batch

    async def _commit(
        self,
        batch: list[Delivery],
        *,
        rejected: Sequence[tuple[RawEntry, str]] = (),
        positions: dict[str, str] | None = None,
    ) -> bool:
        if not self._positioned:
            return await super()._commit(batch, rejected=rejected, positions=positions)
        # the dead-letter records of invalid entries go in the commit that moves past them
        if not await super()._commit(batch, rejected=self._rejected, positions=self._ended):
            return False
        self._positions.update(self._ended)
        self._ended, self._rejected = {}, []
        return True

    async def _frontiers(self) -> dict[str, str | None]:
        found = await asyncio.gather(*(frontier(self.bus, stream) for stream in self.tick_streams))
        return dict(zip(self.tick_streams, found, strict=True))

    def _more_than_batch(self) -> bool:
        # entries read that were all invalid are committed too: their records, and the position past them
        return bool(self._ticks) or bool(self._ended) or bool(self._skips())

    def _skips(self) -> dict[str, str]:
        """Partitions without a resting order move to their frontier (when every order was read)."""
        resting = self._resting_partitions()
        moves = {}
        for partition in self._caught_up - resting - self._ticks.keys():
            stream = self.tick_streams[partition]
            upto = self._frontier.get(stream)
            at = position_entry(self.state.price_positions.get(stream, "0-0"))
            if upto is not None and entry_order(upto) > entry_order(at):
                moves[stream] = upto
        return moves

    def _apply(self, batch: list[Delivery]) -> tuple[list[tuple[str, Any]], list[tuple[Delivery, str]]]:
        if not batch and not self._ticks:  # only positions move up (nothing to decide: no apply)
            self.state.read_prices(self._skips())
            return [], []
        ticks = {partition: [tick for _, tick in rows] for partition, rows in self._ticks.items()}
        try:
            outputs = self.state.apply(list(merged(in_time(batch), ticks)))
        except Exception:  # noqa: BLE001 - without the prices, entry by entry (they are read again next time)
            self._restore_committed()
            self._ticks = {}
            return super()._apply(batch)
        read = {self.tick_streams[partition]: rows[-1][0] for partition, rows in self._ticks.items()}
        self.state.read_prices({**self._skips(), **read})
        return outputs, []

    async def _wait(self, stop: asyncio.Event, block_ms: int | None = None) -> None:
        # A tick is of use only once the strategy role acked it, which no stream tells: while an
        # order rests, look again soon.
        resting = bool(self.state.broker.resting)
        block_ms = min(PRICE_POLL_MS, self.config.block_ms) if resting else None
        if not self._positioned:
            await super()._wait(stop, block_ms)
            return
        await self.bus.wait_for_entries(self._positions, block_ms or self.config.block_ms, stop)
