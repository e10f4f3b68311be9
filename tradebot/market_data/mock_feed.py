"""A deterministic mock trade feed: geometric Brownian motion around realistic prices.

Tick ``k`` of a symbol is a pure function of (seed, symbol, k, the price after tick ``k-1``): its
random draws come from a hash of (seed, symbol, k), not from a shared generator. So the feed can
resume from a tiny cursor (per-symbol tick count and price) without replaying history, and adding a
symbol never changes the path of another. Symbols take turns (round robin); each tick stands for
one second of trading when scaling the volatility, whatever the publishing rate.

Timestamps come from the cursor too, never from the wall clock: the n-th tick is stamped
``start + (n - origin) * step``, where ``start`` is the wall clock when the cursor was made (or
re-anchored) and ``step`` is one tick's share of a second at the configured rate. So a tick
regenerated from an older cursor (after Redis lost its last second of writes) is byte-identical
to the one published before, and its stored row is the same row, not a second one.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tradebot.common.codec import built_tick
from tradebot.common.models import MAX_PRICE, SYMBOL_PATTERN, Tick
from tradebot.market_data.start_prices import STARTING_PRICES

Clock = Callable[[], datetime]

SOURCE = "mock"
ANNUAL_VOLATILITY = 0.35
TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
TICK_STEP_YEARS = 1 / TRADING_SECONDS_PER_YEAR  # one tick = one second of trading
# Every shipped symbol starts near a real price; anything else gets a stable price from its name.
KNOWN_PRICES = STARTING_PRICES
DEFAULT_PRICE_CENTS = (2_000, 30_000)  # unknown symbols start between $20 and $300
DEFAULT_STEP = timedelta(milliseconds=10)
_WORDS = struct.Struct(">4Q")
_VALID_SYMBOL = re.compile(SYMBOL_PATTERN)


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def stepping_clock(start: datetime, step: timedelta = timedelta(milliseconds=10)) -> Clock:
    """A deterministic clock for tests and replays: each call returns ``step`` later than the last."""
    calls = 0

    def now() -> datetime:
        nonlocal calls
        calls += 1
        return start + step * (calls - 1)

    return now


def starting_price(symbol: str) -> float:
    """A realistic price for well-known tickers; a stable one derived from crc32 for the rest."""
    known = KNOWN_PRICES.get(symbol)
    if known is not None:
        return known
    low, high = DEFAULT_PRICE_CENTS
    return (low + zlib.crc32(symbol.encode()) % (high - low + 1)) / 100


def _uniforms(digest: bytes) -> tuple[float, float, float, float]:
    """The four big-endian 64-bit words of a 32-byte digest, as uniforms in (0, 1)."""
    first, second, third, fourth = _WORDS.unpack(digest)
    return (first + 0.5) / 2**64, (second + 0.5) / 2**64, (third + 0.5) / 2**64, (fourth + 0.5) / 2**64


class _Draws:
    """Four uniforms in (0, 1) for each tick index of one symbol: blake2b of ``seed|symbol|index``.

    The hash state of ``seed|symbol|`` is made once and copied per tick (hashing is streaming, so
    the digest is that of the whole string: the same numbers as ever, for the same inputs)."""

    def __init__(self, seed: int, symbol: str):
        self.prefix = hashlib.blake2b(f"{seed}|{symbol}|".encode(), digest_size=32)

    def at(self, index: int) -> tuple[float, float, float, float]:
        hashed = self.prefix.copy()
        hashed.update(str(index).encode())
        return _uniforms(hashed.digest())


def trade_size(kind: float, amount: float) -> int:
    """Half odd lots (1-99 shares), most of the rest round lots, a few blocks up to 5,000."""
    if kind < 0.5:
        return 1 + int(amount * 99)
    if kind < 0.9:
        return 100 * (1 + int(amount * 5))
    return 100 * (5 + int(amount * 46))


def next_price(price: float, normal: float) -> float:
    """One GBM step without drift: the expected price stays put, the log-price diffuses."""
    sigma = ANNUAL_VOLATILITY
    return price * math.exp(-0.5 * sigma**2 * TICK_STEP_YEARS + sigma * math.sqrt(TICK_STEP_YEARS) * normal)


def step_for(ticks_per_second: float) -> timedelta:
    """The mock clock's advance per tick at a total rate (whole microseconds, at least one)."""
    return timedelta(microseconds=max(1, round(1_000_000 / ticks_per_second)))


@dataclass(frozen=True)
class FeedClock:
    """The feed's clock: tick ``n`` is stamped ``start + (n - origin) * step``."""

    start: datetime
    origin: int
    step: timedelta

    def at(self, produced: int) -> datetime:
        return self.start + (produced - self.origin) * self.step

    def with_step(self, produced: int, step: timedelta) -> FeedClock:
        """The same clock continuing at another rate from tick ``produced`` (a changed setting)."""
        return self if step == self.step else FeedClock(self.at(produced), produced, step)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "origin": self.origin,
            "step_us": self.step // timedelta(microseconds=1),
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> FeedClock:
        start = datetime.fromisoformat(saved["start"]).astimezone(UTC)
        return cls(start, saved["origin"], timedelta(microseconds=saved["step_us"]))


@dataclass
class SymbolPath:
    """Where one symbol's random walk stands: ticks made so far and the unrounded price."""

    count: int
    price: float


class MockFeed:
    """Generates ticks round robin over ``symbols``; resumable from :meth:`cursor`."""

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int,
        *,
        clock: Clock = utc_now,
        cursor: dict[str, Any] | None = None,
        step: timedelta = DEFAULT_STEP,
    ):
        """``clock`` is read once, for a new cursor's start; ``step`` is the time between two ticks."""
        if not symbols:
            raise ValueError("the mock feed needs at least one symbol")
        invalid = [symbol for symbol in symbols if not _VALID_SYMBOL.fullmatch(symbol)]
        if invalid:
            raise ValueError(f"the mock feed cannot trade invalid symbols: {', '.join(invalid)}")
        self.symbols = list(symbols)
        self.seed = seed
        self._draws = {symbol: _Draws(seed, symbol) for symbol in self.symbols}
        saved = cursor or {}
        self.produced: int = saved.get("produced", 0)
        # Paths of symbols no longer traded are kept, so re-adding one never reuses a tick id.
        self.paths = {symbol: _path(saved_path) for symbol, saved_path in saved.get("paths", {}).items()}
        for symbol in self.symbols:
            self.paths.setdefault(symbol, SymbolPath(0, starting_price(symbol)))
        if "clock" in saved:
            self.clock = FeedClock.from_json(saved["clock"]).with_step(self.produced, step)
        else:  # a new cursor (or one from before the clock was kept): start now, to the millisecond
            now = clock().astimezone(UTC)
            self.clock = FeedClock(now.replace(microsecond=now.microsecond // 1000 * 1000), self.produced, step)

    def next_tick(self) -> Tick:
        """The next trade print in the sequence.

        Built without pydantic's per-tick validation (the feed's hottest cost): the symbols were
        checked once, sizes are whole shares from 1 to 5,000, the clock is UTC, and the price is
        checked here, so the tick is the one ``Tick.create`` would make.
        """
        symbol = self.symbols[self.produced % len(self.symbols)]
        path = self.paths[symbol]
        u_radius, u_angle, u_kind, u_amount = self._draws[symbol].at(path.count)
        normal = math.sqrt(-2 * math.log(u_radius)) * math.cos(2 * math.pi * u_angle)  # Box-Muller
        path.price = next_price(path.price, normal)
        price = max(0.01, round(path.price, 2))
        if price > MAX_PRICE:
            raise ValueError(f"mock price of {symbol} ran past {MAX_PRICE:,.0f}")
        size = float(trade_size(u_kind, u_amount))
        tick = built_tick(f"{SOURCE}:{symbol}:{path.count}", symbol, self.clock.at(self.produced), price, size, SOURCE)
        path.count += 1
        self.produced += 1
        return tick

    def take(self, count: int) -> list[Tick]:
        """The next ``count`` ticks."""
        return [self.next_tick() for _ in range(count)]

    def cursor(self) -> dict[str, Any]:
        """JSON-ready position of the feed; a feed built from it continues the same sequence."""
        return {
            "produced": self.produced,
            "seed": self.seed,
            "clock": self.clock.to_json(),
            # [count, price]: the cursor is rewritten with every batch, so every byte counts in the AOF
            "paths": {symbol: [p.count, p.price] for symbol, p in self.paths.items()},
        }


def _path(saved: list[Any] | dict[str, Any]) -> SymbolPath:
    """A symbol's path from a cursor: ``[count, price]``, or ``{"count", "price"}`` (older cursors)."""
    return SymbolPath(**saved) if isinstance(saved, dict) else SymbolPath(*saved)
