"""The execution worker: fills ``orders.new:{p}`` on the paper broker and publishes ``orders.events``.

The account is one partition owned by one worker at a time (by lease); it reads the orders of
every strategy partition (one stream each, in that partition's slot), each in stream order. The
account is the partition's checkpoint, written in the same atomic commit as the events and the
acks (on a Redis Cluster the acks of other slots follow it, see Bus.commit): a worker killed
mid-batch neither loses an order nor fills one twice, and the broker itself ignores a client
order id it has already executed.

Every order passes the risk stage (tradebot/execution/risk_stage.py) before the broker: risk lives inside
this role rather than in a role of its own because it needs the account exactly as the broker
holds it, order by order, and its memory belongs in the same checkpoint and the same atomic commit
as the account (a separate role would need a second copy of the account, kept in step by events).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

from tradebot.broker.paper import PaperBroker
from tradebot.common import runtime
from tradebot.common.bus import Bus
from tradebot.common.config import ReadySettings, Settings
from tradebot.common.models import ControlEvent, Event, Order, OrderEvent
from tradebot.common.partitions import PartitionedWorker, PartitionSettings
from tradebot.common.streams import CONTROL_EVENTS, EXECUTION_ROLE, ORDER_EVENTS, ORDERS_NEW_PREFIX, order_streams
from tradebot.execution.equity import sample_equity
from tradebot.execution.risk_stage import RiskStage, new_engine
from tradebot.risk.store import OperatorRecord, TradingStateWatcher, poll_interval, state_refusal


class BrokerPartition:
    """The paper account behind PartitionState: orders in, risk-checked, order events out."""

    def __init__(self, settings: Settings, operator: Callable[[], OperatorRecord] = OperatorRecord):
        self.settings = settings
        self.operator = operator
        self.restore(None)

    def restore(self, checkpoint: str | None) -> None:
        """Start from the checkpointed account and risk memory, or a fresh one with STARTING_CASH."""
        self.broker = new_broker(self.settings)
        self.risk = RiskStage(new_engine(self.settings), self.operator)
        if checkpoint:
            saved = json.loads(checkpoint)
            self.broker.restore(saved)
            if "risk" in saved:
                self.risk.restore(saved["risk"])

    def apply(self, events: list[Event]) -> list[tuple[str, Event]]:
        """Decide and execute orders in order; a flatten closes every position; a repeat yields nothing."""
        self.risk.begin_batch()
        outputs: list[tuple[str, Event]] = []
        for event in events:
            orders = self.risk.flatten(event, self.broker) if isinstance(event, ControlEvent) else [event]
            for order in orders:
                if not isinstance(order, Order):
                    raise TypeError(f"expected an Order on {ORDERS_NEW_PREFIX}, got a {type(order).__name__}")
                outputs += self._execute(order)
        outputs += [(CONTROL_EVENTS, event) for event in self.risk.rule_events()]
        return outputs

    def _execute(self, order: Order) -> list[tuple[str, Event]]:
        screened = self.risk.screen(order, self.broker)
        if not isinstance(screened, Order):
            return [] if screened is None else [(ORDER_EVENTS, screened)]
        before = self.risk.before_broker(screened, self.broker)
        result: OrderEvent | None = self.broker.execute(screened)
        if result is None:
            return []
        self.risk.after_broker(screened, result, before, self.broker)
        return [(ORDER_EVENTS, result)]

    def checkpoint(self) -> str:
        """The account and the risk stage's memory as compact JSON."""
        return json.dumps({**self.broker.snapshot(), "risk": self.risk.snapshot()}, separators=(",", ":"))


def new_broker(settings: Settings) -> PaperBroker:
    """A fresh account with the configured cash, slippage and commission."""
    return PaperBroker(
        settings.starting_cash, settings.slippage_bps, settings.commission_per_share, settings.order_memory_days
    )


def execution_worker(
    bus: Bus,
    settings: Settings,
    member: str,
    counters: Counter[str],
    operator: Callable[[], OperatorRecord] = OperatorRecord,
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
    new_reader = None
    if settings.execution_broker == "alpaca":
        from tradebot.broker.live import alpaca_is_paper
        from tradebot.broker.worker import BrokerExecution  # alpaca-py is loaded only when it is used

        alpaca_is_paper(settings)  # missing keys or a half-given live opt-in stop start-up here (exit 78)

        def gate(order: Order, held: float) -> str | None:  # the kill switch holds for a real broker too
            return state_refusal(operator(), order, held)

        new_reader = lambda _partition: BrokerExecution(bus, config, member, settings, counters, gate)  # noqa: E731
    return PartitionedWorker(
        bus,
        config,
        member=member,
        counters=counters,
        new_state=lambda _partition: BrokerPartition(settings, operator),
        new_reader=new_reader,
    )


async def run(settings: ReadySettings, *, stop: asyncio.Event, counters: Counter[str]) -> None:
    """Worker entry: execute orders while this process holds the account's lease."""
    bus = Bus.from_settings(settings)
    member = runtime.consumer_name()
    watcher = TradingStateWatcher(bus.redis, member, EXECUTION_ROLE, poll_interval(settings.lease_ttl_ms))
    await watcher.refresh()  # before the first order, also after a kill -9
    background = [asyncio.create_task(watcher.run(stop)), asyncio.create_task(sample_equity(bus, settings, stop))]
    try:
        worker = execution_worker(bus, settings, member, counters, lambda: watcher.current)
        await worker.run(stop=stop, max_messages=settings.max_messages, burst=settings.burst)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await watcher.forget()
        await bus.close()


def main() -> None:
    """``python -m tradebot.execution.service``."""
    runtime.main(EXECUTION_ROLE, run)


if __name__ == "__main__":
    main()
