"""The execution loop for a real broker: orders.new in, the broker's lifecycle out as orders.events.

It runs as the reader of the execution role's one partition (the lease keeps it to one process).
Every turn: take new orders and record them (``submitted``) in the same commit as their acks,
so intent is durable before anything is sent; send what waits (an order a dead predecessor may
have sent is looked up first); turn trade updates, REST polls (while the stream is down) and
reconciliations into events through the ledger; commit the events with the ledger. A kill -9
anywhere repeats no event and sends no order twice: the broker refuses a client order id it
has seen, and every doubt is settled by looking that id up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from tradebot.broker.alpaca import AlpacaGateway, client_order_id
from tradebot.broker.base import BrokerGateway, MarketClock
from tradebot.broker.ledger import Ledger, Tracked
from tradebot.broker.live import alpaca_is_paper, announce
from tradebot.broker.reconcile import Reconciler
from tradebot.broker.stream import TradeUpdates
from tradebot.common.bus import RECOVERABLE_REDIS_ERRORS, Bus, Commit, Delivery
from tradebot.common.config import Settings
from tradebot.common.models import Order, OrderEvent
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import ORDER_EVENTS, checkpoint_key, lease_key, partition_consumer

log = logging.getLogger(__name__)
RESEND_AFTER_LOOKUPS = 3  # an unsure order the broker still does not know after this many lookups is sent again
# Sending stops for the turn after this long, or when the rate limit would make it wait, so fills
# that came in meanwhile reach the bus promptly even while orders queue for tokens.
SEND_TURN_S = 0.1
ANYTIME = ("gtc", "opg", "cls")


class BrokerExecution:
    """Reader of the execution partition that trades at a real broker (Alpaca)."""

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        settings: Settings,
        counters: Counter[str],
        gate: Callable[[Order, float], str | None] = lambda _order, _held: None,
    ):
        """``gate`` says why an order must not be sent (the operator's trading state), or None."""
        self.bus, self.config, self.settings, self.counters = bus, config, settings, counters
        self.gate = gate
        self.key = checkpoint_key(config.role, 0)
        self.lease = (lease_key(config.role, 0), member)
        self.consumer = partition_consumer(0)
        self.ledger = Ledger(settings.order_memory_days)
        self._committed: str | None = None
        self._fresh: set[str] = set()  # recorded by this process and never sent: safe to send at once
        self._unsure_since: dict[str, float] = {}
        self._clock: MarketClock | None = None

    async def run(self, stop: asyncio.Event, *, burst: bool, max_messages: int | None) -> ReaderEnd:
        paper = alpaca_is_paper(self.settings)
        announce(self.settings, paper)
        gateway = AlpacaGateway(self.settings, paper=paper)
        updates = TradeUpdates(self.settings, paper=paper)
        stream_stop = asyncio.Event()
        streaming = asyncio.create_task(updates.run(stream_stop))
        try:
            return await self._trade(gateway, updates, stop, burst=burst, max_messages=max_messages)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.warning("execution: redis error (%s); the partition will be taken up again", error)
            return ReaderEnd.ERROR
        finally:
            stream_stop.set()
            await asyncio.gather(streaming, return_exceptions=True)
            gateway.close()

    async def _trade(
        self,
        gateway: BrokerGateway,
        updates: TradeUpdates,
        stop: asyncio.Event,
        *,
        burst: bool,
        max_messages: int | None,
    ) -> ReaderEnd:
        streams = await self._join_groups()
        self._committed = await self.bus.redis.get(self.key)
        self.ledger.restore(json.loads(self._committed) if self._committed else None)
        reconciler = Reconciler(self.ledger, gateway, self.settings, fresh=self._committed is None)
        if not await self._commit(await reconciler.run()):
            return ReaderEnd.LOST
        pending, was_connected = True, False
        while not stop.is_set():
            batch = await self.bus.read_fenced(
                streams, self.config.role, self.consumer, self.lease, count=self.config.batch_size, pending=pending
            )
            if batch is None:
                return ReaderEnd.LOST
            if batch:
                orders = await self._set_aside_non_orders(batch)
                if not await self._commit(await self._take(orders, gateway, reconciler), orders):
                    return ReaderEnd.LOST
            elif pending:
                pending = False
            events = await self._send_waiting(gateway)
            events += self._drain(updates)
            connected = updates.connected.is_set()
            if (connected and not was_connected) or reconciler.due(streaming=connected):
                events += await reconciler.run(orders_only=not reconciler.due_full())
            was_connected = connected
            if events and not await self._commit(events):
                return ReaderEnd.LOST
            if max_messages is not None and self.counters["handled"] >= max_messages and not self.ledger.orders:
                return ReaderEnd.STOPPED
            if burst and not batch and not pending and not self.ledger.orders:
                return ReaderEnd.DRAINED
            if not batch and not events:
                await self._wait(updates, streams, stop, gateway.ready_in() if self.ledger.waiting() else None)
        return ReaderEnd.STOPPED

    async def _join_groups(self) -> list[str]:
        """Every order stream, its group created: what this account reads."""
        streams = self.config.streams_for(0)
        for stream in streams:
            await self.bus.ensure_group(stream, self.config.role)
        return streams

    async def _set_aside_non_orders(self, batch: list[Delivery]) -> list[Delivery]:
        """Anything but an Order goes to the dead-letter stream with the reason; the orders stay."""
        for delivery in batch:
            if not isinstance(delivery.event, Order):
                reason = f"expected an Order on {delivery.stream}, got a {type(delivery.event).__name__}"
                raw = {"event": delivery.event.model_dump_json()}
                await self.bus.dead_letter(self.config.role, delivery.stream, delivery.entry_id, raw, reason)
        return [delivery for delivery in batch if isinstance(delivery.event, Order)]

    async def _take(self, batch: list[Delivery], gateway: BrokerGateway, reconciler: Reconciler) -> list[OrderEvent]:
        """Record new orders (or refuse them, with the reason, while trading must not happen)."""
        events: list[OrderEvent] = []
        for delivery in batch:
            order = delivery.event
            assert isinstance(order, Order)  # set aside before
            client_id = client_order_id(order)
            submitted = self.ledger.add(order, client_id)
            self.counters["handled"] += 1
            if submitted is None:
                continue  # a redelivered or republished order: already ours
            events.append(submitted)
            refusal = (
                reconciler.halted
                or self.gate(order, self.ledger.positions.get(order.symbol, 0.0))
                or await self._outside_session(order, gateway)
            )
            if refusal:
                events += self.ledger.reject(client_id, refusal)
            else:
                self._fresh.add(client_id)
        return events

    async def _outside_session(self, order: Order, gateway: BrokerGateway) -> str | None:
        now = datetime.now(UTC)
        if self._clock is None or now >= min(self._clock.next_open, self._clock.next_close):
            try:
                self._clock = await gateway.clock()
            except Exception as error:  # noqa: BLE001 - without the broker's clock no order is sent
                log.warning("execution: market clock unavailable (%s)", error)
                return "market clock unavailable: the broker did not answer GET /v2/clock"
        if self._clock.is_open or order.time_in_force in ANYTIME or order.extended_hours:
            return None
        return f"market closed (next open {self._clock.next_open.isoformat()}); only gtc/opg/cls or extended hours"

    async def _send_waiting(self, gateway: BrokerGateway) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        turn_ends = time.monotonic() + SEND_TURN_S
        for tracked in self.ledger.waiting():
            if time.monotonic() > turn_ends or gateway.ready_in() > 0:
                break
            if tracked.client_order_id in self._fresh:
                self._fresh.discard(tracked.client_order_id)
            elif not await self._settle(gateway, tracked, events):
                continue
            outcome = await gateway.submit(Order.model_validate(tracked.order), tracked.client_order_id)
            self.counters[f"submit_{outcome.kind}"] += 1
            if outcome.kind == "accepted" and outcome.order is not None:
                events += self.ledger.observe(outcome.order)
            elif outcome.kind == "rejected":
                events += self.ledger.reject(tracked.client_order_id, outcome.reason)
            elif outcome.kind == "throttled":
                break  # the bucket is paused; the rest waits for the next turn
            else:  # ambiguous or duplicate: it may exist; from now on only a lookup decides
                tracked.phase, tracked.lookups = "unsure", 0
                self._unsure_since[tracked.client_order_id] = time.monotonic()
                if outcome.kind == "duplicate":
                    await self._settle(gateway, tracked, events)
        return events

    async def _settle(self, gateway: BrokerGateway, tracked: Tracked, events: list[OrderEvent]) -> bool:
        """Look an order up before (re)sending it; True only if it is safe to send now."""
        since = self._unsure_since.setdefault(tracked.client_order_id, time.monotonic())
        if time.monotonic() - since < self.settings.alpaca_poll_interval_s * tracked.lookups:
            return False  # looked up moments ago: give the broker time
        try:
            found = await gateway.lookup(tracked.client_order_id)
        except Exception as error:  # noqa: BLE001 - still unsure; the next turn asks again
            log.warning("execution: lookup of %s failed (%s); asking again later", tracked.client_order_id, error)
            return False
        if found is not None:
            events += self.ledger.observe(found)
            self._unsure_since.pop(tracked.client_order_id, None)
            return False
        if tracked.phase == "new":
            return True  # recorded by a predecessor, never reached the broker
        tracked.lookups += 1
        # Not there (yet): a request in flight may still land. Only after several lookups is it sent
        # again, with the same client order id, so even then the broker cannot take it twice.
        return tracked.lookups >= RESEND_AFTER_LOOKUPS

    def _drain(self, updates: TradeUpdates) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        while not updates.queue.empty():
            seen, fill = updates.queue.get_nowait()
            events += self.ledger.observe(seen, fill)
        return events

    async def _wait(
        self, updates: TradeUpdates, streams: list[str], stop: asyncio.Event, token_s: float | None
    ) -> None:
        """Until a new order, a trade update, the next token for a waiting order, or the next poll."""
        timeout_s = min(self.config.block_ms / 1000, self.settings.alpaca_poll_interval_s, token_s or float("inf"))
        timeout_s = max(timeout_s, 0.001)
        seen = {stream: await self.bus.last_delivered_id(stream, self.config.role) for stream in streams}
        entries = asyncio.create_task(self.bus.wait_for_entries(seen, int(timeout_s * 1000), stop))
        news = asyncio.create_task(updates.arrived())
        await asyncio.wait({entries, news}, return_when=asyncio.FIRST_COMPLETED)
        for task in (entries, news):
            task.cancel()
        await asyncio.gather(entries, news, return_exceptions=True)

    async def _commit(self, events: list[OrderEvent], batch: list[Delivery] = ()) -> bool:  # type: ignore[assignment]
        checkpoint = json.dumps(self.ledger.snapshot(), separators=(",", ":"))
        commit = Commit(
            publish=[(ORDER_EVENTS, event) for event in events],
            acks=[(d.stream, d.entry_id) for d in batch],
            state={self.key: checkpoint},
            guard=None if batch else (self.key, self._committed or ""),
        )
        if not await self.bus.commit(self.config.role, commit, lease=self.lease):
            log.warning("execution: lost the lease (or the checkpoint moved); leaving the broker to the new owner")
            return False
        self._committed = checkpoint
        self.counters["published"] += len(events)
        return True
