"""Operator control: halt, reduce, resume and flatten, each an audited event and a state change.

One compare-and-set commit writes the new state record and publishes the control event on the
control stream (storage keeps it); a flatten is also published on ``orders.new:{0}``, where the
execution role, at that point of the order stream, cancels every open order and then closes every
position it holds, through the same risk and broker path as any order (on paper and at Alpaca).
Flatten leaves the state REDUCING, so nothing reopens.
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tradebot.common.bus import Bus
from tradebot.common.bus.publishing import Commit
from tradebot.common.models import ACCOUNT_SCOPE, ControlEvent, Event
from tradebot.common.streams import CONTROL_EVENTS, ORDERS_NEW, TRADING_STATE_KEY, heartbeat_key
from tradebot.risk.state import TradingState
from tradebot.risk.store import OperatorRecord, read_record, seen_versions
from tradebot.risk.views import read_checkpoint, trading_state

ACTIONS: dict[str, TradingState] = {
    "halt": TradingState.HALTED,
    "reduce": TradingState.REDUCING,
    "resume": TradingState.ACTIVE,
    "flatten": TradingState.REDUCING,
}
ATTEMPTS = 20


class ControlError(ValueError):
    """A control request that cannot be applied; the message says what to change."""


def default_actor() -> str:
    """Who is at the keyboard: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def control_event(action: str, actor: str, reason: str, version: int, at: datetime) -> ControlEvent:
    """The audit event of one change (validated: bad input raises ControlError)."""
    if action not in ACTIONS:
        raise ControlError(f"unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    try:
        return ControlEvent(
            id=f"control-{version}",
            symbol=ACCOUNT_SCOPE,
            timestamp=at,
            action=action,  # type: ignore[arg-type]
            state=ACTIONS[action].value,
            actor=actor,
            reason=reason,
            version=version,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise ControlError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


async def apply_action(bus: Bus, action: str, *, actor: str, reason: str, now: datetime | None = None) -> ControlEvent:
    """Change the trading state (compare-and-set on its version) and publish the audit event."""
    control_event(action, actor, reason, 1, now or datetime.now(UTC))  # validate before touching Redis
    for _ in range(ATTEMPTS):
        current, raw = await read_record(bus.redis)
        at = now or datetime.now(UTC)
        event = control_event(action, actor, reason, current.version + 1, at)
        record = OperatorRecord(ACTIONS[action], event.version, action, actor, reason, at.isoformat())
        publish: list[tuple[str, Event]] = [(CONTROL_EVENTS, event)]
        if action == "flatten":
            publish.append((ORDERS_NEW, event))
        commit = Commit(publish=publish, state={TRADING_STATE_KEY: record.to_json()}, guard=(TRADING_STATE_KEY, raw))
        if await bus.commit("control", commit):
            return event
        if (await read_record(bus.redis))[0] == record:  # our commit landed, its reply was lost
            await bus.confirm_replicated(TRADING_STATE_KEY)  # with REDIS_MIN_REPLICAS: on its replicas too
            return event
    raise ControlError("the trading state kept changing while this change was being applied; try again")


async def status(bus: Bus) -> dict[str, Any]:
    """The trading state, any tripped risk rule, and which live workers have seen which version."""
    record, _ = await read_record(bus.redis)
    state, rule = trading_state(record, await read_checkpoint(bus.redis))
    return {
        "state": state.value,
        "operator": json.loads(record.to_json()),
        "rule": rule,
        "seen_by": await live_seen_versions(bus),
    }


async def live_seen_versions(bus: Bus) -> dict[str, int]:
    """The version each live worker has seen (workers whose heartbeat has expired are left out)."""
    live = {}
    for member, version in (await seen_versions(bus.redis)).items():
        role, _, consumer = member.partition(":")
        if await bus.redis.exists(heartbeat_key(role, consumer)):
            live[member] = version
    return live
