"""The paper account's checkpoint in parts, so a commit writes what its orders changed, not the account.

The whole snapshot (PaperBroker's plus the risk stage's memory) holds every client order id the
broker remembers (days of them) and the risk stage's last thousand decisions: rewritten whole on
every commit it cost more AOF bytes than everything else together, and more with every order. In
parts (fields of the ``checkpoint_parts:execution:{0}`` hash):

- ``_rest``: the account-wide memory that seldom changes (starting cash, resting orders, the
  operator's and the rules' state, the session, losses and locks, the strategies of the P&L);
- ``_cash``: what nearly every order moves (cash, commissions, peak equity, trade stats, the count
  of sends), apart so that the rest is not rewritten with it;
- ``_symbols``: the symbols that have a part, in the broker's order;
- ``_prices``: how far the ticks of each partition were read for the resting orders
  (tradebot/execution/prices.py; rewritten as they are read, without the rest);
- ``p:<symbol>``: that symbol's position, mark, rate-limit memory and each strategy's holding of
  it (written when it changed);
- ``s:<n>``: the risk stage's last minute of sends (all symbols), SENT_CHUNK to a part, numbered by
  the count of sends before them (written as they fill, deleted as the window leaves them);
- ``o:<client order id>``: an order the broker executed, ``<place>:<time>`` (written once; deleted
  when it ages out of ORDER_MEMORY_DAYS);
- ``d:<order id>``: an order the risk stage decided, with its place in the decision order
  (written once; deleted when it leaves the last thousand).

Every list keeps its exact order (a place number per entry): the rate and age checks pop from the
front, so a restored account decides exactly as the uninterrupted one would.

The parts written with nearly every order (``_cash``, ``p:``, ``s:``) are compact: ``~`` and then
JSON with short keys, a position as its values, send times as whole-microsecond steps (exact: an
event time's ``timestamp()`` is a whole number of microseconds; other times are kept as they
are), a mark or a strategy's holding that equals the position's (SAME) left out, a strategy named
by its place in the P&L's order. Parts of the layout before (plain JSON, the P&L and cash in
``_rest``, 64 sends to a part) read as ever; the first commit after rewrites them.

A commit looks only at the symbols its batch touched (:func:`split_touched`: the symbols of the
orders, changes and ticks applied and of the events they gave) and at the chunks of sends that
moved; after a restore, a flatten or a new strategy it splits the whole account
(:func:`split_changed`). Either gives the same parts.

Readers that need the account, not the order ids (the API, the equity sampler, ``tradebot
status``), read ``_rest`` and the symbols' parts only (:func:`read_account_snapshot`).
"""

from __future__ import annotations

import itertools
import json
import marshal
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, checkpoint_parts_key

REST, SYMBOLS = "_rest", "_symbols"
HOT = "_cash"  # cash, commissions, peak equity, trade stats, the count of sends: moved by nearly every order
PRICES = "_prices"  # how far the paper execution read each tick stream (moves with the ticks, alone)
POSITION, ORDER, DECISION, SENT = "p:", "o:", "d:", "s:"
SENT_CHUNK = 16
ACCOUNT_PARTITION = 0
Ordinals = dict[str, dict[str, int]]  # DECISION / ORDER -> each id's place (see _numbered)


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def split(snapshot: dict[str, Any], ordinals: Ordinals) -> dict[str, str]:
    """Every part of a snapshot; ``ordinals`` numbers the risk stage's decisions and the broker's
    order ids (new ones are numbered here, forgotten ones dropped), so such a part never changes
    once written."""
    parts, ids = split_changed(snapshot, ordinals, every_id=True)
    return parts | {name: value for name, value in ids.items() if value is not None}


@dataclass
class Encoded:
    """What a split encoded, kept for the next one, which encodes again only what changed (compared
    marshalled: exact, -0.0 and 0.0 and 1 and 1.0 apart, in C): each symbol's state and the
    strategies with its part, and each chunk of the last minute's sends with its part (a minute of
    sends at 60 orders/s is 225 chunks, of which a commit changes the last and maybe the first),
    and which sends the chunks held (numbers ``first`` to ``sends``: what :func:`split_touched`
    starts from)."""

    symbols: dict[str, tuple[bytes, bytes, str]] = field(default_factory=dict)
    sends: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    sent_range: tuple[int, int] | None = None
    strategies: list[str] | None = None


def split_changed(
    snapshot: dict[str, Any],
    ordinals: Ordinals,
    *,
    every_id: bool = False,
    encoded: Encoded | None = None,
) -> tuple[dict[str, str], dict[str, str | None]]:
    """The parts of a snapshot but those of order and decision ids, and the id parts that changed
    since ``ordinals`` was last numbered: a new id's part (with ``every_id``: every id's), None
    for a forgotten one. An id's part never changes once written, so a commit pays for the ids it
    adds and drops, not for the days of them it keeps. ``encoded`` (what the last split with it
    encoded) spares encoding the symbols and sends that did not change again."""
    ids: dict[str, str | None] = {}
    per_symbol: dict[str, dict[str, Any]] = {
        symbol: {"position": position} for symbol, position in snapshot["positions"].items()
    }
    parts, sent = _split_account(snapshot, ordinals, ids, every_id, per_symbol)
    if sent is not None:
        _split_sends(*sent, parts, encoded)
    parts[SYMBOLS] = compact(list(per_symbol))  # in the broker's order (a flatten follows it)
    strategies = list(snapshot.get("pnl") or {})
    if encoded is None:
        parts |= {POSITION + symbol: _encode_symbol(state, strategies) for symbol, state in per_symbol.items()}
    else:  # a symbol whose state is as last time keeps its part (marshal: exact, -0.0 and 1.0 apart, in C)
        encoded.strategies = strategies
        named, symbols = marshal.dumps(strategies), encoded.symbols
        for symbol, state in per_symbol.items():
            parts[POSITION + symbol] = _encoded_symbol(symbol, state, strategies, named, symbols)
        for symbol in symbols.keys() - per_symbol.keys():
            del symbols[symbol]
    _number_orders(snapshot, ordinals, ids, every_id)
    return parts, ids


def split_touched(
    snapshot: dict[str, Any], ordinals: Ordinals, encoded: Encoded, touched: set[str]
) -> tuple[dict[str, str | None], dict[str, str | None]] | None:
    """What :func:`split_changed` with ``encoded`` would give, when only the ``touched`` symbols'
    state may have changed since the split ``encoded`` remembers, at the cost of what changed:
    the account-wide parts, the parts of the touched symbols (None: a symbol's state is gone) and
    of the chunks of sends that moved (None: a chunk that left the minute), and the id parts that
    changed. The symbols' order is taken from each list of symbols in C, without their states.
    None when ``encoded`` cannot tell (no split made it, or the strategies changed: a strategy is
    written by its place)."""
    strategies = list(snapshot.get("pnl") or {})
    if encoded.sent_range is None or encoded.strategies != strategies:
        return None
    ids: dict[str, str | None] = {}
    per_symbol: dict[str, dict[str, Any]] = {}
    order = dict.fromkeys(snapshot["positions"])
    for symbol in touched & order.keys():
        per_symbol[symbol] = {"position": snapshot["positions"][symbol]}
    parts, sent = _split_account(snapshot, ordinals, ids, False, per_symbol, (touched, order))
    changed: dict[str, str | None] = {PRICES: None, **parts}  # (no positions read: no part)
    if sent is not None:
        _split_sends_moved(*sent, changed, encoded)
    changed[SYMBOLS] = compact(list(order))
    named, symbols = marshal.dumps(strategies), encoded.symbols
    for symbol in touched:
        if symbol in per_symbol:
            changed[POSITION + symbol] = _encoded_symbol(symbol, per_symbol[symbol], strategies, named, symbols)
        elif symbol not in order:  # nothing of it left
            changed[POSITION + symbol] = None
            symbols.pop(symbol, None)
    _number_orders(snapshot, ordinals, ids, False)
    return changed, ids


Touched = tuple[set[str], dict[str, None]]  # the symbols to collect the state of, and every symbol in order


def _split_account(
    snapshot: dict[str, Any],
    ordinals: Ordinals,
    ids: dict[str, str | None],
    every_id: bool,
    per_symbol: dict[str, dict[str, Any]],
    touched: Touched | None = None,
) -> tuple[dict[str, str], tuple[list[float], int] | None]:
    """The account-wide parts (``_rest``, ``_cash``, ``_prices``); each symbol's memory of the risk
    stage and holdings of the P&L go to ``per_symbol`` (with ``touched``: the touched symbols',
    the others only to its order); returns them with the last minute's sends and their count."""
    apart = ("positions", "seen_order_ids", "risk", "price_positions", "pnl")
    rest = {key: value for key, value in snapshot.items() if key not in apart}
    hot: dict[str, Any] = {short: rest.pop(key) for key, short in _HOT.items() if key in rest}
    sent = None
    if "risk" in snapshot:
        risk, decided, sent = _split_risk(dict(snapshot["risk"]), per_symbol, touched)
        hot |= {short: risk.pop(key) for key, short in _HOT_RISK.items() if key in risk}
        if "sends" in risk.get("windows", {}):
            hot[_SENDS] = risk["windows"].pop("sends")
        rest["risk"] = risk
        _numbered(DECISION, decided, ordinals, ids, every_id, lambda place, _: str(place))
    if "pnl" in snapshot:  # the strategies in their order (it orders sums); each symbol's holdings in its part
        pnl: dict[str, dict[str, list[float]]] = snapshot["pnl"] or {}
        rest["pnl"] = {strategy: {} for strategy in pnl}
        for strategy, book in pnl.items():
            if touched is not None:
                wanted, order = touched
                order.update(dict.fromkeys(book))
                book = {symbol: book[symbol] for symbol in wanted & book.keys()}
            for symbol, holding in book.items():
                per_symbol.setdefault(symbol, {}).setdefault("pnl", {})[strategy] = holding
    parts = {REST: compact(rest), HOT: COMPACT + compact(hot)}
    if snapshot.get("price_positions"):
        parts[PRICES] = compact(snapshot["price_positions"])
    return parts, sent


def _split_risk(
    risk: dict[str, Any], per_symbol: dict[str, dict[str, Any]], touched: Touched | None
) -> tuple[dict[str, Any], list[str], tuple[list[float], int]]:
    """The risk memory kept in ``_rest``; per-symbol memory goes to ``per_symbol`` (see
    _split_account); returns it with the decided ids, the last minute's send times and the count
    of sends ever."""
    windows = dict(risk.pop("windows", {}))
    marks = risk.pop("marks", {})
    by_symbol, last, cooldown = windows.pop("by_symbol", {}), windows.pop("last", {}), windows.pop("cooldown", {})
    if touched is None:
        for symbol, mark in marks.items():
            per_symbol.setdefault(symbol, {})["mark"] = mark
        for symbol, times in by_symbol.items():
            per_symbol.setdefault(symbol, {})["sent"] = times
        for name, at in last.items():
            symbol, _, side = name.rpartition(":")
            per_symbol.setdefault(symbol, {}).setdefault("last", {})[side] = at
        for symbol, until in cooldown.items():
            per_symbol.setdefault(symbol, {})["cooldown"] = until
    else:  # the same, for the touched symbols (in the same order of keys); the others only to the order
        wanted, order = touched
        for name, source in (("mark", marks), ("sent", by_symbol)):
            order.update(dict.fromkeys(source))
            for symbol in wanted & source.keys():
                per_symbol.setdefault(symbol, {})[name] = source[symbol]
        for name, at in last.items():  # in the dict's order: it orders a symbol's sides
            symbol, _, side = name.rpartition(":")
            order[symbol] = None
            if symbol in wanted:
                per_symbol.setdefault(symbol, {}).setdefault("last", {})[side] = at
        order.update(dict.fromkeys(cooldown))
        for symbol in wanted & cooldown.keys():
            per_symbol.setdefault(symbol, {})["cooldown"] = cooldown[symbol]
    sent = windows.pop("sent", [])
    if windows:
        risk["windows"] = windows
    return risk, risk.pop("decided", []), (sent, windows.get("sends", len(sent)))


def _chunks(sent: list[float], sends: int) -> range:
    """The chunks holding the sends numbered ``sends - len(sent)`` to ``sends`` (chunk n holds the
    sends numbered n * SENT_CHUNK onwards)."""
    first = sends - len(sent)
    return range(first // SENT_CHUNK, (sends - 1) // SENT_CHUNK + 1) if sent else range(0)


def _chunk_part(sent: list[float], sends: int, chunk: int, encoded: Encoded | None) -> str:
    first = sends - len(sent)
    times = sent[max(0, chunk * SENT_CHUNK - first) : (chunk + 1) * SENT_CHUNK - first]
    if encoded is None:
        return COMPACT + compact(pack_times(times))
    plain = marshal.dumps(times)
    before = encoded.sends.get(chunk)
    if before is None or before[0] != plain:
        before = encoded.sends[chunk] = (plain, COMPACT + compact(pack_times(times)))
    return before[1]


def _split_sends(sent: list[float], sends: int, parts: dict[str, str], encoded: Encoded | None) -> None:
    """The last minute's send times in parts of SENT_CHUNK sends (``encoded``: each chunk's as last
    split, see Encoded)."""
    chunks = _chunks(sent, sends)
    for chunk in chunks:
        parts[f"{SENT}{chunk}"] = _chunk_part(sent, sends, chunk, encoded)
    if encoded is not None:
        for chunk in [chunk for chunk in encoded.sends if chunk not in chunks]:
            del encoded.sends[chunk]
        encoded.sent_range = (sends - len(sent), sends)


def _split_sends_moved(sent: list[float], sends: int, parts: dict[str, str | None], encoded: Encoded) -> None:
    """The chunks of sends that changed since ``encoded.sent_range``, None for a chunk that left
    the minute. A send's time never changes (sends are added at the end and leave the minute at the
    front), so only the first chunk (when sends left it) and the chunks from the last one before
    on (when sends came) can have changed."""
    assert encoded.sent_range is not None
    was_first, was_sends = encoded.sent_range
    first, now = sends - len(sent), _chunks(sent, sends)
    before = range(was_first // SENT_CHUNK, (was_sends - 1) // SENT_CHUNK + 1) if was_sends > was_first else range(0)
    if first < was_first or sends < was_sends:  # not moved on from there (it cannot be): every chunk
        every: dict[str, str] = {}
        _split_sends(sent, sends, every, encoded)
        parts |= {f"{SENT}{chunk}": None for chunk in before if chunk not in now}
        parts |= every
        return
    for chunk in before:
        if chunk not in now:
            parts[f"{SENT}{chunk}"] = None
            encoded.sends.pop(chunk, None)
    moved = range(max(now.start, before.stop - 1), now.stop) if before else now
    if first != was_first and now:
        parts[f"{SENT}{now.start}"] = _chunk_part(sent, sends, now.start, encoded)
    for chunk in moved:
        parts[f"{SENT}{chunk}"] = _chunk_part(sent, sends, chunk, encoded)
    encoded.sent_range = (first, sends)


def _encoded_symbol(
    symbol: str,
    state: dict[str, Any],
    strategies: list[str],
    named: bytes,
    symbols: dict[str, tuple[bytes, bytes, str]],
) -> str:
    """A symbol's part, encoded again only when its state (or the strategies) changed."""
    plain = marshal.dumps(state)
    before = symbols.get(symbol)
    if before is None or before[0] != plain or before[1] != named:
        before = symbols[symbol] = (plain, named, _encode_symbol(state, strategies))
    return before[2]


def _number_orders(snapshot: dict[str, Any], ordinals: Ordinals, ids: dict[str, str | None], every_id: bool) -> None:
    seen: dict[str, float] = snapshot["seen_order_ids"]
    _numbered(ORDER, seen, ordinals, ids, every_id, lambda place, order_id: f"{place}:{seen[order_id]!r}")


def is_id_part(name: str) -> bool:
    """Whether a part is an order's or a decision's (written once, deleted when forgotten)."""
    return name.startswith((ORDER, DECISION))


def _numbered(
    prefix: str,
    ids: list[str] | dict[str, Any],
    ordinals: Ordinals,
    changed: dict[str, str | None],
    every_id: bool,
    part: Callable[[int, str], str],
) -> None:
    """Number each id once, in list order (its place, kept in ``ordinals[prefix]`` in place order),
    and put in ``changed`` the part of each new id (of every id with ``every_id``) and None for each
    id no longer listed.

    Both lists of ids (the broker's order memory, days long, and the last decisions) only grow at
    the end and are forgotten from the front, so a commit looks at what it added and dropped there
    (:func:`_moved_on`), and at the ids it keeps only to check, in C, that they are those numbered;
    anything else (a list restored from elsewhere) is diffed whole with set operations."""
    numbered = ordinals.setdefault(prefix, {})
    fresh = _moved_on(prefix, ids, numbered, changed)
    if fresh is None:
        listed = ids.keys() if isinstance(ids, dict) else set(ids)
        for order_id in numbered.keys() - listed:
            del numbered[order_id]
            changed[prefix + order_id] = None
        news = listed - numbered.keys()
        fresh = [order_id for order_id in ids if order_id in news] if news else []
    following = next(reversed(numbered.values()), 0) + 1 if numbered else 1
    for order_id in fresh:
        numbered[order_id], following = following, following + 1
    for order_id in ids if every_id else fresh:
        changed[prefix + order_id] = part(numbered[order_id], order_id)


def _moved_on(
    prefix: str, ids: list[str] | dict[str, Any], numbered: dict[str, int], changed: dict[str, str | None]
) -> list[str] | None:
    """When ``ids`` are the numbered ones less some at the front, plus some at the end: drops those
    from ``numbered`` (None in ``changed``) and returns the new ones in order; else None, changing
    nothing. Checked exactly: what is kept must be the numbered ids in their order (a list compare
    of the ids, in C)."""
    listed = ids if isinstance(ids, dict) else dict.fromkeys(ids)
    gone = 0
    for order_id in numbered:  # the oldest first
        if order_id in listed:
            break
        gone += 1
    fresh: list[str] = []
    for order_id in reversed(ids):
        if order_id in numbered:
            break
        fresh.append(order_id)
    fresh.reverse()
    kept = len(listed) - len(fresh)
    if kept != len(numbered) - gone:
        return None
    # (lists compared in C, an element's identity first: ~3x sooner than map(operator.eq, …) in all)
    if list(itertools.islice(numbered, gone, None)) != list(itertools.islice(listed, kept)):
        return None
    for order_id in list(itertools.islice(numbered, gone)):
        del numbered[order_id]
        changed[prefix + order_id] = None
    return fresh


def join(parts: dict[str, str]) -> tuple[dict[str, Any], Ordinals]:
    """The snapshot the parts were split from, and the decisions' ordinals (parts of the layout
    before the compact one read too)."""
    snapshot: dict[str, Any] = json.loads(parts[REST])
    hot = _decode(parts[HOT]) if HOT in parts else {}
    snapshot |= {key: hot[short] for key, short in _HOT.items() if short in hot}
    if PRICES in parts:
        snapshot["price_positions"] = json.loads(parts[PRICES])
    strategies = list(snapshot.get("pnl") or {})
    per_symbol = {
        symbol: _decode_symbol(parts.get(POSITION + symbol, "{}"), strategies) for symbol in json.loads(parts[SYMBOLS])
    }
    snapshot["positions"] = {symbol: state["position"] for symbol, state in per_symbol.items() if "position" in state}
    if "pnl" in snapshot:
        pnl = snapshot["pnl"] = {strategy: dict(book) for strategy, book in (snapshot["pnl"] or {}).items()}
        for symbol, state in per_symbol.items():
            for strategy, holding in state.get("pnl", {}).items():
                pnl.setdefault(strategy, {})[symbol] = holding
    decisions = {name[len(DECISION) :]: int(value) for name, value in parts.items() if name.startswith(DECISION)}
    orders, seen = {}, {}
    for name, value in parts.items():
        if name.startswith(ORDER):
            place, _, at = value.partition(":")
            orders[name[len(ORDER) :]] = int(place)
            seen[name[len(ORDER) :]] = float(at)
    decisions, orders = _by_place(decisions), _by_place(orders)  # in place order, as _numbered keeps them
    ordinals: Ordinals = {DECISION: decisions, ORDER: orders}
    snapshot["seen_order_ids"] = {order_id: seen[order_id] for order_id in orders}
    if "risk" in snapshot:
        risk = snapshot["risk"]
        risk |= {key: hot[short] for key, short in _HOT_RISK.items() if short in hot}
        windows = risk.setdefault("windows", {})
        if _SENDS in hot:
            windows["sends"] = hot[_SENDS]
        chunks = sorted((int(name[len(SENT) :]), name) for name in parts if name.startswith(SENT))
        windows["sent"] = [at for _, name in chunks for at in unpack_times(_decode(parts[name]))]
        windows["by_symbol"] = {symbol: state["sent"] for symbol, state in per_symbol.items() if "sent" in state}
        windows["last"] = {
            f"{symbol}:{side}": at for symbol, state in per_symbol.items() for side, at in state.get("last", {}).items()
        }
        windows["cooldown"] = {symbol: state["cooldown"] for symbol, state in per_symbol.items() if "cooldown" in state}
        risk["marks"] = {symbol: state["mark"] for symbol, state in per_symbol.items() if "mark" in state}
        risk["decided"] = list(decisions)
    return snapshot, ordinals


def _by_place(places: dict[str, int]) -> dict[str, int]:
    """The ids in their places."""
    return {order_id: places[order_id] for order_id in sorted(places, key=places.__getitem__)}


# ----- the compact encoding (``~`` and then JSON) ---------------------------------------------------
# A symbol's part is written with every order of the symbol, ``_cash`` with nearly every commit:
# keys abbreviated, a position as its values, lists of send times as whole-microsecond steps.
COMPACT = "~"
_HOT = {"cash": "c", "commissions": "f"}  # of the snapshot
_HOT_RISK = {"peak_equity": "p", "stats": "s"}  # of the risk memory
_SENDS = "n"  # the risk memory's count of sends ever (windows.sends)
_SYMBOL_KEYS = {"position": "p", "mark": "m", "sent": "t", "last": "l", "cooldown": "c", "pnl": "n"}
_SYMBOL_LONG = {short: key for key, short in _SYMBOL_KEYS.items()}
_POSITION_KEYS = ["quantity", "average_cost", "realised_pnl", "last_price"]  # tradebot/broker/paper.py Position
MICROS = 1_000_000


def _decode(part: str) -> Any:
    return json.loads(part[len(COMPACT) :] if part.startswith(COMPACT) else part)


def _encode_symbol(state: dict[str, Any], strategies: list[str]) -> str:
    """What can be derived is left out: a mark equal to the position's last price, a strategy's
    holding equal to the position (one strategy trading the symbol) are SAME; a strategy is its
    place among ``strategies`` (the P&L's, in ``_rest``)."""
    if not set(state) <= _SYMBOL_KEYS.keys():
        return compact(state)  # a state this layout does not know: plain, to read back exactly
    position = state.get("position")
    held = list(position.values()) if isinstance(position, dict) and list(position) == _POSITION_KEYS else None
    short: dict[str, Any] = {}
    for key, value in state.items():
        if key == "position" and held is not None:
            value = held
        elif key == "sent":
            value = pack_times(value)
        elif key == "mark" and held is not None and compact(value) == compact(held[-1]):
            value = SAME
        elif key == "pnl":
            value = [
                [
                    strategies.index(strategy) if strategy in strategies else strategy,
                    SAME if held is not None and compact(holding) == compact(held[:3]) else holding,
                ]
                for strategy, holding in value.items()
            ]
        short[_SYMBOL_KEYS[key]] = value
    return COMPACT + compact(short)


def _decode_symbol(part: str, strategies: list[str]) -> dict[str, Any]:
    if not part.startswith(COMPACT):
        loaded: dict[str, Any] = json.loads(part)
        return loaded
    state = {_SYMBOL_LONG[short]: value for short, value in json.loads(part[len(COMPACT) :]).items()}
    held = state.get("position")
    if isinstance(held, list):
        state["position"] = dict(zip(_POSITION_KEYS, held, strict=True))
    if "sent" in state:
        state["sent"] = unpack_times(state["sent"])
    if _is_same(state.get("mark")) and isinstance(held, list):
        state["mark"] = held[-1]
    if "pnl" in state:
        state["pnl"] = {
            strategies[strategy] if isinstance(strategy, int) else strategy: (
                held[:3] if _is_same(holding) and isinstance(held, list) else holding
            )
            for strategy, holding in state["pnl"]
        }
    return state


SAME = 0  # in a symbol's part: the value is the position's (no price, no holding is a bare 0)


def _is_same(value: object) -> bool:
    return type(value) is int and value == SAME


def pack_times(times: list[float]) -> list[float] | dict[str, Any]:
    """Epoch seconds as ``{"g": g, "d": [first, steps…]}``: the first as it is, then the steps in
    g microseconds (their common divisor), when each time is a whole number of microseconds (an
    event time's ``timestamp()``) and so reads back as exactly the same float; else as they are."""
    if len(times) < 2 or any(type(at) is not float or not math.isfinite(at) for at in times):
        return times
    micros = [round(at * MICROS) for at in times]
    if any(n / MICROS != at for at, n in zip(times, micros, strict=True)):
        return times
    steps = [b - a for a, b in itertools.pairwise(micros)]
    divisor = math.gcd(*steps) or 1
    return {"g": divisor, "d": [times[0], *(step // divisor for step in steps)]}


def unpack_times(packed: list[float] | dict[str, Any]) -> list[float]:
    if isinstance(packed, list):
        return packed
    first, *steps = packed["d"]
    times, at = [first], round(first * MICROS)
    for step in steps:
        at += step * packed["g"]
        times.append(at / MICROS)
    return times


async def read_account_snapshot(redis: aioredis.Redis) -> dict[str, Any] | None:
    """The account and risk memory as last committed (without the remembered order ids), or None
    before the first order. Checkpoints of the whole-string layout are read too, and a real broker's in
    the paper account's format (``as_paper_snapshot``)."""
    key = checkpoint_parts_key(EXECUTION_ROLE, ACCOUNT_PARTITION)
    rest, symbols, hot = await redis.hmget(key, [REST, SYMBOLS, HOT])
    if rest is None or symbols is None:
        saved = await redis.get(checkpoint_key(EXECUTION_ROLE, ACCOUNT_PARTITION))
        return as_paper_snapshot(json.loads(saved)) if saved else None
    names = [POSITION + symbol for symbol in json.loads(symbols)]
    values = await redis.hmget(key, names) if names else []
    parts = {REST: rest, SYMBOLS: symbols, **({HOT: hot} if hot else {})} | {
        name: value for name, value in zip(names, values, strict=True) if value
    }
    snapshot, _ = join(parts)
    return snapshot


def as_paper_snapshot(saved: dict[str, Any]) -> dict[str, Any]:
    """A real broker's checkpoint (its ``account``, tradebot/execution/broker_book.py) in the paper
    account's snapshot format, with its risk memory and P&L per strategy; any other as it is."""
    if "account" not in saved and "done" not in saved:
        return (
            saved  # the paper account's (``done``, the ledger's, marks a real broker's, even one without ``account``)
        )
    empty = {"cash": 0.0, "commissions": 0.0, "positions": {}, "seen_order_ids": {}}
    account = {key: value for key, value in {**empty, **saved.get("account", {})}.items() if key != "closing"}
    if account.get("starting_cash") is None:  # not read whole yet
        account["starting_cash"] = account.get("cash", 0.0)
    return {**account, "broker": "alpaca", "risk": saved.get("risk"), "pnl": saved.get("pnl")}
