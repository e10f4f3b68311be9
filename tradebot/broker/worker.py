"""The execution loop for a real broker: orders.new in, the broker's lifecycle out as orders.events.

It runs as the reader of the execution role's one partition (the lease keeps it to one process).
Every turn: take new orders and record them (``submitted``) in the same commit as their acks,
so intent is durable before anything is sent; send what waits (an order a dead predecessor may
have sent is looked up first); turn trade updates, REST polls (while the stream is down) and
reconciliations into events through the ledger; commit the events with the ledger. Every new
order passes the execution role's risk stage first (``PreTrade``: the paper path's checks on the
broker's account, tradebot/execution/broker_risk.py); its memory, and the account it books every
fill to, are in the same checkpoint. A flatten cancels every open order, then closes every position
through the same path (tradebot/broker/flatten.py). A kill -9 anywhere repeats no event and sends
no order twice: the broker refuses a client order id it has seen, and every doubt is settled by
looking that id up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tradebot.broker.admission import Admission
from tradebot.broker.alpaca import AlpacaGateway, client_order_id
from tradebot.broker.base import Booking, BrokerGateway
from tradebot.broker.changes import ChangeSender
from tradebot.broker.flatten import Flattens
from tradebot.broker.ledger import Ledger, Tracked
from tradebot.broker.live import alpaca_is_paper, announce
from tradebot.broker.reconcile import Reconciler
from tradebot.broker.stream import TradeUpdates
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.bus.publishing import Commit
from tradebot.common.bus.wire import Delivery
from tradebot.common.config import Settings
from tradebot.common.models import ControlEvent, Event, Order, OrderChange, OrderEvent, invalid
from tradebot.common.partitions import PartitionSettings, ReaderEnd
from tradebot.common.streams import (
    CONTROL_EVENTS,
    ORDER_EVENTS,
    checkpoint_key,
    lease_key,
    partition_consumer,
)

log = logging.getLogger(__name__)
RESEND_AFTER_LOOKUPS = 3  # an unsure order the broker still does not know after this many lookups is sent again
# Sending stops for the turn after this long, or when the rate limit would make it wait, so fills
# that came in meanwhile reach the bus promptly even while orders queue for tokens.
SEND_TURN_S = 0.1


class PreTrade(Protocol):
    """The risk stage as this loop uses it (tradebot/execution/broker_risk.py)."""

    async def begin_batch(
        self, gateway: BrokerGateway, in_flight: list[Tracked], held: dict[str, float]
    ) -> str | None: ...
    async def read_account(self, gateway: BrokerGateway, held: dict[str, float]) -> None: ...
    def book_fills(self, fills: list[Booking]) -> None: ...
    def flatten(self, event: ControlEvent) -> None: ...
    def closing_orders(self, event: ControlEvent) -> list[Order]: ...
    def screen(self, order: Order) -> Order | OrderEvent | None: ...
    def replace_refusal(self, target: Order, replacement: Order) -> str | None: ...
    def broker_mismatch(self, reason: str) -> None: ...
    def control_events(self) -> list[ControlEvent]: ...
    def snapshot(self) -> dict[str, Any]: ...
    def restore(self, snapshot: dict[str, Any] | None) -> None: ...


class BrokerExecution:
    """Reader of the execution partition that trades at a real broker (Alpaca)."""

    def __init__(
        self,
        bus: Bus,
        config: PartitionSettings,
        member: str,
        settings: Settings,
        counters: Counter[str],
        risk: PreTrade,
    ):
        """``risk`` decides every new order before it is recorded for sending."""
        self.bus, self.config, self.settings, self.counters = bus, config, settings, counters
        self.risk = risk
        self.key = checkpoint_key(config.role, 0)
        self.lease = (lease_key(config.role, 0), member)
        self.consumer = partition_consumer(0)
        self.ledger = Ledger(settings.order_memory_days)
        self.changes = ChangeSender(self.ledger, settings, counters)
        self.flattens = Flattens()
        self._committed: str | None = None
        self._fresh: set[str] = set()  # recorded by this process and never sent: safe to send at once
        self._unsure_since: dict[str, float] = {}
        self.admission = Admission(self.ledger)
        self._rules_tripped = False  # a control event waits for the next commit

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
        reconciler = await self._start(gateway)
        if reconciler is None:
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
            if not await self._close_flattened(gateway, reconciler):
                return ReaderEnd.LOST
            events = await self._send_waiting(gateway)
            events += await self.changes.send(gateway)
            events += self._drain(updates)
            connected = updates.connected.is_set()
            if (connected and not was_connected) or reconciler.due(streaming=connected):
                events += await self._reconcile(reconciler, gateway)
            was_connected = connected
            if (events or self._rules_tripped) and not await self._commit(events):
                return ReaderEnd.LOST
            end = self._end(burst=burst and not batch and not pending, max_messages=max_messages)
            if end is not None:
                return end
            if not batch and not events:
                await self._wait(updates, streams, stop, gateway.ready_in() if self.ledger.waiting() else None)
        return ReaderEnd.STOPPED

    def _end(self, *, burst: bool, max_messages: int | None) -> ReaderEnd | None:
        """Stopped after max_messages, or drained in burst mode, once nothing of ours is in flight; else None."""
        if self.ledger.orders or self.flattens.pending:
            return None
        if max_messages is not None and self.counters["handled"] >= max_messages:
            return ReaderEnd.STOPPED
        return ReaderEnd.DRAINED if burst else None

    async def _start(self, gateway: BrokerGateway) -> Reconciler | None:
        """Restore the checkpoint, read the broker's account, reconcile; None if the lease is lost."""
        self._committed = await self.bus.redis.get(self.key)
        saved = json.loads(self._committed) if self._committed else None
        self.ledger.restore(saved)
        self.risk.restore(saved)
        self.flattens.restore((saved or {}).get("flatten"))
        reconciler = Reconciler(
            self.ledger, gateway, self.settings, fresh=self._committed is None, on_mismatch=self._broker_mismatch
        )
        await self._read_account(gateway)  # before the reconciliation, so its timer starts after both
        events = await reconciler.run()
        return reconciler if await self._commit(events) else None

    async def _join_groups(self) -> list[str]:
        """Every order stream, its group created: what this account reads."""
        streams = self.config.streams_for(0)
        for stream in streams:
            await self.bus.ensure_group(stream, self.config.role)
        return streams

    def _broker_mismatch(self, reason: str) -> None:
        self.risk.broker_mismatch(reason)
        self._rules_tripped = True

    async def _set_aside_non_orders(self, batch: list[Delivery]) -> list[Delivery]:
        """Anything but an Order, OrderChange or flatten goes to the dead-letter stream with the reason."""
        kept = [delivery for delivery in batch if _on_the_order_path(delivery.event)]
        for delivery in batch:
            if not _on_the_order_path(delivery.event):
                kind = type(delivery.event).__name__
                reason = f"expected an Order, OrderChange or flatten on {delivery.stream}, got a {kind}"
                raw = {"event": delivery.event.model_dump_json()}
                await self.bus.dead_letter(self.config.role, delivery.stream, delivery.entry_id, raw, reason)
        return kept

    async def _reconcile(self, reconciler: Reconciler, gateway: BrokerGateway) -> list[OrderEvent]:
        """A look at the broker's orders (and, when due, its positions and account)."""
        full = reconciler.due_full()
        events = await reconciler.run(orders_only=not full)
        if full:
            await self._read_account(gateway)
        return events

    def _book(self) -> None:
        """Book the fills published so far into the account (before it is read again, and at each commit)."""
        self.risk.book_fills(self.ledger.take_bookings())

    async def _read_account(self, gateway: BrokerGateway) -> None:
        self._book()
        await self.risk.read_account(gateway, self.ledger.positions)

    async def _close_flattened(self, gateway: BrokerGateway, reconciler: Reconciler) -> bool:
        """Record the closes of every flatten whose cancels have settled (committed before any is sent);
        False when the lease is lost."""
        ready = self.flattens.ready(self.ledger)
        if not ready:
            return True
        self._book()
        if await self.risk.begin_batch(gateway, list(self.ledger.orders.values()), self.ledger.positions):
            return True  # the account is unreadable: the next turn tries again
        events: list[OrderEvent] = []
        for flatten in ready:
            for order in self.risk.closing_orders(flatten):
                events += await self._record(order, gateway, reconciler, None)
            self.flattens.finish(flatten)
        return await self._commit(events)

    async def _take(self, batch: list[Delivery], gateway: BrokerGateway, reconciler: Reconciler) -> list[OrderEvent]:
        """Screen new orders (a denied one gets its ``denied`` event) and record the rest (or refuse
        them, with the reason, while the broker must not be traded with)."""
        events: list[OrderEvent] = []
        unscreened: str | None = None
        screening = False

        async def begin_screening() -> str | None:  # once per batch, only when an order or a replace needs it
            nonlocal unscreened, screening
            if not screening:
                self._book()
                orders = list(self.ledger.orders.values())
                unscreened, screening = await self.risk.begin_batch(gateway, orders, self.ledger.positions), True
            return unscreened

        for delivery in batch:
            order = delivery.event
            self.counters["handled"] += 1
            if isinstance(order, OrderChange):
                events += self.changes.take(order, await self._change_refusal(order, reconciler, begin_screening))
            elif isinstance(order, ControlEvent):  # a flatten (set aside before otherwise)
                self.risk.flatten(order)
                for cancel in self.flattens.begin(order, self.ledger):
                    events += self.changes.take(cancel, None)
            else:
                assert isinstance(order, Order)  # set aside before otherwise
                if not self.ledger.knows(client_order_id(order)):  # else redelivered or republished: ours already
                    events += await self._record(order, gateway, reconciler, await begin_screening())
        return events

    async def _record(
        self, order: Order, gateway: BrokerGateway, reconciler: Reconciler, unscreened: str | None
    ) -> list[OrderEvent]:
        """Screen a new order and record it for sending, or refuse it with the reason; its events."""
        client_id = client_order_id(order)
        if self.ledger.knows(client_id):
            return []
        screened = order if unscreened else self.risk.screen(order)
        if not isinstance(screened, Order):
            return [] if screened is None else [screened]  # None: decided before (and denied)
        submitted = self.ledger.add(screened, client_id)
        assert submitted is not None  # not known: checked above
        refusal = unscreened or reconciler.halted or await self.admission.refusal(screened, gateway)
        if refusal:
            return [submitted, *self.ledger.reject(client_id, refusal)]
        self._fresh.add(client_id)
        return [submitted]

    async def _change_refusal(
        self, change: OrderChange, reconciler: Reconciler, begin_screening: Callable[[], Awaitable[str | None]]
    ) -> str | None:
        """A cancel always goes (even halted); a replace that grows exposure is refused like a new order."""
        target = self.ledger.orders.get(change.target)
        if change.action == "cancel" or target is None or target.order is None:
            return None  # (the ledger itself refuses a change of an order that is not open)
        original = Order.model_validate(target.order)
        try:
            replacement = change.replacement(original)
        except ValueError as error:
            return f"the replacement would not be a valid order: {invalid(error)}"
        if not OrderChange.grows_exposure(original, replacement):
            return None
        return reconciler.halted or await begin_screening() or self.risk.replace_refusal(original, replacement)

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
        self._book()
        saved = {**self.ledger.snapshot(), **self.risk.snapshot(), "flatten": self.flattens.snapshot()}
        checkpoint = json.dumps(saved, separators=(",", ":"))
        publish: list[tuple[str, Event]] = [(ORDER_EVENTS, event) for event in events]
        publish += [(CONTROL_EVENTS, event) for event in self.risk.control_events()]
        self._rules_tripped = False
        commit = Commit(
            publish=publish,
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


def _on_the_order_path(event: Event) -> bool:
    """What the broker loop takes from orders.new: orders, cancels and replaces, and a flatten."""
    return isinstance(event, Order | OrderChange) or (isinstance(event, ControlEvent) and event.action == "flatten")
