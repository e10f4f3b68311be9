"""The execution worker: fills ``orders.new:{p}`` on the paper broker and publishes ``orders.events``.

The account is one partition owned by one worker at a time (by lease); it reads the orders of
every strategy partition (one stream each, in that partition's slot), each in stream order. The
account is the partition's checkpoint, written in the same atomic commit as the events and the
group's new position (on one Redis: it reads with XREAD from there, see prices.py) or the acks
(on a Redis Cluster, whose other slots' acks follow it, see Bus.commit): a worker killed
mid-batch neither loses an order nor fills one twice, and the broker itself ignores a client
order id it has already executed. The checkpoint is kept in parts (tradebot/broker/checkpoint.py):
a commit writes the symbols and order ids it changed.

Every order passes the risk stage (tradebot/execution/risk_stage.py) before the broker: risk lives inside
this role rather than in a role of its own because it needs the account exactly as the broker
holds it, order by order, and its memory belongs in the same checkpoint and the same atomic commit
as the account (a separate role would need a second copy of the account, kept in step by events).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from tradebot.broker import checkpoint as account_parts
from tradebot.broker.flatten import cancel_id
from tradebot.broker.paper import PaperBroker
from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.lifecycle import wait_or_stop
from tradebot.common.models import ControlEvent, Event, Order, OrderChange, OrderEvent, Tick
from tradebot.common.partitions import PartitionedWorker, PartitionRunner, PartitionSettings
from tradebot.common.streams import CONTROL_EVENTS, EXECUTION_ROLE, ORDER_EVENTS, ORDERS_NEW_PREFIX, order_streams
from tradebot.execution.attribution import StrategyPnL
from tradebot.execution.equity import sample_equity
from tradebot.execution.prices import PricedReader
from tradebot.execution.risk_stage import Records, RiskStage, new_engine, new_gap_rule
from tradebot.market_data.gaps import read_gap_records
from tradebot.risk.store import OperatorRecord, obeying_trading_state

log = logging.getLogger(__name__)
GAP_POLL_S = 2.0  # how soon a recorded data gap reaches the risk stage (a scan of the gap: keys)


class BrokerPartition:
    """The paper account behind PartitionState: orders in, risk-checked, order events out."""

    def __init__(
        self,
        settings: Settings,
        operator: Callable[[], OperatorRecord] = OperatorRecord,
        gaps: Callable[[], Records] = dict,
    ):
        self.settings = settings
        self.operator = operator
        self.gaps = gaps
        # the parts as last handed out for a commit, but the ids' (each written once: see checkpoint.split_changed)
        self._written: dict[str, str] = {}
        self._ordinals: account_parts.Ordinals = {}  # the decisions' and order ids' places (checkpoint.split)
        self._encoded = account_parts.Encoded()  # what the last split encoded (ditto)
        # The symbols whose state the events since the last commit may have changed (None: any)
        self._touched: set[str] | None = None
        self.restore(None)

    def restore(self, checkpoint: str | None) -> None:
        """Start from a whole-string checkpoint (an older layout, or the state before one order), or
        a fresh account with STARTING_CASH."""
        self._restore_snapshot(json.loads(checkpoint) if checkpoint else None)

    def _restore_snapshot(self, saved: dict[str, Any] | None) -> None:
        self._touched = None  # the next commit splits the whole account
        self.broker = new_broker(self.settings)
        # How far the ticks of each partition were read (tradebot/execution/prices.py)
        self.price_positions: dict[str, str] = dict((saved or {}).get("price_positions", {}))
        self.risk = RiskStage(new_engine(self.settings), self.operator, self.gaps, new_gap_rule(self.settings))
        self.pnl = StrategyPnL()
        if saved:
            self.broker.restore(saved)
            if "risk" in saved:
                self.risk.restore(saved["risk"])
            self.pnl.restore(saved.get("pnl"))

    def restore_parts(self, saved: dict[str, str]) -> None:
        """Start from parts as committed."""
        parts = {name: value for name, value in saved.items() if not name.startswith("_v")}
        snapshot, self._ordinals = account_parts.join(parts)
        self._restore_snapshot(snapshot)
        # As the split writes them (a part is rewritten only when the state in it changes), plus
        # any stored part the split would not write, so the next commit deletes it. Parts of the
        # layout before the compact one are all rewritten by the next commit, but the ids' (the
        # same in either layout: the ordinals hold them).
        written, _ = account_parts.split_changed(self._snapshot(), self._ordinals)
        kept = {name: value for name, value in parts.items() if not account_parts.is_id_part(name)}
        self._written = {**kept, **written} if account_parts.HOT in parts else kept

    def parts(self) -> dict[str, str]:
        """Every part of the state."""
        self._touched = None  # (written without the split's memory: the next commit splits the whole account)
        self._written, ids = account_parts.split_changed(self._snapshot(), self._ordinals, every_id=True)
        return self._written | {name: value for name, value in ids.items() if value is not None}

    def changed_parts(self) -> dict[str, str | None]:
        """The parts that changed since the last call, and (None) those that are gone: only the
        touched symbols' are looked at when the events applied since tell which they are."""
        touched, self._touched = self._touched, set()
        split = None
        if touched is not None and self._written:
            snapshot = self._snapshot(pnl=self.pnl.snapshot_of(touched))
            split = account_parts.split_touched(snapshot, self._ordinals, self._encoded, touched)
        if split is not None:
            fresh, ids = split
            moved = {
                name: value
                for name, value in fresh.items()
                if self._written.get(name) != value and (value is not None or name in self._written)
            }
            for name, value in moved.items():
                if value is None:
                    del self._written[name]
                else:
                    self._written[name] = value
            return moved | ids
        every, ids = account_parts.split_changed(self._snapshot(), self._ordinals, encoded=self._encoded)
        changed: dict[str, str | None] = {
            name: value for name, value in every.items() if self._written.get(name) != value
        }
        changed |= {name: None for name in self._written.keys() - every.keys()}
        self._written = every
        return changed | ids

    def _snapshot(self, pnl: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole state (``pnl``: the P&L's as given instead, see changed_parts)."""
        prices = {"price_positions": dict(self.price_positions)} if self.price_positions else {}
        pnl = self.pnl.snapshot() if pnl is None else pnl
        return {**self.broker.snapshot(), "risk": self.risk.snapshot(), "pnl": pnl, **prices}

    def read_prices(self, positions: dict[str, str]) -> None:
        """The ticks applied (or skipped) up to these stream ids: committed with what they caused."""
        self.price_positions.update(positions)

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Decide and execute orders in order; a flatten closes every position; a repeat yields nothing."""
        self.risk.begin_batch()
        self.risk.watch_gaps(self.broker)
        outputs: list[tuple[str, Event]] = []
        self._touch(events)
        for event in events:
            if isinstance(event, Tick):  # a price after the resting orders (tradebot/execution/prices.py)
                outputs += [
                    (ORDER_EVENTS, e) for e in self._fill_resting(event.symbol, event.price, event.timestamp, tick=True)
                ]
                continue
            if isinstance(event, OrderChange):
                outputs += [
                    (ORDER_EVENTS, e) for e in self.broker.change(event, self.risk.replace_refusal(self.broker))
                ]
                continue
            if isinstance(event, ControlEvent):  # a flatten: cancel the resting orders, then close every position
                outputs += [(ORDER_EVENTS, e) for e in self._cancel_resting(event)]
            orders = self.risk.flatten(event, self.broker) if isinstance(event, ControlEvent) else [event]
            for order in orders:
                if not isinstance(order, Order):
                    raise TypeError(f"expected an Order on {ORDERS_NEW_PREFIX}, got a {type(order).__name__}")
                outputs += self._execute(order)
        outputs += [(CONTROL_EVENTS, event) for event in self.risk.rule_events()]
        self._touch((event for _, event in outputs), out=True)
        return outputs

    def _touch(self, events: Iterable[Event], *, out: bool = False) -> None:
        """Note the symbols of these events (applied, or ``out``: what they gave): what a symbol's
        part holds changes only with an order, a change or a tick of that symbol, and with the
        events they give, each of its symbol. Anything else read (a flatten) may touch every
        symbol: the next commit then splits the whole account (a rule's control event out touches
        none: its state is the account's)."""
        touched = self._touched
        if touched is None:
            return
        for event in events:
            if isinstance(event, (OrderEvent, ControlEvent) if out else (Order, OrderChange, Tick)):
                if not isinstance(event, ControlEvent):
                    touched.add(event.symbol)
            else:
                self._touched = None
                return

    def _cancel_resting(self, flatten: ControlEvent) -> list[OrderEvent]:
        """A cancel of every resting order, ids derived from the flatten's (a repeat cancels nothing twice)."""
        events = []
        for client_id, resting in list(self.broker.resting.items()):
            cancel = OrderChange(
                id=cancel_id(flatten, client_id),
                symbol=resting.symbol,
                timestamp=flatten.timestamp,
                action="cancel",
                target=client_id,
                reason=f"flatten {flatten.id}: {flatten.reason}",
            )
            events += self.broker.change(cancel, self.risk.replace_refusal(self.broker))
        return events

    def _execute(self, order: Order) -> list[tuple[str, Event]]:
        # A new order's price is the latest the account sees: resting orders it reaches fill first.
        outputs: list[tuple[str, Event]] = []
        if self.broker.resting and order.id not in self.risk.decided:
            outputs = [
                (ORDER_EVENTS, e) for e in self._fill_resting(order.symbol, order.reference_price, order.timestamp)
            ]
        screened = self.risk.screen(order, self.broker)
        if not isinstance(screened, Order):
            return outputs if screened is None else [*outputs, (ORDER_EVENTS, screened)]
        before = self.risk.before_broker(screened, self.broker)
        placed = self.broker.place(screened)
        if not placed:
            return outputs
        result = placed[0]
        self.risk.after_broker(screened, result, before, self.broker)
        self._book(screened.strategy, screened.symbol, result)
        outputs += [(ORDER_EVENTS, event) for event in placed]  # and the legs a bracket / OTO fill leaves
        if screened.order_class == "oco" and result.status == "accepted":  # its price may reach a leg already
            outputs += [
                (ORDER_EVENTS, e)
                for e in self._fill_resting(screened.symbol, screened.reference_price, screened.timestamp)
            ]
        return outputs

    def on_price(self, symbol: str, price: float, at: datetime) -> list[OrderEvent]:
        """A tick's price for the resting orders (the backtester's tick loop calls it as apply does)."""
        if self._touched is not None:
            self._touched.add(symbol)
        return self._fill_resting(symbol, price, at, tick=True)

    def _fill_resting(self, symbol: str, price: float, at: datetime, *, tick: bool = False) -> list[OrderEvent]:
        """The resting orders ``price`` reaches: a tick's (for the orders stamped no later than it)
        or a later order's reference price."""
        owners = {}  # whose order each fill may be: a resting order's id, or its oco stop-loss leg's
        for client_id, resting in self.broker.resting.items():
            owners[client_id] = owners[resting.stop_loss_leg_id] = resting.strategy
        filled = self.broker.on_price(symbol, price, at) if tick else self.broker.fill_resting(symbol, price, at)
        for event in filled:
            self._book(owners.get(event.client_order_id), event.symbol, event)
        if filled:
            self.risk.account_moved()
        return filled

    def _book(self, strategy: str | None, symbol: str, result: OrderEvent) -> None:
        """Attribute a fill to the strategy whose order it is."""
        if result.status in ("filled", "partially_filled") and result.price is not None:
            self.pnl.fill(strategy, symbol, result.side, result.quantity, result.price, result.commission)

    def checkpoint(self) -> str:
        """The account, the risk stage's memory and the P&L per strategy as compact JSON (what a test compares)."""
        return account_parts.compact(self._snapshot())


def new_broker(settings: Settings) -> PaperBroker:
    """A fresh account with the configured cash, slippage and commission."""
    return PaperBroker(
        settings.starting_cash,
        settings.slippage_bps,
        settings.commission_per_share,
        settings.order_memory_days,
        frozenset(settings.paper_not_fractionable),
    )


def execution_worker(
    bus: Bus,
    settings: Settings,
    member: str,
    counters: Counter[str],
    operator: Callable[[], OperatorRecord] = OperatorRecord,
    gaps: Callable[[], Records] = dict,
) -> PartitionedWorker:
    """A worker named ``member`` that takes the account's lease when it is free.

    EXECUTION_BROKER picks who executes: the paper broker (pure state, checkpointed) or a real
    broker's loop (tradebot/broker/worker.py) reading the same partition under the same lease.
    """
    config = PartitionSettings(
        role=EXECUTION_ROLE,
        partitions=1,
        streams_for=lambda _partition: order_streams(settings.tick_partitions),
        batch_size=settings.bus_batch_size,
        block_ms=settings.bus_block_ms,
        lease_ttl_ms=settings.lease_ttl_ms,
    )
    # The paper account reads the ticks its resting orders need beside the orders (prices.py).
    new_reader: Callable[[int], PartitionRunner] | None = lambda partition: PricedReader(  # noqa: E731
        bus, config, member, partition, BrokerPartition(settings, operator, gaps), counters, settings.tick_partitions
    )
    if settings.execution_broker == "alpaca":
        from tradebot.broker.live import alpaca_is_paper
        from tradebot.broker.worker import BrokerExecution  # alpaca-py is loaded only when it is used
        from tradebot.execution.broker_risk import BrokerRisk

        alpaca_is_paper(settings)  # missing keys or a half-given live opt-in stop start-up here (exit 78)
        # The same risk stage as the paper path, on the broker's account.
        new_reader = lambda _partition: BrokerExecution(  # noqa: E731
            bus, config, member, settings, counters, BrokerRisk(settings, operator, gaps)
        )
    return PartitionedWorker(
        bus,
        config,
        member=member,
        counters=counters,
        new_state=lambda _partition: BrokerPartition(settings, operator, gaps),
        new_reader=new_reader,
    )


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Worker entry: execute orders while this process holds the account's lease."""
    bus = Bus.from_settings(settings)
    member = runtime.consumer_name()
    gaps: dict[str, dict[str, Any]] = {}
    try:
        gaps.update(await read_gap_records(bus.redis))  # before the first order, also after a kill -9
        async with obeying_trading_state(
            bus.redis,
            member,
            EXECUTION_ROLE,
            settings.lease_ttl_ms,
            stop,
            sample_equity(bus, settings, stop),
            follow_gaps(bus, gaps, stop),
        ) as watcher:
            worker = execution_worker(bus, settings, member, counters, lambda: watcher.current, lambda: gaps)
            runtime.settle_gc()  # started: what start-up made is left out of every collection
            await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        await bus.close()


async def follow_gaps(bus: Bus, records: dict[str, dict[str, Any]], stop: asyncio.Event) -> None:
    """Keep ``records`` equal to the gap records in Redis (the data-gap rule reads them), every GAP_POLL_S."""
    while True:
        try:
            fresh = await read_gap_records(bus.redis)
            records.clear()
            records.update(fresh)
        except RECOVERABLE_REDIS_ERRORS as error:
            log.debug("gap records not read: %s", error)
        if await wait_or_stop(stop, GAP_POLL_S):
            return


def main() -> None:
    """``python -m tradebot.execution.service``."""
    runtime.main(EXECUTION_ROLE, run)


if __name__ == "__main__":
    main()
