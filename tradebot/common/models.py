"""The events that cross the bus: frozen, validated, each with a stable id (its idempotency key)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,9}$"
# What the API accepts (it upper-cases): stated in the OpenAPI schema so a valid request is never refused.
SYMBOL_PATTERN_ANY_CASE = r"^[A-Za-z][A-Za-z0-9.\-]{0,9}$"
Side = Literal["buy", "sell"]
SIDES = frozenset({"buy", "sell"})
Timeframe = Literal["1m", "5m", "15m", "1h", "1d"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "trailing_stop"]
TimeInForce = Literal["day", "gtc", "ioc", "fok", "opg", "cls"]
# bracket / oto follow from the legs given when unset; oco must be asked for (an exit pair)
OrderClass = Literal["bracket", "oto", "oco"]
# An order's life on orders.events (docs/BROKERS.md); the TERMINAL_STATUSES end it. The four
# about a cancel or replace (OrderChange) leave the order as it was until the broker's answer.
OrderStatus = Literal[
    "submitted",
    "accepted",
    "partially_filled",
    "filled",
    "canceled",
    "expired",
    "rejected",
    "replaced",
    "denied",
    "cancel_requested",
    "replace_requested",
    "order_cancel_rejected",
    "order_replace_rejected",
]
ORDER_STATUSES = frozenset(get_args(OrderStatus))
ChangeAction = Literal["cancel", "replace"]
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "denied"})
# Sanity bounds: no US stock trades above these (BRK.A is under $1M); anything beyond is a bad
# message, and letting it in would make sums over prices and sizes overflow in storage.
MAX_PRICE = 10_000_000.0
MAX_QUANTITY = 1e10
MIN_PRICE = 1e-6  # and below these, products of prices and sizes underflow
MIN_QUANTITY = 1e-9
_blake2b = hashlib.blake2b


def invalid(error: ValueError) -> str:
    """The first reason a model refused its input, in one line."""
    errors = getattr(error, "errors", None)
    if callable(errors) and errors():
        return str(errors()[0].get("msg", error))
    return str(error)


# Most ids are of two strings whose first is one of a few kinds ("order", "fill", a strategy's
# name): the hash of "<kind>|" is taken once per kind and copied (a copy and one update cost about
# half a fresh blake2b with its parameters). Bounded, so ids of ever new first parts stay correct.
_PREFIXES_KEPT = 256
_prefixes: dict[str, hashlib.blake2b] = {}


def stable_id(*parts: object) -> str:
    """A deterministic id from the parts that identify an event (same inputs, same id)."""
    if len(parts) == 2 and type(parts[0]) is str and type(parts[1]) is str:  # most ids: the same bytes, sooner
        prefix = _prefixes.get(parts[0])
        if prefix is None:
            if len(_prefixes) >= _PREFIXES_KEPT:
                return _blake2b(f"{parts[0]}|{parts[1]}".encode(), digest_size=12).hexdigest()
            prefix = _prefixes[parts[0]] = _blake2b(f"{parts[0]}|".encode(), digest_size=12)
        hashed = prefix.copy()
        hashed.update(parts[1].encode())
        return hashed.hexdigest()
    return _blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def id_maker(kind: str) -> Callable[[str], str]:
    """``stable_id(kind, part)`` as a function of ``part`` alone, for the hot paths (an order's, a
    fill's id): the same bytes, without the parts' tuple, their checks and the prefix's lookup."""
    copy = _blake2b(f"{kind}|".encode(), digest_size=12).copy

    def make(part: str) -> str:
        hashed = copy()
        hashed.update(part.encode())
        return hashed.hexdigest()

    return make


E = TypeVar("E", bound="Event")
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__  # the instance dict's own descriptor (sooner than _set)
# BaseModel's own slots, set directly: object.__setattr__ by name costs several times more
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
# What built needs to know of a model given these names, found once: the defaults to fill in (None
# when the names are every field in field order: the values are the event's dict as they are) and
# the names as pydantic's fields set. The set is shared by every event built with the same names
# (pydantic changes a model's set only when a field is assigned, which a frozen event refuses, and
# model_copy copies it first), so no event allocates its own.
_layouts: dict[tuple[type[BaseModel], tuple[str, ...]], tuple[dict[str, Any] | None, set[str]]] = {}


def _layout(model: type[BaseModel], names: tuple[str, ...]) -> tuple[dict[str, Any] | None, set[str]]:
    fields = model.model_fields  # no event has a mutable default: the defaults are shared too
    defaults = {name: None if info.is_required() else info.get_default(call_default_factory=True)
                for name, info in fields.items()}  # fmt: skip
    return (None if names == tuple(fields) else defaults), set(names)


def built(model: type[E], **values: Any) -> E:
    """An event of ``model`` from values already known to be valid, without validating them again.

    Validation happens at the edges: a tick from a feed, a message read off the bus (the codec), a
    row read back from storage, a setting. Events the system derives inside from such values (a
    strategy's signal from a validated tick, its order, the paper broker's fill) are built here,
    which is what pydantic's ``model_construct`` does minus its per-field bookkeeping: ~1 µs instead
    of ~6-14 µs for validating a Signal or an Order. The caller guarantees what validation would
    check (types exactly as the model's, ranges, UTC timestamps) and checks any number it computed;
    a value it cannot vouch for goes through the model's constructor. Omitted fields take their
    defaults, as with the constructor; the result equals (and dumps the same JSON as) the validated one.
    """
    key = (model, tuple(values))
    layout = _layouts.get(key) or _layouts.setdefault(key, _layout(model, key[1]))
    defaults, given = layout
    event = _new(model)
    # in field order, which is the JSON's order; ``values`` is this call's own dict (keyword arguments)
    _set_dict(event, values if defaults is None else {**defaults, **values})
    _set_fields_set(event, given)
    _set_extra(event, None)
    _set_private(event, None)
    return event


def builder(model: type[E], *names: str) -> Callable[[dict[str, Any]], E]:
    """:func:`built` for the hot paths, its layout found once: ``builder(M, *names)(values)`` is
    ``built(M, **given)`` for ``values`` of every field of ``M`` in field order whose ``names`` were
    given (the event's fields set, as pydantic's constructor would have it) and the others are at
    their defaults: a copy of ``defaults(M)`` with the given ones set (sooner than merging two dicts;
    ~0.3 µs a Signal instead of ~0.8). ``values`` itself becomes the event's dict (the caller hands
    it over and keeps no other use)."""
    fields = tuple(model.model_fields)
    if any(name not in fields for name in names):
        raise ValueError(f"{model.__name__} has no field {next(n for n in names if n not in fields)!r}")
    given = set(names)

    def build(values: dict[str, Any]) -> E:
        event = _new(model)
        _set_dict(event, values)
        _set_fields_set(event, given)
        _set_extra(event, None)
        _set_private(event, None)
        return event

    return build


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of ``model`` in field order at its default (None for a required one): what a
    :func:`builder`'s caller copies and fills in."""
    layout = _layout(model, ())[0]
    assert layout is not None  # (a model with no fields has no events)
    return layout


class Event(BaseModel):
    """Base of every bus event: immutable, strict about unknown fields, UTC timestamps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    symbol: str = Field(pattern=SYMBOL_PATTERN)
    timestamp: datetime

    @field_validator("timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware")
        return value.astimezone(UTC)


class Tick(Event):
    """One trade print."""

    price: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    size: float = Field(ge=MIN_QUANTITY, le=MAX_QUANTITY)
    source: str = "mock"

    @classmethod
    def create(
        cls, symbol: str, price: float, size: float, timestamp: datetime, source: str = "mock", trade_id: object = None
    ) -> Tick:
        """A tick whose id is the provider's trade id when known, else derived from its content."""
        key = trade_id if trade_id is not None else stable_id(timestamp.isoformat(), price, size)
        return cls(
            id=f"{source}:{symbol}:{key}", symbol=symbol, price=price, size=size, timestamp=timestamp, source=source
        )


class Bar(Event):
    """OHLCV for one bucket starting at ``timestamp``."""

    timeframe: Timeframe
    open: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    high: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    low: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    close: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    volume: float = Field(ge=0, le=MAX_QUANTITY * 1000)
    trade_count: int = Field(ge=0, le=2**40)
    vwap: float | None = Field(None, ge=MIN_PRICE, le=MAX_PRICE)
    source: str = "mock"
    # Larger is newer: the provider's update time if it gives one, else when tradebot received or
    # fetched the bar (microseconds since the epoch). A stored bar only ever changes to a newer one.
    version: int = Field(0, ge=0, le=2**62)

    @model_validator(mode="after")
    def _consistent_range(self) -> Bar:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        if not (self.low <= self.open <= self.high and self.low <= self.close <= self.high):
            raise ValueError("open and close must lie within [low, high]")
        return self

    @classmethod
    def bar_id(cls, source: str, symbol: str, timeframe: str, start: datetime) -> str:
        """Bars are identified by where they come from and which bucket they cover."""
        return f"{source}:{symbol}:{timeframe}:{start.isoformat()}"


class Signal(Event):
    """A strategy's decision to buy or sell, derived from the tick that triggered it."""

    side: Side
    price: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    confidence: float = Field(ge=0, le=1)
    strategy: str
    tick_id: str


NOTIONAL_TOLERANCE = 0.01  # dollars: a quantity given with a notional must be its estimate


class Order(Event):
    """An order; ``id`` is the client order id, derived from the signal id.

    Sized in shares (``quantity``, decimals allowed: fractional) or in dollars (``notional``, a
    market day order; then ``quantity`` is the estimate at the reference price, which the risk
    stage reads, and the broker is sent the notional alone).
    """

    side: Side
    quantity: float = Field(ge=MIN_QUANTITY, le=MAX_QUANTITY)
    notional: float | None = Field(default=None, ge=1.0, le=1e9)  # dollars; Alpaca's minimum is $1
    # the last price the strategy saw; paper fills start from it
    reference_price: float = Field(ge=MIN_PRICE, le=MAX_PRICE)
    signal_id: str
    order_type: OrderType = "market"
    time_in_force: TimeInForce = "day"
    limit_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    stop_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    trail_percent: float | None = Field(default=None, gt=0, lt=100)
    trail_price: float | None = Field(default=None, gt=0, le=MAX_PRICE)  # a trailing stop's trail in dollars
    # take-profit and/or stop-loss legs: both make a bracket order, one an OTO
    take_profit_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    stop_loss_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    extended_hours: bool = False
    # "oco": an exit pair for a position held, the take-profit limit (this order) and a stop-loss
    # leg; whichever fills first cancels the other (Alpaca's order_class=oco)
    order_class: OrderClass | None = None

    @model_validator(mode="before")
    @classmethod
    def _oco_limit_is_its_take_profit(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("order_class") == "oco" and data.get("limit_price") is None:
            return {**data, "order_type": data.get("order_type", "limit"), "limit_price": data.get("take_profit_price")}
        return data

    @model_validator(mode="before")
    @classmethod
    def _quantity_or_notional(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("notional") is None:
            return data
        notional, price = float(data["notional"]), float(data.get("reference_price") or 0)
        estimate = round(notional / price, 9) if price > 0 else None
        if data.get("quantity") is None:
            return {**data, "quantity": estimate}
        if estimate is None or abs(float(data["quantity"]) * price - notional) > NOTIONAL_TOLERANCE:
            raise ValueError("an order gives quantity (shares) or notional (dollars), not both")
        return data

    @property
    def fractional(self) -> bool:
        """Sized in dollars or in a part of a share: only for fractionable assets."""
        return self.notional is not None or self.quantity != int(self.quantity)

    @model_validator(mode="after")
    def _prices_match_type(self) -> Order:
        needs = {"limit": ("limit_price",), "stop": ("stop_price",), "stop_limit": ("limit_price", "stop_price")}
        missing = [name for name in needs.get(self.order_type, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.order_type} order needs {' and '.join(missing)}")
        if self.order_class is not None and self.order_class != "oco":
            both = self.take_profit_price is not None and self.stop_loss_price is not None
            if self.order_class != ("bracket" if both else "oto"):
                raise ValueError("bracket needs take_profit_price and stop_loss_price, oto exactly one")
        if self.order_type == "trailing_stop" and (self.trail_percent is None) == (self.trail_price is None):
            raise ValueError("a trailing_stop order needs trail_percent or trail_price (one of them)")
        if self.extended_hours and (self.order_type != "limit" or self.time_in_force != "day"):
            raise ValueError("extended hours are only for limit orders with time in force day")
        if self.notional is not None and (self.order_type != "market" or self.time_in_force != "day"):
            raise ValueError("a notional order must be a market order with time in force day")
        if self.fractional and self.time_in_force != "day":
            raise ValueError("a fractional order (notional or a part of a share) must have time in force day")
        if self.fractional and (self.take_profit_price is not None or self.stop_loss_price is not None):
            raise ValueError("a fractional order cannot carry take-profit or stop-loss legs")
        if self.order_class == "oco":
            self._check_oco()
        return self

    def _check_oco(self) -> None:
        """Alpaca's rules for an OCO, which is always an exit (long only here: a sell)."""
        tp, sl = self.take_profit_price, self.stop_loss_price
        if tp is None or sl is None:
            raise ValueError("an oco order needs take_profit_price and stop_loss_price")
        if self.side != "sell":
            raise ValueError("an oco order exits a position held: its side is sell")
        if self.order_type != "limit" or self.limit_price != tp:
            raise ValueError("an oco order is the take-profit limit: order_type limit at take_profit_price")
        if tp <= sl:
            raise ValueError("an oco order's take_profit_price must be above its stop_loss_price")
        if self.time_in_force not in ("day", "gtc"):
            raise ValueError("an oco order is day or gtc")

    @property
    def stop_loss_leg_id(self) -> str:
        """The client order id of an OCO's stop-loss leg at the paper broker (a bracket's exit pair
        is its take-profit ``<entry>-tp``, with the stop-loss ``<entry>-sl``)."""
        return f"{self.id.removesuffix('-tp')}-sl"

    strategy: str | None = None  # the name of the strategy whose signal this is

    @staticmethod
    def id_for(signal_id: str) -> str:
        """The client order id the order of this signal gets."""
        return "co-" + _order_hash(signal_id)

    @classmethod
    def from_signal(cls, signal: Signal, quantity: float) -> Order:
        """One signal always becomes the same order (same client order id).

        A market day order of a (valid) signal's symbol, side and price is valid whenever its
        quantity is: built without validating again (see ``built``) unless the quantity is out of range.
        """
        read = signal.__dict__  # the signal's values: a dict read is a fraction of a pydantic attribute read
        signal_id = read["id"]
        values = _order_defaults.copy()  # every field in field order: the event's dict as it is
        values["id"] = "co-" + _order_hash(signal_id)  # id_for's, without its call
        values["symbol"] = read["symbol"]
        values["timestamp"] = read["timestamp"]
        values["side"] = read["side"]
        values["quantity"] = quantity
        values["reference_price"] = read["price"]
        values["signal_id"] = signal_id
        values["strategy"] = read["strategy"]
        if cls is Order and type(quantity) is float and MIN_QUANTITY <= quantity <= MAX_QUANTITY:
            return _order_of_signal(values)
        return cls.model_validate({name: values[name] for name in _FROM_SIGNAL})  # says why, or converts (an int)


_order_hash = id_maker("order")  # Order.id_for's hash
_FROM_SIGNAL = ("id", "symbol", "timestamp", "side", "quantity", "reference_price", "signal_id", "strategy")
_order_defaults = defaults(Order)
_order_of_signal = builder(Order, *_FROM_SIGNAL)  # Order.from_signal's values
REPLACEABLE = ("quantity", "limit_price", "stop_price", "trail_percent", "trail_price", "time_in_force")


class OrderChange(Event):
    """A request to cancel or replace an open order of ours (``target``, its client order id).

    It travels on ``orders.new`` behind the order it changes (one stream, one reader, in order);
    ``id`` is its own idempotency key. A replace names only what changes; the replacement is a new
    order (``replacement_id``) and the target ends ``replaced``, as at Alpaca.
    """

    action: ChangeAction
    target: str = Field(min_length=1, max_length=100)
    quantity: float | None = Field(default=None, ge=MIN_QUANTITY, le=MAX_QUANTITY)
    limit_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    stop_price: float | None = Field(default=None, ge=MIN_PRICE, le=MAX_PRICE)
    trail_percent: float | None = Field(default=None, gt=0, lt=100)
    trail_price: float | None = Field(default=None, gt=0, le=MAX_PRICE)
    time_in_force: TimeInForce | None = None
    strategy: str | None = None
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _fields_match_action(self) -> OrderChange:
        named = [name for name in REPLACEABLE if getattr(self, name) is not None]
        if self.action == "cancel" and named:
            raise ValueError(f"a cancel changes nothing else ({', '.join(named)} given)")
        if self.action == "replace" and not named:
            raise ValueError(f"a replace needs at least one of {', '.join(REPLACEABLE)}")
        return self

    @property
    def replacement_id(self) -> str:
        """The client order id of the order a replace creates (27 characters, fits Alpaca's 48)."""
        return f"rp-{stable_id('replace', self.id)}"

    def event_id(self, status: str) -> str:
        """The id of the event this request leads to with ``status`` (one per request and status)."""
        return stable_id("order-change", self.id, status)

    def replacement(self, original: Order) -> Order:
        """The order that takes the place of ``original``: its fields, with what this change names
        (a new quantity sizes it in shares). Raises ValueError when that is no valid order."""
        changed: dict[str, object] = {
            name: getattr(self, name) for name in REPLACEABLE if getattr(self, name) is not None
        }
        if self.quantity is not None:
            changed["notional"] = None
        if self.trail_price is not None:  # a trail is given in dollars or in percent, never both
            changed["trail_percent"] = None
        if self.trail_percent is not None:
            changed["trail_price"] = None
        data = {**original.model_dump(), **changed, "id": self.replacement_id, "timestamp": self.timestamp}
        return Order.model_validate(data)

    @staticmethod
    def grows_exposure(target: Order, replacement: Order) -> bool:
        """A buy that would cost more at its worst price than the order it replaces (a sell never does: long only)."""
        if replacement.side == "sell":
            return False

        def worst(order: Order) -> float:
            return order.quantity * (order.limit_price or order.stop_price or order.reference_price)

        return worst(replacement) > worst(target) + 1e-9

    @classmethod
    def for_signal(
        cls, action: ChangeAction, signal: Signal, at: datetime, source_id: str, **fields: object
    ) -> OrderChange:
        """A strategy's change of the order its ``signal`` made, decided on ``source_id`` (a tick or bar)."""
        return cls(
            id=f"cx-{stable_id(action, signal.id, source_id)}",
            symbol=signal.symbol,
            timestamp=at,
            action=action,
            target=Order.id_for(signal.id),
            strategy=signal.strategy,
            **fields,  # type: ignore[arg-type]
        )


class OrderEvent(Event):
    """What the broker did with an order: one step of its life (submitted … filled / rejected).

    A partially_filled or filled event carries the quantity and price of one execution, so the
    quantities of an order's fill events add up to what it filled.
    """

    client_order_id: str
    status: OrderStatus  # denied: by the risk stage, never sent to a broker
    side: Side
    quantity: float = Field(ge=0, le=MAX_QUANTITY)
    price: float | None = Field(None, ge=MIN_PRICE, le=MAX_PRICE)
    commission: float = Field(0.0, ge=0)
    reason: str | None = None
    broker_order_id: str | None = None
    filled_quantity: float | None = Field(default=None, ge=0, le=MAX_QUANTITY)  # cumulative, where known

    @model_validator(mode="after")
    def _fill_has_price(self) -> OrderEvent:
        check_fill(self.status, self.price, self.quantity)
        return self


def check_fill(status: str, price: float | None, quantity: float) -> None:
    """An order event's rule beyond its fields' own (the bus codec's strict decoder checks it too)."""
    if status in ("filled", "partially_filled") and (price is None or quantity <= 0):
        raise ValueError("a fill needs a price and a positive quantity")


class Gap(Event):
    """Live events of ``symbol`` a feed could not publish (Redis refused writes or was over its
    memory budget while the feed's buffer was full), from ``timestamp`` to ``last``. Recorded,
    shown in /health, and filled by gap repair from the provider's REST history."""

    last: datetime
    source: str
    dropped: int = Field(ge=0, description="events of the whole gap (all its symbols) not published")

    @classmethod
    def create(cls, source: str, symbol: str, first: datetime, last: datetime, dropped: int) -> Gap:
        """One gap of one symbol, identified by where it comes from and when it began."""
        return cls(
            id=f"{source}:{symbol}:{first.isoformat()}",
            symbol=symbol,
            timestamp=first,
            last=last,
            source=source,
            dropped=dropped,
        )


# Events about the whole account rather than one symbol carry this scope instead of a ticker.
ACCOUNT_SCOPE = "*"
TradingStateName = Literal["ACTIVE", "REDUCING", "HALTED"]


class ControlEvent(Event):
    """A change of trading state, by the operator or a risk rule: what, who, when and why."""

    symbol: str = Field(ACCOUNT_SCOPE, pattern=rf"^\*$|{SYMBOL_PATTERN}")
    action: Literal["halt", "reduce", "resume", "flatten", "rule"]
    state: TradingStateName
    actor: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    version: int = Field(ge=0)


class EquitySample(Event):
    """The account once a minute: the equity curve's points."""

    symbol: str = Field(ACCOUNT_SCOPE, pattern=r"^\*$")
    cash: float
    equity: float
    gross_exposure: float = Field(ge=0)
    realised_pnl: float
    unrealised_pnl: float
    drawdown: float = Field(ge=0, le=1)


EVENT_TYPES: dict[str, type[Event]] = {
    model.__name__: model
    for model in (Tick, Bar, Signal, Order, OrderChange, OrderEvent, Gap, ControlEvent, EquitySample)
}
