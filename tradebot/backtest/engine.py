"""The backtest loop: stored ticks or bars through the live classes, in one process.

Every observation goes to the same :class:`StrategyBook` the strategy worker runs; every order
it makes goes to the execution worker's own :class:`BrokerPartition` (its risk stage, then the
same :class:`PaperBroker`), or, without one, straight to a paper broker. Time comes only from the data (the clock is the
observation's timestamp), so a run is a pure function of its inputs.
"""

from __future__ import annotations

import gc
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tradebot.broker.paper import PaperBroker
from tradebot.common.models import Bar, Order, OrderChange, OrderEvent, Signal, Tick
from tradebot.execution.service import BrokerPartition
from tradebot.strategy.bars import timeframe_seconds
from tradebot.strategy.batch import Batch, TickColumns
from tradebot.strategy.book import StrategyBook

# An extra check before execution (tests, what-if runs): given an order and the account it would
# trade, a reason to deny it, or None. The risk engine itself runs inside BrokerPartition.
PreTradeCheck = Callable[[Order, PaperBroker], str | None]
NO_OWNERS: dict[str, Order] = {}  # _record's owners when nothing rests (only read, never changed)
SAMPLE_PERIODS_PER_YEAR = {"1m": 252 * 390, "5m": 252 * 78, "15m": 252 * 26, "1h": 252 * 6.5, "1d": 252}


@dataclass(slots=True)
class Trade:
    """One closed round trip of a strategy in a symbol (entry may be several buys)."""

    strategy: str
    symbol: str
    entry_time: datetime
    exit_time: datetime
    quantity: float
    entry_price: float  # average, commissions excluded
    exit_price: float
    fees: float
    pnl: float  # after fees

    @property
    def return_pct(self) -> float:
        return self.pnl / (self.entry_price * self.quantity)


@dataclass(slots=True)
class Lot:
    """The open position of one strategy in one symbol."""

    quantity: float = 0.0
    cost: float = 0.0  # price paid, commissions excluded
    fees: float = 0.0
    opened: datetime | None = None


@dataclass
class Ledger:
    """Round trips per strategy and symbol, built from fills."""

    lots: dict[tuple[str, str], Lot] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)

    def record(self, order: Order, event: OrderEvent) -> None:
        """A fill of ``order`` (or of a leg it left: the fill's own side counts, a bracket's legs sell)."""
        fill = event.__dict__  # its values: dict reads cost a fraction of pydantic attribute reads
        price = fill["price"]
        if fill["status"] != "filled" or price is None:
            return
        placed = order.__dict__
        key = (placed["strategy"] or "-", placed["symbol"])
        lot = self.lots.get(key) or self.lots.setdefault(key, Lot())
        quantity = fill["quantity"]
        if fill["side"] == "buy":
            lot.opened = lot.opened or fill["timestamp"]
            lot.quantity += quantity
            lot.cost += quantity * price
            lot.fees += fill["commission"]
            return
        held, opened = lot.quantity, lot.opened
        if held <= 0:
            return  # a sell of shares another strategy bought: not this strategy's round trip
        share = quantity / held
        share = share if share < 1.0 else 1.0  # min(1.0, share), the same float, without the call
        cost, fees = lot.cost * share, lot.fees * share + fill["commission"]
        proceeds = quantity * price
        assert opened is not None
        self.trades.append(
            Trade(key[0], key[1], opened, fill["timestamp"], quantity, cost / quantity, price, fees,
                  proceeds - cost - fees)
        )  # fmt: skip
        if held - quantity <= 1e-9:  # closed: a fresh lot's values (set in place, sooner than a new Lot)
            lot.quantity, lot.cost, lot.fees, lot.opened = 0.0, 0.0, 0.0, None
        else:
            lot.quantity, lot.cost, lot.fees = held - quantity, lot.cost - cost, lot.fees * (1 - share)


@dataclass
class BacktestResult:
    """Everything a run produced; the report is computed from it."""

    starting_cash: float
    sample: str
    equity: list[tuple[datetime, float]] = field(default_factory=list)
    exposed_samples: int = 0
    signals: list[Signal] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    events: list[OrderEvent] = field(default_factory=list)
    denials: list[tuple[Order, str]] = field(default_factory=list)
    ledger: Ledger = field(default_factory=Ledger)
    first_price: dict[str, float] = field(default_factory=dict)
    last_price: dict[str, float] = field(default_factory=dict)
    traded_notional: float = 0.0
    commissions: float = 0.0
    observations: int = 0
    account: dict[str, Any] = field(default_factory=dict[str, Any])


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a run (restored after, as it was).

    A run makes many small objects (signals, orders, fills) and no reference cycles, so reference
    counting frees all it drops; the collector would only walk the observations held, again and
    again: one full pass over 200,000 ticks costs ~0.4 s, a third of a run that takes it.

    What the run made and keeps (its result) is handed to the oldest generation on the way out
    (``gc.freeze`` then ``gc.unfreeze``: two list splices), where the collector would have moved it
    anyway; else the first allocation after ``gc.enable`` walks all of it at once in a young-generation
    pass (~7 % of a 5/20 crossover run). Skipped when the process froze objects of its own.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class Backtest:
    """One run: a book, a broker and an optional pre-trade check, fed observations in time order."""

    def __init__(
        self,
        book: StrategyBook,
        broker: PaperBroker | BrokerPartition,
        *,
        sample: str = "1m",
        check: PreTradeCheck | None = None,
    ):
        if sample not in SAMPLE_PERIODS_PER_YEAR:
            raise ValueError(f"sample must be one of {', '.join(SAMPLE_PERIODS_PER_YEAR)}")
        self.execution = broker if isinstance(broker, BrokerPartition) else None
        self.broker = broker.broker if isinstance(broker, BrokerPartition) else broker
        self.book, self.check = book, check
        self.sample_s = timeframe_seconds(sample)
        self.result = BacktestResult(self.broker.starting_cash, sample)
        self._columns: tuple[list[datetime], list[str], list[float]] = ([], [], [])
        self._priced = 0  # the observations of the batch judged for resting orders
        self._ordered = True
        self._roll_positions = np.array([], dtype=np.int64)  # the batch's rolls (see _rolls) and, of each
        self._lasts: dict[str, list[int]] = {}  # held symbol, its last row before each (-1: none; _mark)
        self._bucket: int | None = None
        self._next: datetime | None = None  # where the current sample ends

    def feed(self, observations: Iterable[Tick | Bar]) -> BacktestResult:
        """Run every observation through; returns the (cumulative) result.

        The book decides the whole batch first (``StrategyBook.play``: what it would say tick by
        tick), then its orders and the equity samples are played in observation order, so the
        observations that emit nothing are never touched one by one here; each signal and order is
        made as it is reached, just before the broker takes it.
        """
        batch = observations if isinstance(observations, list | TickColumns) else list(observations)
        if not batch:
            return self.result
        with collector_paused():
            return self._feed(Batch(batch))

    def _feed(self, columns: Batch) -> BacktestResult:
        outputs = self.book.play(columns)
        times, prices, result = columns.times, columns.prices, self.result
        self._columns, self._priced = (times, columns.symbols, prices), 0
        # in time order: the sorted copy is the same list (sorting an ordered list is one pass of
        # comparisons, typed once; sooner than a map of operator.le)
        self._ordered = times == sorted(times)
        rolls = self._rolls(times)
        self._roll_positions, self._lasts = np.array([roll[0] for roll in rolls], dtype=np.int64), {}
        rolled, next_roll = 0, rolls[0][0] if rolls else len(times)
        broker, signals, orders = self.broker, result.signals, result.orders
        place, record = broker.place, self._record
        direct = self.execution is None and self.check is None  # the paper broker itself, no extra check
        for position, signal, order in outputs:
            while position >= next_roll:  # a sample this observation (or one before it) starts closes first
                self._close_at(columns, rolled, *rolls[rolled])
                rolled += 1
                next_roll = rolls[rolled][0] if rolled < len(rolls) else len(times)
            if direct and order is not None and not broker.resting:
                fields = order.__dict__  # its values (dict reads: a fraction of pydantic attribute reads)
                if fields["order_class"] != "oco":  # the usual case, _trade_at's steps: nothing rests to judge first
                    signals.append(signal)
                    orders.append(order)
                    record(place(order), order, NO_OWNERS)
                    if broker.resting:  # it rests (or legs it left do): judged on the observations after its time
                        self._priced = max(self._priced, self._stamped_until(fields["timestamp"], position))
                    # (else nothing rests, and where the judging starts matters only once something does)
                    continue
            self._trade_at(position, signal, order)
        for index in range(rolled, len(rolls)):
            self._close_at(columns, index, *rolls[index])
        if rolls:
            self._next = datetime.fromtimestamp(rolls[-1][1] + self.sample_s, UTC)
        # as live, a batch's cancels and replaces follow its orders (the strategy worker publishes them last)
        for change in self.book.take_changes():
            self._prices_until(self._stamped_until(change.timestamp, 0))
            result.events += self._change(change)
        self._prices_until(len(columns))
        for symbol, rows in columns.rows.items():  # the marks: each symbol's last price (its first, the first seen)
            result.last_price[symbol] = prices[rows[-1]]
            result.first_price.setdefault(symbol, prices[rows[0]])
        result.observations += len(columns)
        return result

    def _close_at(self, columns: Batch, rolled: int, roll: int, bucket: int, closes: datetime) -> None:
        """Observation ``roll`` (the batch's ``rolled``-th roll) starts a new sample: the one it closes
        is marked with what came before it."""
        self._prices_until(roll)  # the resting orders first: the sample reads what they filled
        self._mark(columns, rolled)
        self._roll(columns.times[roll], bucket, closes)

    def _mark(self, columns: Batch, rolled: int) -> None:
        """Mark what is held at its last price before the batch's ``rolled``-th roll (all a sample reads
        of the marks). Each held symbol's last rows before every roll are found at once, the first time
        it is held at one (one numpy search, not a bisection of its rows as a list at each roll)."""
        marks, prices, lasts = self.result.last_price, columns.prices, self._lasts
        for symbol, held in self.broker.positions.items():
            if held.quantity:
                last = lasts.get(symbol)
                if last is None:
                    last = lasts[symbol] = columns.lasts_before(symbol, self._roll_positions)
                if last[rolled] >= 0:  # seen in this batch before the roll: else the mark stays what it was
                    marks[symbol] = prices[last[rolled]]

    def _rolls(self, times: list[datetime]) -> list[tuple[int, int, datetime]]:
        """(position, bucket, when the sample it closes ends) of each observation that starts a new
        sample: the first at or after the end of the current one (bisected when in time order)."""
        ordered = self._ordered
        found: list[tuple[int, int, datetime]] = []
        position, bucket, end, seconds = 0, self._bucket, self._next, self.sample_s
        while position < len(times):
            if end is not None:
                if ordered:
                    position = bisect_left(times, end, position)
                else:
                    position = next((p for p in range(position, len(times)) if times[p] >= end), len(times))
                if position == len(times):
                    break
            previous, bucket = bucket, int(times[position].timestamp()) // seconds * seconds
            # the closing sample is stamped with the new bucket's start: the last end when contiguous
            closes = end if end is not None and previous is not None and bucket == previous + seconds else None
            found.append((position, bucket, closes or datetime.fromtimestamp(bucket, UTC)))
            end = datetime.fromtimestamp(bucket + seconds, UTC)
            position += 1
        return found

    def finish(self) -> BacktestResult:
        """Close the last sample and take the account's final state."""
        if self._bucket is not None and self._next is not None:
            self._sample(self._next)
            self._bucket = self._next = None
        self.result.account = self.broker.account()
        return self.result

    def _roll(self, at: datetime, bucket: int, closes: datetime) -> None:
        """``at`` starts a new sample (``bucket``): record the equity at the end of the one it closes."""
        if self._bucket is None:
            self.result.equity.append((at, self.result.starting_cash))
        else:
            self._sample(closes)
        self._bucket = bucket

    def _sample(self, closes: datetime) -> None:
        """The equity at the end of a sample (``closes``), marked at the last prices."""
        marks = self.result.last_price
        held = [(s, p) for s, p in self.broker.positions.items() if p.quantity]  # a flat position adds 0.0
        value = sum(p.quantity * marks.get(s, p.average_cost) for s, p in held)
        self.result.equity.append((closes, self.broker.cash + value))
        self.result.exposed_samples += any(p.quantity > 0 for _, p in held)

    def _stamped_until(self, at: datetime, position: int) -> int:
        """The end of the observations stamped no later than ``at`` (from ``position`` on, in time order)."""
        times, after = self._columns[0], position + 1
        if not self._ordered:
            return after
        if times[position] <= at and (after == len(times) or times[after] > at):
            return after  # the usual case (an order of a tick's own time): two comparisons, not a bisection
        return bisect_right(times, at, lo=position)

    def _trade_at(self, position: int, signal: Signal, order: Order | None) -> None:
        result = self.result
        result.signals.append(signal)
        if order is None:  # the book sent no order for it (long only by its own orders)
            return
        # as the execution worker merges ticks and orders: every price stamped no later than the
        # order comes before it (tradebot/execution/prices.py); a signal with no order waits for none
        self._prices_until(self._stamped_until(order.timestamp, position))
        result.orders.append(order)
        reason = self.check(order, self.broker) if self.check else None
        if reason is not None:
            result.denials.append((order, reason))
            return
        self._record(self._execute(order), order, self._owners() if self.broker.resting else {})

    def _prices_until(self, end: int) -> None:
        """Judge the resting orders on the observations up to ``end`` not judged yet (only those of
        symbols with a resting order: the rest are never touched one by one)."""
        start, self._priced = self._priced, max(self._priced, end)
        if not self.broker.resting:  # the usual case: nothing to judge
            return
        times, symbols, prices = self._columns
        waiting = {order.symbol for order in self.broker.resting.values()}
        for position in range(start, end):
            if not waiting:
                return
            if symbols[position] in waiting:
                before = dict(self.broker.resting)
                at = times[position]
                events = self.execution.on_price(symbols[position], prices[position], at) if self.execution else (
                    self.broker.on_price(symbols[position], prices[position], at))  # fmt: skip
                if events:
                    self._record(events, None, self._owners(before))
                    waiting = {order.symbol for order in self.broker.resting.values()}

    def _owners(self, resting: dict[str, Order] | None = None) -> dict[str, Order]:
        """The resting order each client order id that may fill belongs to (an OCO's stop-loss leg: the pair)."""
        owners = {}
        for client_id, order in (self.broker.resting if resting is None else resting).items():
            owners[client_id] = owners[order.stop_loss_leg_id] = order
        return owners

    def _record(self, events: list[OrderEvent], order: Order | None, owners: dict[str, Order]) -> None:
        """Events of ``order`` (or of resting orders, ``owners``): their fills in the totals and the round trips."""
        result = self.result
        result.events += events
        for event in events:
            fields = event.__dict__  # its values: dict reads cost a fraction of pydantic attribute reads
            status, price, client_id = fields["status"], fields["price"], fields["client_order_id"]
            if status == "denied" and order is not None:
                result.denials.append((order, fields["reason"] or "denied"))
            if status == "filled" and price is not None:
                result.traded_notional += fields["quantity"] * price
                result.commissions += fields["commission"]
            owner = order if order is not None and client_id == order.__dict__["id"] else owners.get(client_id)
            if owner is not None:
                result.ledger.record(owner, event)

    def _execute(self, order: Order) -> list[OrderEvent]:
        """What the execution worker would publish for ``order`` (risk stage first, when there is one)."""
        if self.execution is None:
            broker = self.broker
            if not broker.resting and order.order_class != "oco":  # the usual case: nothing rests to judge first
                return broker.place(order)
            fills = broker.fill_resting(order.symbol, order.reference_price, order.timestamp) if broker.resting else []
            events = broker.place(order)
            if events and order.order_class == "oco" and events[0].status == "accepted":
                return [*fills, *events, *broker.fill_resting(order.symbol, order.reference_price, order.timestamp)]
            return [*fills, *events]
        return [event for _, event in self.execution.apply([order]) if isinstance(event, OrderEvent)]

    def _change(self, change: OrderChange) -> list[OrderEvent]:
        """What the execution worker would publish for a strategy's cancel or replace."""
        if self.execution is None:
            return self.broker.change(change, lambda _target, _replacement: None)
        return [event for _, event in self.execution.apply([change]) if isinstance(event, OrderEvent)]


def run_backtest(
    book: StrategyBook,
    observations: Iterable[Tick | Bar],
    broker: PaperBroker | BrokerPartition,
    *,
    sample: str = "1m",
    check: PreTradeCheck | None = None,
) -> BacktestResult:
    """Feed ``observations`` (in time order) through ``book`` and ``broker``; the whole result."""
    run = Backtest(book, broker, sample=sample, check=check)
    run.feed(observations)
    return run.finish()
