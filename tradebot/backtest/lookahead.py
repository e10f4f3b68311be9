"""The look-ahead check: does a signal still appear when the data ends at the tick it names?

A strategy that is honest decides at a tick from that tick and the ones before it. One that peeks
(a centred indicator, a signal back-dated to an earlier tick, data read from elsewhere) produces
signals that vanish or change when the run is cut right after the signal's tick. Each checked
signal costs a re-run up to its tick, so at most ``limit`` signals, spread evenly, are checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tradebot.common.models import Bar, Signal, Tick

if TYPE_CHECKING:
    from tradebot.backtest.run import BacktestRequest

DEFAULT_LIMIT = 50


def spread(signals: list[Signal], limit: int) -> list[Signal]:
    """Up to ``limit`` signals, evenly spaced over the run."""
    if len(signals) <= limit:
        return signals
    step = len(signals) / limit
    return [signals[int(i * step)] for i in range(limit)]


def check_lookahead(
    request: BacktestRequest,
    observations: Sequence[Tick] | Sequence[Bar],
    signals: list[Signal],
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Every checked signal that is missing or different when the data is cut at its tick."""
    position = {observation.id: index for index, observation in enumerate(observations)}
    checked = spread(signals, limit)
    changed = []
    for signal in checked:
        index = position.get(signal.tick_id)
        if index is None:
            why = "it names a tick that is not in the data"
        else:
            again = _signals_up_to(request, observations[: index + 1]).get(signal.id)
            if again is None:
                why = "it is not produced when the data ends at its tick (it used later data)"
            elif again != signal:
                why = f"it changes when the data ends at its tick: {again.side} at {again.price}"
            else:
                continue
        changed.append({"strategy": signal.strategy, "symbol": signal.symbol, "side": signal.side,
                        "tick_id": signal.tick_id, "why": why})  # fmt: skip
    return {"checked": len(checked), "changed": changed}


def _signals_up_to(request: BacktestRequest, observations: Sequence[Tick] | Sequence[Bar]) -> dict[str, Signal]:
    book = request.book()
    found: dict[str, Signal] = {}
    for observation in observations:
        outputs = book.on_tick(observation) if isinstance(observation, Tick) else book.on_bar(observation)
        found.update((signal.id, signal) for signal, _ in outputs)
    return found
