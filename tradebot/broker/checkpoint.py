"""The paper account's checkpoint in parts, so a commit writes what its orders changed, not the account.

The whole snapshot (PaperBroker's plus the risk stage's memory) holds every client order id the
broker remembers (days of them) and the risk stage's last thousand decisions: rewritten whole on
every commit it cost more AOF bytes than everything else together, and more with every order. In
parts (fields of the ``checkpoint_parts:execution:{0}`` hash):

- ``_rest``: cash, commissions, the risk engine's account-wide memory;
- ``_symbols``: the symbols that have a part, in the broker's order;
- ``_prices``: how far the ticks of each partition were read for the resting orders
  (tradebot/execution/prices.py; rewritten as they are read, without the rest);
- ``p:<symbol>``: that symbol's position, mark and rate-limit memory (written when it changed);
- ``s:<n>``: the risk stage's last minute of sends (all symbols), 64 to a part, numbered by the
  count of sends before them (written as they fill, deleted as the window leaves them);
- ``o:<client order id>``: an order the broker executed, ``<place>:<time>`` (written once; deleted
  when it ages out of ORDER_MEMORY_DAYS);
- ``d:<order id>``: an order the risk stage decided, with its place in the decision order
  (written once; deleted when it leaves the last thousand).

Every list keeps its exact order (a place number per entry): the rate and age checks pop from the
front, so a restored account decides exactly as the uninterrupted one would.

Readers that need the account, not the order ids (the API, the equity sampler, ``tradebot
status``), read ``_rest`` and the symbols' parts only (:func:`read_account_snapshot`).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from tradebot.common.streams import EXECUTION_ROLE, checkpoint_key, checkpoint_parts_key

REST, SYMBOLS = "_rest", "_symbols"
PRICES = "_prices"  # how far the paper execution read each tick stream (moves with the ticks, alone)
POSITION, ORDER, DECISION, SENT = "p:", "o:", "d:", "s:"
SENT_CHUNK = 64
ACCOUNT_PARTITION = 0


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def split(snapshot: dict[str, Any], ordinals: dict[str, int]) -> dict[str, str]:
    """Every part of a snapshot; ``ordinals`` numbers the risk stage's decisions (new ones are
    numbered here, forgotten ones dropped), so a decision's part never changes once written."""
    apart = ("positions", "seen_order_ids", "risk", "price_positions")
    rest = {key: value for key, value in snapshot.items() if key not in apart}
    per_symbol: dict[str, dict[str, Any]] = {
        symbol: {"position": position} for symbol, position in snapshot["positions"].items()
    }
    parts: dict[str, str] = {}
    if "risk" in snapshot:
        risk, decided = _split_risk(dict(snapshot["risk"]), per_symbol, parts)
        rest["risk"] = risk
        numbered = _numbered(DECISION, decided, ordinals)
        parts |= {DECISION + order_id: str(number) for order_id, number in numbered.items()}
    parts[REST] = compact(rest)
    if snapshot.get("price_positions"):
        parts[PRICES] = compact(snapshot["price_positions"])
    parts[SYMBOLS] = compact(list(per_symbol))  # in the broker's order (a flatten follows it)
    parts |= {POSITION + symbol: compact(state) for symbol, state in per_symbol.items()}
    seen: dict[str, float] = snapshot["seen_order_ids"]
    places = _numbered(ORDER, list(seen), ordinals)
    parts |= {ORDER + order_id: f"{places[order_id]}:{at!r}" for order_id, at in seen.items()}
    return parts


def _split_risk(
    risk: dict[str, Any], per_symbol: dict[str, dict[str, Any]], parts: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """The risk memory kept in ``_rest``; per-symbol memory goes to ``per_symbol``, the last
    minute's send times to one part per second (``parts``); returns it with the decided ids."""
    for symbol, mark in risk.pop("marks", {}).items():
        per_symbol.setdefault(symbol, {})["mark"] = mark
    windows = dict(risk.pop("windows", {}))
    for symbol, times in windows.pop("by_symbol", {}).items():
        per_symbol.setdefault(symbol, {})["sent"] = times
    for name, at in windows.pop("last", {}).items():
        symbol, _, side = name.rpartition(":")
        per_symbol.setdefault(symbol, {}).setdefault("last", {})[side] = at
    for symbol, until in windows.pop("cooldown", {}).items():
        per_symbol.setdefault(symbol, {})["cooldown"] = until
    sent = windows.pop("sent", [])
    first = windows.get("sends", len(sent)) - len(sent)  # the number of the oldest send kept
    chunks: dict[int, list[float]] = {}
    for place, at in enumerate(sent, first):
        chunks.setdefault(place // SENT_CHUNK, []).append(at)
    parts |= {f"{SENT}{chunk}": compact(times) for chunk, times in chunks.items()}
    if windows:
        risk["windows"] = windows
    return risk, risk.pop("decided", [])


def _numbered(prefix: str, ids: list[str], ordinals: dict[str, int]) -> dict[str, int]:
    """Each id's place (kept in ``ordinals`` under prefix + id): numbered once, in list order."""
    kept = {prefix + order_id for order_id in ids}
    for name in [name for name in ordinals if name.startswith(prefix) and name not in kept]:
        del ordinals[name]
    following = max((n for name, n in ordinals.items() if name.startswith(prefix)), default=0) + 1
    for order_id in ids:
        if prefix + order_id not in ordinals:
            ordinals[prefix + order_id], following = following, following + 1
    return {order_id: ordinals[prefix + order_id] for order_id in ids}


def join(parts: dict[str, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """The snapshot the parts were split from, and the decisions' ordinals."""
    snapshot: dict[str, Any] = json.loads(parts[REST])
    if PRICES in parts:
        snapshot["price_positions"] = json.loads(parts[PRICES])
    per_symbol = {symbol: json.loads(parts.get(POSITION + symbol, "{}")) for symbol in json.loads(parts[SYMBOLS])}
    snapshot["positions"] = {symbol: state["position"] for symbol, state in per_symbol.items() if "position" in state}
    ordinals = {name: int(value) for name, value in parts.items() if name.startswith(DECISION)}
    seen = {}
    for name, value in parts.items():
        if name.startswith(ORDER):
            place, _, at = value.partition(":")
            ordinals[name] = int(place)
            seen[name[len(ORDER) :]] = float(at)
    snapshot["seen_order_ids"] = {order_id: seen[order_id] for order_id in _in_order(ORDER, ordinals)}
    if "risk" in snapshot:
        risk = snapshot["risk"]
        windows = risk.setdefault("windows", {})
        chunks = sorted((int(name[len(SENT) :]), name) for name in parts if name.startswith(SENT))
        windows["sent"] = [at for _, name in chunks for at in json.loads(parts[name])]
        windows["by_symbol"] = {symbol: state["sent"] for symbol, state in per_symbol.items() if "sent" in state}
        windows["last"] = {
            f"{symbol}:{side}": at for symbol, state in per_symbol.items() for side, at in state.get("last", {}).items()
        }
        windows["cooldown"] = {symbol: state["cooldown"] for symbol, state in per_symbol.items() if "cooldown" in state}
        risk["marks"] = {symbol: state["mark"] for symbol, state in per_symbol.items() if "mark" in state}
        risk["decided"] = _in_order(DECISION, ordinals)
    return snapshot, ordinals


def _in_order(prefix: str, ordinals: dict[str, int]) -> list[str]:
    """The ids numbered under ``prefix``, in their places."""
    return [
        name[len(prefix) :] for name in sorted((n for n in ordinals if n.startswith(prefix)), key=ordinals.__getitem__)
    ]


async def read_account_snapshot(redis: aioredis.Redis) -> dict[str, Any] | None:
    """The account and risk memory as last committed (without the remembered order ids), or None
    before the first order. Checkpoints of the whole-string layout are read too, and a real broker's in
    the paper account's format (``as_paper_snapshot``)."""
    key = checkpoint_parts_key(EXECUTION_ROLE, ACCOUNT_PARTITION)
    rest, symbols = await redis.hmget(key, [REST, SYMBOLS])
    if rest is None or symbols is None:
        saved = await redis.get(checkpoint_key(EXECUTION_ROLE, ACCOUNT_PARTITION))
        return as_paper_snapshot(json.loads(saved)) if saved else None
    names = [POSITION + symbol for symbol in json.loads(symbols)]
    values = await redis.hmget(key, names) if names else []
    parts = {REST: rest, SYMBOLS: symbols} | {name: value for name, value in zip(names, values, strict=True) if value}
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
