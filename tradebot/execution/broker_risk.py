"""The risk stage on a real broker's path: the paper path's stage, fed with the broker's account.

The broker loop (tradebot/broker/worker.py) screens every new order here before it records it for
sending, so no order reaches Alpaca unchecked. The portfolio is the broker's account (cash, and
positions at their cost and last price) as read at the start of each batch, less what our orders
still in flight may yet take, each counted as filled at its reference price (ten buys in flight
cannot together pass a limit each passes alone), and moved by each order approved in the batch.
A denied order gets its one ``denied`` event and never reaches the broker. The stage's memory is
saved under ``risk`` in the broker's checkpoint, as in the paper one, so /risk and ``tradebot
status`` read both alike. A broker mismatch found by reconciliation trips the ``broker_mismatch``
rule: HALTED, published as a control event, until the operator resumes; a recorded data gap trips
the ``data_gap`` rule as on the paper path.

It also keeps the account as the API shows it (tradebot/execution/broker_book.py): every fill is
booked there in the commit that publishes it, and a sell's realised P&L, once the order is done,
feeds the engine's protections (cooldown, loss lock) and Kelly statistics as a paper fill does. A
flatten's closing orders are one sell per position the broker holds once its cancels have
settled (tradebot/broker/flatten.py), screened like any order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tradebot.broker.base import Booking, BrokerAccount, BrokerGateway
from tradebot.broker.ledger import Tracked
from tradebot.common.config import Settings
from tradebot.common.models import ControlEvent, Order, OrderEvent
from tradebot.execution.broker_book import BrokerBook
from tradebot.execution.risk_stage import Records, RiskStage, new_engine, new_gap_rule
from tradebot.risk import reasons
from tradebot.risk.state import TradingState
from tradebot.risk.store import OperatorRecord

log = logging.getLogger(__name__)


@dataclass
class Held:
    """One position of the account view (the engine's Holding)."""

    quantity: float
    average_cost: float
    last_price: float | None
    realised_pnl: float = 0.0


@dataclass
class AccountView:
    """The broker's cash and positions, with our orders in flight counted as filled."""

    cash: float
    positions: dict[str, Held]

    @classmethod
    def of(cls, account: BrokerAccount, in_flight: Iterable[Tracked]) -> AccountView:
        view = cls(
            account.cash, {s: Held(p.quantity, p.average_cost, p.last_price) for s, p in account.positions.items()}
        )
        for tracked in in_flight:
            if tracked.order is not None:  # an external order is the broker's business: its fills show up
                view.take(
                    tracked.side, tracked.symbol, tracked.quantity - tracked.filled, tracked.order["reference_price"]
                )
        return view

    def take(self, side: str, symbol: str, quantity: float, price: float) -> None:
        """As if ``quantity`` of ``symbol`` were filled at ``price``."""
        held = self.positions.setdefault(symbol, Held(0.0, price, price))
        if side == "buy":
            total = held.quantity + quantity
            if held.quantity >= 0 and total > 0:
                held.average_cost = (held.quantity * held.average_cost + quantity * price) / total
            held.quantity, self.cash = total, self.cash - quantity * price
        else:
            held.quantity, self.cash = held.quantity - quantity, self.cash + quantity * price
        if held.last_price is None:
            held.last_price = price


class BrokerRisk:
    """The broker loop's pre-trade stage; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        operator: Callable[[], OperatorRecord] = OperatorRecord,
        gaps: Callable[[], Records] = dict,
    ):
        self.stage = RiskStage(new_engine(settings, broker_clock=True), operator, gaps, new_gap_rule(settings))
        self.book = BrokerBook()
        self._account: AccountView | None = None
        self._read: BrokerAccount | None = None  # the broker's account as read for this batch
        self._flatten: ControlEvent | None = None  # the latest flatten seen (the watcher may not have it yet)

    async def begin_batch(
        self, gateway: BrokerGateway, in_flight: Iterable[Tracked], held: Mapping[str, float]
    ) -> str | None:
        """Take in the operator's state and the broker's account; why nothing can be screened, or None.

        ``held``: the ledger's positions (the book takes the read whole only when they agree)."""
        self.stage.begin_batch()
        if self._flatten is not None:
            self.flatten(self._flatten)
        self._account = self._read = None
        try:
            account = await gateway.account()
        except Exception as error:  # noqa: BLE001 - without the account no order is sent unchecked
            log.warning("execution: broker account unavailable (%s)", error)
            return f"broker account unavailable ({type(error).__name__}): no order is sent unchecked"
        self._read = account
        self.book.refresh(account, held)
        self._account = AccountView.of(account, in_flight)
        self.stage.watch_gaps(self._account)
        return None

    async def read_account(self, gateway: BrokerGateway, held: Mapping[str, float]) -> None:
        """Refresh the book from the broker (at start and each full reconciliation); a failure waits for the next."""
        try:
            self.book.refresh(await gateway.account(), held)
        except Exception as error:  # noqa: BLE001 - the book keeps moving with fills meanwhile
            log.warning("execution: broker account not read (%s); the account shown moves with fills", error)

    def book_fills(self, fills: Iterable[Booking], at: datetime | None = None) -> None:
        """Book fills the ledger published; a sell done with fills is a close for the protections and Kelly."""
        for fill in fills:
            close = self.book.book(fill)
            if close is not None:
                self.stage.engine.record_close(close[0], close[1], at or datetime.now(UTC))

    def flatten(self, event: ControlEvent) -> None:
        """REDUCING from this flatten on (unless the operator has said something newer)."""
        self._flatten = event
        if event.version > self.stage.engine.operator_version:
            self.stage.engine.set_operator(TradingState(event.state), event.version)

    def closing_orders(self, event: ControlEvent) -> list[Order]:
        """One sell per position the broker holds (as read by begin_batch), ids derived from the flatten's."""
        assert self._read is not None, "begin_batch first"
        return self.stage.flatten(event, AccountView.of(self._read, ()))

    def screen(self, order: Order) -> Order | OrderEvent | None:
        """The order to send (resized by the sizing mode), a denied event, or None if decided before."""
        account = self._account
        assert account is not None, "begin_batch first"
        screened = self.stage.screen(order, account)
        if isinstance(screened, Order):
            worth_before, _ = self.stage.before_broker(screened, account)
            account.take(screened.side, screened.symbol, screened.quantity, screened.reference_price)
            self.stage.moved(screened, worth_before, account)
        return screened

    def replace_refusal(self, target: Order, replacement: Order) -> str | None:
        """Why a replace must not go ahead (one that grows exposure is checked like a new order), or None."""
        assert self._account is not None, "begin_batch first"
        return self.stage.replace_refusal(self._account)(target, replacement)

    def broker_mismatch(self, reason: str) -> None:
        """Reconciliation found the broker disagreeing with us: HALTED until the operator resumes."""
        self.stage.begin_batch()  # the operator's latest word first, so an older resume cannot clear it
        self.stage.engine.impose(TradingState.HALTED, reasons.BROKER_MISMATCH, reason, datetime.now(UTC))

    def control_events(self) -> list[ControlEvent]:
        """The rules that tripped since the last call, as control events."""
        return self.stage.rule_events()

    def snapshot(self) -> dict[str, Any]:
        """The stage's memory (``risk``), the account (``account``) and P&L per strategy (``pnl``)."""
        return {"risk": self.stage.snapshot(), "account": self.book.snapshot(), "pnl": self.book.pnl.snapshot()}

    def restore(self, saved: dict[str, Any] | None) -> None:
        """From the broker checkpoint as a whole (what ``snapshot`` put there)."""
        saved = saved or {}
        if saved.get("risk"):
            self.stage.restore(saved["risk"])
        self.book.restore(saved.get("account"), saved.get("pnl"))
