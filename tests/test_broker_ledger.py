"""The ledger turns any report of an order into the events not yet published, each once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tradebot.broker.base import BrokerFill, BrokerOrder
from tradebot.broker.ledger import Ledger

from .broker_helpers import order


def seen(status: str, filled: float, average: float | None, client_id: str = "co-1", qty: float = 10) -> BrokerOrder:
    return BrokerOrder(client_id, "b-1", "AAPL", "buy", qty, filled, average, status, datetime.now(UTC))


def test_the_same_news_from_stream_and_poll_is_published_once() -> None:
    ledger = Ledger()
    assert ledger.add(order(1), "co-1") is not None
    assert ledger.add(order(1), "co-1") is None  # a republished order
    first = ledger.observe(seen("partially_filled", 4, 100.0), BrokerFill("b-1", 4, 100.0, 4))
    assert [(e.status, e.quantity, e.price) for e in first] == [("accepted", 10, None), ("partially_filled", 4, 100.0)]
    assert ledger.observe(seen("partially_filled", 4, 100.0)) == []  # the poll repeats it
    assert ledger.observe_fill(BrokerFill("b-1", 4, 100.0, 4)) == []  # and so does the activity
    last = ledger.observe(seen("filled", 10, 101.2))  # the last 6 seen only as a new average
    assert [(e.status, e.quantity, e.price) for e in last] == [("filled", 6, pytest.approx(102.0))]
    assert ledger.observe(seen("filled", 10, 101.2)) == []
    assert ledger.positions == {"AAPL": 10}


def test_event_ids_are_stable_and_distinct() -> None:
    events = []
    for _ in range(2):
        ledger = Ledger()
        events.append([ledger.add(order(1), "co-1"), *ledger.observe(seen("filled", 10, 100.0))])
    assert [e.id for e in events[0] if e] == [e.id for e in events[1] if e]
    assert len({e.id for e in events[0] if e}) == 3


def test_an_end_is_published_once_and_late_news_after_it_is_ignored() -> None:
    ledger = Ledger()
    ledger.add(order(1), "co-1")
    ended = ledger.observe(seen("canceled", 3, 100.0))
    assert [e.status for e in ended] == ["accepted", "partially_filled", "canceled"]
    assert ledger.observe(seen("canceled", 3, 100.0)) == []
    assert ledger.observe(seen("filled", 10, 100.0)) == []  # news of an ended order changes nothing


def test_an_unknown_order_is_adopted_as_external() -> None:
    ledger = Ledger()
    events = ledger.observe(seen("filled", 5, 50.0, client_id="by-hand", qty=5))
    assert [e.status for e in events] == ["accepted", "filled"]
    assert ledger.positions == {"AAPL": 5}


def test_the_checkpoint_round_trips() -> None:
    ledger = Ledger()
    ledger.add(order(1), "co-1")
    ledger.observe(seen("partially_filled", 4, 100.0))
    restored = Ledger()
    restored.restore(json.loads(json.dumps(ledger.snapshot())))
    assert restored.snapshot() == ledger.snapshot()
    assert [e.status for e in restored.observe(seen("filled", 10, 100.0))] == ["filled"]


def test_an_order_republished_after_it_was_forgotten_is_not_told_again() -> None:
    ledger = Ledger(memory_days=1)
    ledger.add(order(1), "co-1")
    old = seen("filled", 10, 100.0)
    placed_long_ago = BrokerOrder(**{**old.__dict__, "submitted_at": datetime(2020, 1, 1, tzinfo=UTC)})
    assert ledger.observe(placed_long_ago) == []
    assert ledger.positions == {}
    assert ledger.knows("co-1")
