"""The data-gap rule: a recorded gap in a symbol the account holds or a strategy trades changes the state.

A live feed records a gap when it could not publish what it received (tradebot/market_data/gaps.py).
Ticks that never reached the strategies are signals and exits never computed and prices the risk
stage never saw, so the account may only shrink (REDUCING, the default) or stops (HALTED) until
the operator has looked and resumes: RISK_DATA_GAP_STATE (``off``: no rule). Pure: the records,
the held symbols and the time come in, the trips go out. Each gap counts once: its key is
remembered in the execution checkpoint. A record that ended more than MAX_AGE_S before it is
first seen (an old one, at a first start) is only remembered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from tradebot.risk.state import TradingState

MAX_AGE_S = 86_400.0
REMEMBERED_GAPS = 1_000
SHOWN_SYMBOLS = 5


class DataGapRule:
    """Which new gap records trip the rule; see the module docstring."""

    def __init__(self, state: str = "reducing", traded: frozenset[str] | None = None):
        """``traded``: the symbols some strategy trades (None: every symbol)."""
        self.state = None if state == "off" else TradingState(state.upper())
        self.traded = traded
        self.seen: deque[str] = deque(maxlen=REMEMBERED_GAPS)

    def check(
        self, records: Mapping[str, Mapping[str, Any]], held: Iterable[str], now: datetime
    ) -> list[tuple[TradingState, str]]:
        """The state and the reason for each new gap that hits a held or traded symbol, oldest first."""
        seen, holding = set(self.seen), set(held)
        trips = []
        for key, record in sorted(records.items(), key=lambda item: str(item[1].get("first"))):
            if key in seen:
                continue
            self.seen.append(key)
            try:
                last = datetime.fromisoformat(record["last"])
                symbols = sorted(record["symbols"])
            except (KeyError, TypeError, ValueError):
                continue  # not a gap record of ours
            hit = [s for s in symbols if s in holding or self.traded is None or s in self.traded]
            if self.state is None or not hit or (now - last).total_seconds() > MAX_AGE_S:
                continue
            shown = ", ".join(hit[:SHOWN_SYMBOLS]) + (
                f" and {len(hit) - SHOWN_SYMBOLS} more" if len(hit) > SHOWN_SYMBOLS else ""
            )
            trips.append(
                (
                    self.state,
                    f"data gap in {shown}: {record.get('dropped', '?')} live events of {record.get('source', '?')} "
                    f"not published from {record.get('first')} to {record['last']} "
                    f"(RISK_DATA_GAP_STATE={self.state.value.lower()})",
                )
            )
        return trips

    def snapshot(self) -> list[str]:
        return list(self.seen)

    def restore(self, seen: list[str]) -> None:
        self.seen = deque(seen, maxlen=REMEMBERED_GAPS)
