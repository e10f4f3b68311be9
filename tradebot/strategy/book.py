"""Several strategies at once: each with its name, symbols and sizing, switchable at run time.

The book is what the strategy worker and the backtester both run: ticks in, (signal, order)
pairs out. Every signal and order carries its strategy's name, and ids derive from it, so two
strategies never share an order. The book remembers what each strategy bought, so a SELL closes
that strategy's own position (P&L is attributed per strategy).

Long only by its own orders: a BUY gets an order only when its strategy is flat, a SELL only when
that strategy is long by an order it sent (a BUY and no SELL since); any other signal is recorded
with no order (``None``). What the book knows is only what it sent, never a fill, so a replay or a
backtest decides the same.
"""

from __future__ import annotations

import heapq
import math
import operator
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from tradebot.common.config import SizingMode
from tradebot.common.models import Bar, Order, OrderChange, Signal, Tick
from tradebot.strategy.base import Strategy, trade_taker
from tradebot.strategy.catalog import StrategyError, build_strategy

if TYPE_CHECKING:  # a backtest's columns (numpy): the worker, tick by tick, never loads them
    from tradebot.strategy.batch import Batch
    from tradebot.strategy.moving_average import Crossing

BOTH_SIDES = frozenset({"buy", "sell"})
_position = operator.itemgetter(0)  # of a (position, ...) pair


@dataclass(frozen=True)
class Sizing:
    """Shares per order: a fixed ``quantity``, or ``notional`` dollars rounded down to whole shares;
    ``position_sizing``: the risk stage's sizing mode for this strategy's orders (POSITION_SIZING's
    values; unset: POSITION_SIZING)."""

    quantity: float | None = None
    notional: float | None = None
    position_sizing: str | None = None

    def __post_init__(self) -> None:
        if self.position_sizing is not None and self.position_sizing not in get_args(SizingMode):
            modes = ", ".join(get_args(SizingMode))
            raise StrategyError(f"sizing.position_sizing {self.position_sizing!r} is not one of {modes}")
        if (self.quantity is None) == (self.notional is None):
            raise StrategyError("sizing needs exactly one of quantity (shares) or notional (dollars)")
        if (self.quantity or self.notional or 0) <= 0:
            raise StrategyError("sizing must be positive")

    def shares(self, price: float) -> float:
        """Always a float (as the order's field is): a file's ``quantity = 10`` is 10.0 shares."""
        if self.quantity is not None:
            return float(self.quantity)
        assert self.notional is not None
        return float(max(1, math.floor(self.notional / price)))


@dataclass(frozen=True)
class OrderStyle:
    """How a strategy's signals are placed (the ``orders`` table; docs/STRATEGIES.md): market orders,
    or buys with take-profit / stop-loss legs (both: a bracket, one: an OTO) at a percentage from
    the signal's price, and sells as trailing stops (``trail_percent`` or ``trail_price``)."""

    take_profit_pct: float | None = None
    stop_loss_pct: float | None = None
    trail_percent: float | None = None
    trail_price: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.take_profit_pct, self.stop_loss_pct, self.trail_percent, self.trail_price) if v]
        if any(value <= 0 for value in given) or (self.stop_loss_pct or 0) >= 100:
            raise StrategyError("orders: percentages and trail_price must be positive (stop_loss_pct below 100)")
        if self.trail_percent is not None and self.trail_price is not None:
            raise StrategyError("orders: a trailing stop trails by trail_percent or trail_price, not both")

    def shape(self, order: Order) -> Order:
        """``order`` (a market order from a signal) in this style."""
        # the style's own fields first: a plain style (the usual one) never reads the order
        if (self.take_profit_pct or self.stop_loss_pct) and order.side == "buy":
            price = order.reference_price
            legs: dict[str, object] = {
                "take_profit_price": round(price * (1 + self.take_profit_pct / 100), 2)
                if self.take_profit_pct
                else None,
                "stop_loss_price": round(price * (1 - self.stop_loss_pct / 100), 2) if self.stop_loss_pct else None,
            }
            legs["order_class"] = "bracket" if self.take_profit_pct and self.stop_loss_pct else "oto"
            return Order.model_validate({**order.model_dump(), **legs})
        if (self.trail_percent or self.trail_price) and order.side == "sell":
            trail = {"trail_percent": self.trail_percent, "trail_price": self.trail_price}
            return Order.model_validate(
                {**order.model_dump(), "order_type": "trailing_stop", "time_in_force": "gtc", **trail}
            )
        return order


@dataclass(frozen=True)
class StrategySpec:
    """One entry of the strategies file."""

    name: str | None
    cls: str
    parameters: dict[str, Any] = field(default_factory=dict)
    symbols: tuple[str, ...] | None = None  # None: every symbol
    sizing: Sizing = Sizing(quantity=10.0)
    enabled: bool = True
    orders: OrderStyle = OrderStyle()


ENTRY_KEYS = {"name", "class", "parameters", "symbols", "sizing", "enabled", "orders"}


def sizing_modes(specs: Iterable[StrategySpec]) -> dict[str, str]:
    """Each named strategy's own risk-stage sizing mode (those that set one)."""
    return {spec.name: spec.sizing.position_sizing for spec in specs if spec.name and spec.sizing.position_sizing}


def traded_symbols(specs: Iterable[StrategySpec]) -> frozenset[str] | None:
    """The symbols some enabled strategy trades; None when one of them trades every symbol."""
    traded: set[str] = set()
    for spec in specs:
        if spec.enabled:
            if spec.symbols is None:
                return None
            traded.update(spec.symbols)
    return frozenset(traded)


def read_strategies_file(path: Path) -> list[StrategySpec]:
    """The ``[[strategy]]`` tables of a TOML file (docs/STRATEGIES.md), checked."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise StrategyError(f"cannot read strategies file {path}: {error}") from None
    entries = document.get("strategy")
    if not isinstance(entries, list) or not entries:
        raise StrategyError(f"{path}: no [[strategy]] tables")
    specs = [_spec(entry, f"{path}: strategy {index + 1}") for index, entry in enumerate(entries)]
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1 and name})
    if duplicates:
        raise StrategyError(f"{path}: strategy names must be unique, {duplicates[0]!r} is repeated")
    return specs


def _spec(entry: dict[str, Any], where: str) -> StrategySpec:
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise StrategyError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(sorted(ENTRY_KEYS))}")
    if not entry.get("name") or not entry.get("class"):
        raise StrategyError(f"{where}: needs a name and a class")
    symbols = entry.get("symbols")
    try:
        sizing = Sizing(**entry.get("sizing", {"quantity": 10.0}))
    except TypeError:
        raise StrategyError(f"{where}: sizing takes quantity or notional, and position_sizing") from None
    try:
        orders = OrderStyle(**entry.get("orders", {}))
    except TypeError:
        raise StrategyError(
            f"{where}: orders takes take_profit_pct, stop_loss_pct, trail_percent or trail_price"
        ) from None
    return StrategySpec(
        name=str(entry["name"]),
        cls=str(entry["class"]),
        parameters=dict(entry.get("parameters", {})),
        symbols=tuple(s.upper() for s in symbols) if symbols else None,
        sizing=sizing,
        enabled=bool(entry.get("enabled", True)),
        orders=orders,
    )


@dataclass
class Entry:
    """A running strategy of the book."""

    spec: StrategySpec
    strategy: Strategy
    symbols: frozenset[str] | None

    @property
    def name(self) -> str:
        return self.strategy.name


class StrategyBook:
    """The strategies of one run, as one pure object with one snapshot."""

    def __init__(self, specs: Iterable[StrategySpec], switches: dict[str, bool] | None = None):
        self.entries: list[Entry] = []
        for spec in specs:
            strategy = build_strategy(spec.cls, spec.name, spec.parameters)
            symbols = frozenset(spec.symbols) if spec.symbols else None
            self.entries.append(Entry(spec, strategy, symbols))
        if not self.entries:
            raise StrategyError("no strategies configured")
        # name -> on/off set at run time, over the file's ``enabled`` (shared, updated in place)
        self.switches: dict[str, bool] = switches if switches is not None else {}
        self.positions: dict[str, dict[str, float]] = {e.name: {} for e in self.entries}

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def on_tick(self, tick: Tick, sides: frozenset[str] = BOTH_SIDES) -> list[tuple[Signal, Order | None]]:
        """Every strategy that trades the symbol sees the tick; enabled ones may emit orders, of
        ``sides`` only (the strategy worker's trading-state gate: sells only while REDUCING)."""
        outputs: list[tuple[Signal, Order | None]] = []
        for entry in self.entries:
            if entry.symbols is not None and tick.symbol not in entry.symbols:
                continue
            signals = entry.strategy.on_tick(tick)
            if signals and self.switches.get(entry.name, entry.spec.enabled):
                order_of = self._order_maker(entry, sides)
                outputs += [(signal, order_of(signal)) for signal in signals]
        return outputs

    def on_bar(self, bar: Bar) -> list[tuple[Signal, Order | None]]:
        """The same for one stored bar (backtests over bars); every strategy must have ``on_bar``."""
        outputs: list[tuple[Signal, Order | None]] = []
        for entry in self.entries:
            if entry.symbols is not None and bar.symbol not in entry.symbols:
                continue
            signals = self._observe(entry, bar)
            if signals and self.switches.get(entry.name, entry.spec.enabled):
                order_of = self._order_maker(entry)
                outputs += [(signal, order_of(signal)) for signal in signals]
        return outputs

    def on_batch(self, batch: Batch) -> list[tuple[int, Signal, Order | None]]:
        """What :meth:`on_tick` / :meth:`on_bar` would give observation by observation, as
        (position, signal, order) in the same order, for a backtest that holds them all at once
        (:meth:`play`'s outputs, all made)."""
        return list(self.play(batch))

    def play(self, batch: Batch) -> Iterator[tuple[int, Signal, Order | None]]:
        """:meth:`on_batch`'s outputs, each made when it is read: every strategy decides the whole
        batch now, but a scanned crossing becomes its signal and order only when the backtester
        reaches it, so the signal, its order and the broker's fill are made one after the other
        while they are in the CPU's cache, rather than in three passes over ~10,000 of each. Made in
        the same order as on_batch would (each strategy's in position order), so the same objects.

        A strategy with a ``scan`` method (state per symbol; see MovingAverageCrossover.scan)
        decides each symbol's part in one go, so the observations that emit nothing cost no objects.
        """
        plays = []
        for entry in self.entries:
            found = sorted(self._signals(entry, batch), key=_position)  # decided now: the strategy's state moves on
            if found and self.switches.get(entry.name, entry.spec.enabled):
                plays.append(self._played(entry, batch, found))
        if len(plays) == 1:
            return plays[0]
        # stable: at one position, the book's order of strategies, then each one's own
        return heapq.merge(*plays, key=_position)

    def _played(
        self, entry: Entry, batch: Batch, found: list[tuple[int, Signal | Crossing]]
    ) -> Iterator[tuple[int, Signal, Order | None]]:
        order_of = self._order_maker(entry)
        signal_at = getattr(entry.strategy, "signal_at", None)  # a scan's crossings: it makes their signals
        for position, item in found:
            # (a crossing is a tuple, a signal made one by one is not: type() is sooner than isinstance of a model)
            signal: Signal = item if type(item) is not tuple else signal_at(batch, position, item)  # type: ignore[misc,assignment]
            yield position, signal, order_of(signal)

    def _signals(self, entry: Entry, batch: Batch) -> list[tuple[int, Signal | Crossing]]:
        """Each signal of the batch at its position, or what the strategy's scan found there (its
        ``signal_at`` makes the signal)."""
        scan = getattr(entry.strategy, "scan", None)
        symbols = [s for s in batch.rows if entry.symbols is None or s in entry.symbols]
        if scan is None:  # one by one, in time order (its state may span symbols)
            wanted = range(len(batch)) if entry.symbols is None else sorted(p for s in symbols for p in batch.rows[s])
            return [(p, signal) for p, signals in self._observed(entry, batch, wanted) for signal in signals]
        found: list[tuple[int, Signal | Crossing]] = []
        for symbol in symbols:
            rows = batch.rows[symbol]
            scanned = scan(batch, symbol, rows)
            if scanned is None:
                one_by_one = self._observed(entry, batch, rows.tolist())
                found += [(p, signal) for p, signals in one_by_one for signal in signals]
            else:
                found += scanned
        return found

    @classmethod
    def _observed(cls, entry: Entry, batch: Batch, positions: Sequence[int]) -> Iterable[tuple[int, list[Signal]]]:
        """What ``entry``'s strategy says on each of the batch's observations at ``positions``, one by
        one, in their order. Of stored ticks (columns), a strategy that takes a tick's values
        (base.trade_taker) is given them: on_tick's own steps, without building a Tick for each."""
        on_trade = trade_taker(entry.strategy) if batch.sizes is not None else None
        if on_trade is None:
            observations = batch.observations
            return ((p, cls._observe(entry, observations[p])) for p in positions)
        assert batch.sizes is not None
        columns: Sequence[Sequence[Any]] = (batch.symbols, batch.ids, batch.times, batch.prices, batch.sizes)
        # positions are distinct and in order: as many as the batch's are every position (the columns themselves)
        if len(positions) < len(batch):
            columns = [[column[p] for p in positions] for column in columns]
        return zip(positions, map(on_trade, *columns), strict=True)

    @staticmethod
    def _observe(entry: Entry, observation: Tick | Bar) -> list[Signal]:
        if isinstance(observation, Tick):
            return entry.strategy.on_tick(observation)
        on_bar = getattr(entry.strategy, "on_bar", None)
        if on_bar is None:
            raise StrategyError(f"strategy {entry.name} takes ticks only (it has no on_bar)")
        signals: list[Signal] = on_bar(observation)
        return signals

    def take_changes(self) -> list[OrderChange]:
        """Cancels and replaces the strategies asked for since the last call (switched off or not:
        a strategy may always withdraw its own order)."""
        changes: list[OrderChange] = []
        for entry in self.entries:
            take = getattr(entry.strategy, "take_changes", None)
            if take is not None:
                changes += take()
        return changes

    def _order_maker(self, entry: Entry, sides: frozenset[str] = BOTH_SIDES) -> Callable[[Signal], Order | None]:
        """The order of each of ``entry``'s signals, given in turn (a signal's order changes what its
        strategy holds), or None: a side not sent now, a BUY while long, a SELL while flat. What is
        looked up per strategy (what it holds, its sizing and order style) is looked up once."""
        held, sizing, style, from_signal = (
            self.positions[entry.name],
            entry.spec.sizing,
            entry.spec.orders,
            Order.from_signal,
        )
        # found once: a fixed number of shares, and a plain style (shape gives the order itself)
        fixed = float(sizing.quantity) if sizing.quantity is not None else None
        plain = not (style.take_profit_pct or style.stop_loss_pct or style.trail_percent or style.trail_price)

        def order_of(signal: Signal) -> Order | None:
            read = signal.__dict__  # its values (a dict read is a fraction of a pydantic attribute read)
            side, symbol = read["side"], read["symbol"]
            if side not in sides or (symbol in held) == (side == "buy"):
                return None
            if side == "buy":
                quantity = held[symbol] = sizing.shares(read["price"]) if fixed is None else fixed
            else:
                quantity = held.pop(symbol)
            order = from_signal(signal, quantity)
            return order if plain else style.shape(order)

        return order_of

    def forget_unheld(self, held: Mapping[str, Mapping[str, float]]) -> list[tuple[str, str]]:
        """Drop each position the account does not hold for its strategy (``held``: strategy → symbol
        → shares, as the execution role last committed them), so no SELL of it is ever sent; the
        (strategy, symbol) pairs dropped. Only for an account that is not ACTIVE (see
        StrategyPartition.apply): there every BUY not yet decided will be denied, so a BUY the
        account does not show was or will be denied, never filled."""
        dropped = []
        for name, positions in self.positions.items():
            account = held.get(name, {})
            for symbol in [s for s in positions if account.get(s, 0.0) <= 0]:
                del positions[symbol]
                dropped.append((name, symbol))
        return dropped

    def snapshot(self) -> dict[str, Any]:
        """Every strategy's state and what each holds, as JSON-ready data."""
        return {
            "strategies": {entry.name: entry.strategy.snapshot() for entry in self.entries},
            "positions": self.positions,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state; a strategy new to the book starts fresh, a removed one is dropped."""
        if "strategies" not in snapshot:  # a checkpoint from before the book: one strategy's state
            snapshot = {"strategies": {self.entries[0].name: snapshot}, "positions": {}}
        saved = snapshot["strategies"]
        for entry in self.entries:
            if entry.name in saved:
                entry.strategy.restore(saved[entry.name])
        positions = snapshot.get("positions", {})
        self.positions = {name: dict(positions.get(name, {})) for name in self.names}
