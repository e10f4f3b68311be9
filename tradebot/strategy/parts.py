"""A strategy book's checkpoint in parts, so a commit rewrites only the symbols its batch touched.

One part per (symbol, strategy) — ``"AAPL@ma_crossover"`` — holds that strategy's state of that
symbol; ``"_rest"`` holds everything else (what each strategy holds, the exits' open trades, any
state a strategy keeps beside its symbols). Parts of the single-strategy layout that came before
the book (keys are bare symbols) are read too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

REST = "_rest"
_IDS = "recent_tick_ids"


def compact(value: object) -> str:
    """JSON without spaces: parts are rewritten on nearly every tick."""
    return json.dumps(value, separators=(",", ":"))


def part_name(symbol: str, strategy: str) -> str:
    """The part of one strategy's state of one symbol (never starts with "_": symbols start with a letter)."""
    return f"{symbol}@{strategy}"


def split(snapshot: dict[str, Any], symbols: Iterable[str] | None) -> tuple[dict[str, str], str]:
    """(parts of ``symbols`` — all when None — and the rest) of a book snapshot."""
    wanted = None if symbols is None else set(symbols)
    rest = {key: value for key, value in snapshot.items() if key != "strategies"}
    rest["strategies"] = {}
    parts: dict[str, str] = {}
    for name, state in snapshot.get("strategies", {}).items():
        per_symbol = state.get("symbols", {})
        rest["strategies"][name] = {key: value for key, value in state.items() if key != "symbols"}
        for symbol, symbol_state in per_symbol.items():
            if wanted is None or symbol in wanted:
                parts[part_name(symbol, name)] = compact(_pack(symbol_state))
    return parts, compact(rest)


def join(parts: dict[str, str]) -> dict[str, Any]:
    """The book snapshot the parts were split from."""
    rest: dict[str, Any] = json.loads(parts.get(REST, "{}"))
    symbol_parts = {name: part for name, part in parts.items() if not name.startswith("_")}
    if "strategies" not in rest:  # the layout before the book: one strategy, parts named by symbol
        rest.setdefault("symbols", {}).update({name: _unpack(json.loads(part)) for name, part in symbol_parts.items()})
        return rest
    for name, part in symbol_parts.items():
        symbol, _, strategy = name.partition("@")
        state = rest["strategies"].setdefault(strategy, {})
        state.setdefault("symbols", {})[symbol] = _unpack(json.loads(part))
    return rest


# A symbol's recent tick ids dominate its part ("mock:AAPL:1041", … fifty of them), so they are
# stored as their shared prefix and, when the rest are consecutive numbers (the mock feed, most
# providers' sequences), as a range.
def _pack(state: dict[str, Any]) -> dict[str, Any]:
    ids = state.get(_IDS)
    if not ids or not isinstance(ids, list):
        return state
    prefix = ids[0].rpartition(":")[0] + ":"
    if not all(tick_id.startswith(prefix) for tick_id in ids):
        return state
    rest = [tick_id[len(prefix) :] for tick_id in ids]
    packed: dict[str, Any] = {"prefix": prefix, "rest": rest}
    if all(part.isdigit() and str(int(part)) == part for part in rest):
        first = int(rest[0])
        if [int(part) for part in rest] == list(range(first, first + len(rest))):
            packed = {"prefix": prefix, "first": first, "count": len(rest)}
    return {**state, _IDS: packed}


def _unpack(state: dict[str, Any]) -> dict[str, Any]:
    packed = state.get(_IDS)
    if not isinstance(packed, dict):
        return state
    if "rest" in packed:
        ids = [packed["prefix"] + part for part in packed["rest"]]
    else:
        ids = [f"{packed['prefix']}{number}" for number in range(packed["first"], packed["first"] + packed["count"])]
    return {**state, _IDS: ids}
