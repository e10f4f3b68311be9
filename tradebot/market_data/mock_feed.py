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

from tradebot.common.codec import TickRow, built_tick
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


def _draws(seed: int, symbol: str) -> Any:
    """The hash state of ``seed|symbol|``: a tick's four uniforms in (0, 1) are the four big-endian
    64-bit words of the 32-byte blake2b of ``seed|symbol|index``, ``(word + 0.5) / 2**64`` each.

    The state is made once and copied per tick (hashing is streaming, so the digest is that of the
    whole string: the same numbers as ever, for the same inputs)."""
    return hashlib.blake2b(f"{seed}|{symbol}|".encode(), digest_size=32)


# One GBM step without drift (the expected price stays put, the log-price diffuses) multiplies the
# price by exp(_DRIFT + _SHOCK * normal): the constants as ``-0.5 * sigma**2 * T + sigma * sqrt(T) *
# normal`` evaluates them (left to right), so the step is the same float as when they were not folded.
_DRIFT = -0.5 * ANNUAL_VOLATILITY**2 * TICK_STEP_YEARS
_SHOCK = ANNUAL_VOLATILITY * math.sqrt(TICK_STEP_YEARS)
_TWO_PI = 2 * math.pi  # as ``2 * math.pi * u`` evaluates it
_TWO_64 = float(2**64)  # exact: ``word / 2**64`` converts the int to this same float on every division


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


@dataclass(slots=True)
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
        saved = cursor or {}
        self.produced: int = saved.get("produced", 0)
        # Paths of symbols no longer traded are kept, so re-adding one never reuses a tick id.
        self.paths = {symbol: _path(saved_path) for symbol, saved_path in saved.get("paths", {}).items()}
        for symbol in self.symbols:
            self.paths.setdefault(symbol, SymbolPath(0, starting_price(symbol)))
        # per symbol, in turn order: what making its next tick needs (the path is the one in paths)
        self._lanes = [
            (symbol, f"{SOURCE}:{symbol}:", _draws(seed, symbol), self.paths[symbol]) for symbol in self.symbols
        ]
        if "clock" in saved:
            self.clock = FeedClock.from_json(saved["clock"]).with_step(self.produced, step)
        else:  # a new cursor (or one from before the clock was kept): start now, to the millisecond
            now = clock().astimezone(UTC)
            self.clock = FeedClock(now.replace(microsecond=now.microsecond // 1000 * 1000), self.produced, step)

    def next_tick(self) -> Tick:
        """The next trade print in the sequence."""
        return self.take(1)[0]

    def take(self, count: int) -> list[Tick]:
        """The next ``count`` ticks.

        Built without pydantic's per-tick validation (the feed's hottest cost): the values are the
        checked ones of :meth:`rows`, so each tick is the one ``Tick.create`` would make.
        """
        return [built_tick(*row) for row in self.rows(count)]

    def rows(self, count: int) -> list[TickRow]:
        """The next ``count`` ticks as plain values (what :meth:`take` makes Ticks of): the
        publishing worker encodes these straight into entries, without a Tick object per tick.

        One loop with everything it touches at hand, because this is the feed's whole per-tick
        cost: the symbols were checked once, sizes are whole shares from 1 to 5,000, the clock is
        UTC and exact (each stamp is the last plus one step: ``FeedClock.at``'s value), and the
        price is checked here.
        """
        lanes = self._lanes
        lane_count = len(lanes)
        produced = self.produced
        stamp, step = self.clock.at(produced), self.clock.step
        unpack, log, sqrt, cos, exp = _WORDS.unpack, math.log, math.sqrt, math.cos, math.exp
        made: list[TickRow] = []
        append = made.append
        for _ in range(count):
            symbol, id_prefix, draws, path = lanes[produced % lane_count]
            index = path.count
            hashed = draws.copy()  # the four uniforms: see _draws
            hashed.update(b"%d" % index)  # the bytes of str(index).encode(), without the str
            first, second, third, fourth = unpack(hashed.digest())
            u_radius, u_angle = (first + 0.5) / _TWO_64, (second + 0.5) / _TWO_64
            normal = sqrt(-2 * log(u_radius)) * cos(_TWO_PI * u_angle)  # Box-Muller
            path.price = path.price * exp(_DRIFT + _SHOCK * normal)  # one GBM step
            price = round(path.price, 2)
            if price < 0.01:
                price = 0.01
            elif price > MAX_PRICE:
                self.produced = produced  # the ticks made before this one stay made
                raise ValueError(f"mock price of {symbol} ran past {MAX_PRICE:,.0f}")
            u_kind, u_amount = (third + 0.5) / _TWO_64, (fourth + 0.5) / _TWO_64
            # the size: half odd lots (1-99 shares), most of the rest round lots, a few blocks up to
            # 5,000 (whole shares, as the tick's float); inline, as a call per tick was ~5 % of the loop
            if u_kind < 0.5:
                size = float(1 + int(u_amount * 99))
            elif u_kind < 0.9:
                size = float(100 * (1 + int(u_amount * 5)))
            else:
                size = float(100 * (5 + int(u_amount * 46)))
            append((f"{id_prefix}{index}", symbol, stamp, price, size, SOURCE))
            path.count = index + 1
            produced += 1
            stamp += step
        self.produced = produced
        return made

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
