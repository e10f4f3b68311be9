"""A strategy book's checkpoint in parts, so a commit rewrites only the symbols its batch touched.

One part per (symbol, strategy) — ``"AAPL@ma_crossover"`` — holds that strategy's state of that
symbol; ``"_rest"`` holds everything else (what each strategy holds, the exits' open trades, any
state a strategy keeps beside its symbols). Parts of the single-strategy layout that came before
the book (keys are bare symbols) are read too.

A symbol's part is rewritten with nearly every tick of that symbol, so it is written compactly
(``~`` and then JSON): the keys every symbol state has are abbreviated, and lists of whole
numbers (price windows in price units) are kept as their first value and the differences. Parts
written before (plain JSON) read as ever, and a state whose own keys start with ``~`` is written
plain.
"""

from __future__ import annotations

import itertools
import json
import math
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
                parts[part_name(symbol, name)] = _encode(_pack(symbol_state))
    return parts, compact(rest)


def join(parts: dict[str, str]) -> dict[str, Any]:
    """The book snapshot the parts were split from."""
    rest: dict[str, Any] = json.loads(parts.get(REST, "{}"))
    symbol_parts = {name: part for name, part in parts.items() if not name.startswith("_")}
    if "strategies" not in rest:  # the layout before the book: one strategy, parts named by symbol
        rest.setdefault("symbols", {}).update({name: _unpack(decode_part(part)) for name, part in symbol_parts.items()})
        return rest
    for name, part in symbol_parts.items():
        symbol, _, strategy = name.partition("@")
        state = rest["strategies"].setdefault(strategy, {})
        state.setdefault("symbols", {})[symbol] = _unpack(decode_part(part))
    return rest


# A symbol's recent tick ids dominate its part ("mock:AAPL:1041", … fifty of them), so they are
# stored as their shared prefix and, when the rest are consecutive numbers (the mock feed, most
# providers' sequences), as a range.
def _pack(state: dict[str, Any]) -> dict[str, Any]:
    ids = state.get(_IDS)
    if not ids or not isinstance(ids, list):
        return state
    prefix = ids[0].rpartition(":")[0] + ":"
    head = ids[0][len(prefix) :]
    if (
        head.isascii() and head.isdigit() and str(int(head)) == head
    ):  # the usual range, checked with one list compare (in C)
        first = int(head)
        if ids == [f"{prefix}{number}" for number in range(first, first + len(ids))]:
            return {**state, _IDS: {"prefix": prefix, "first": first, "count": len(ids)}}
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


COMPACT = "~"
# Keys of every symbol's state (tradebot/strategy/base.py SymbolState, the indicators, _pack).
_SHORT = {
    key: f"{COMPACT}{short}"
    for key, short in {
        "indicators": "i",
        "values": "v",
        "total": "t",
        "bar": "b",
        "holding": "h",
        "memory": "m",
        _IDS: "r",
        "prefix": "p",
        "first": "f",
        "count": "c",
        "rest": "s",
    }.items()
}
_LONG = {short: key for key, short in _SHORT.items()}
# A list of whole numbers as {"~d": [first, second - first, …], "~g": g}, each divided by their
# greatest common divisor g (prices in price units are whole cents: g is 100 or more).
_DELTAS, _DIVISOR = f"{COMPACT}d", f"{COMPACT}g"


def _encode(state: dict[str, Any]) -> str:
    try:
        return COMPACT + compact(_shrink(state))
    except _AbbreviatedKeyError:
        return compact(state)  # plain, to read back exactly


def decode_part(part: str) -> dict[str, Any]:
    if not part.startswith(COMPACT):
        loaded: dict[str, Any] = json.loads(part)
        return loaded
    grown: dict[str, Any] = _grow(json.loads(part[len(COMPACT) :]))
    return grown


class _AbbreviatedKeyError(Exception):
    """A state's own key starts with COMPACT: it is written plain (one walk finds it while shrinking)."""


def _whole_numbers(value: list[Any]) -> bool:
    return len(value) > 2 and all(type(item) is int for item in value)


def _shrink(value: Any) -> Any:
    if isinstance(value, dict):
        if any(str(key).startswith(COMPACT) for key in value):
            raise _AbbreviatedKeyError
        return {_SHORT.get(key, key): _shrink(item) for key, item in value.items()}
    if isinstance(value, list):
        if _whole_numbers(value):
            divisor = math.gcd(*value) or 1
            steps = [value[0] // divisor, *((b - a) // divisor for a, b in itertools.pairwise(value))]
            return {_DELTAS: steps, _DIVISOR: divisor}
        return [_shrink(item) for item in value]
    return value


def _grow(value: Any) -> Any:
    if isinstance(value, dict):
        if list(value) == [_DELTAS, _DIVISOR]:
            numbers, total = [], 0
            for step in value[_DELTAS]:
                total += step * value[_DIVISOR]
                numbers.append(total)
            return numbers
        return {_LONG.get(key, key): _grow(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_grow(item) for item in value]
    return value
