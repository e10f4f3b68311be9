"""Provider-neutral market events and deterministic synthetic data for the emulators.

`Trade` and `Bar` are what tests hand to the emulators; each emulator encodes them into its
provider's wire format. `BarDataset` holds bars per (symbol, timeframe) for the REST emulators,
and `BarDataset.generate` builds a reproducible one: prices depend only on (symbol, minute), so
the same query always returns the same bars, whatever the range asked for. The historical trades
the REST emulators serve are derived from the minute bars (`minute_trades`: four prints per
minute, open, high, low and close, their sizes adding up to the volume, ids fixed per minute), so
a test can also send exactly those trades live.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
_trade_ids = itertools.count(1)


def utc_now() -> datetime:
    """Current time as an aware UTC datetime."""
    return datetime.now(UTC)


def parse_time(value: str | datetime | date) -> datetime:
    """Parse an ISO-8601 string, date or datetime into an aware UTC datetime (naive means UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Trade:
    """One trade print; `None` fields get provider-typical defaults when encoded."""

    symbol: str
    price: float
    size: float = 100
    timestamp: datetime = field(default_factory=utc_now)
    id: int = field(default_factory=lambda: next(_trade_ids))
    exchange: str | int | None = None
    conditions: tuple[Any, ...] | None = None
    tape: str | int | None = None


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar; `timestamp` is the start of the bar window (UTC)."""

    symbol: str
    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int = 1
    vwap: float | None = None

    @property
    def effective_vwap(self) -> float:
        """VWAP, falling back to the typical price when none was given."""
        if self.vwap is not None:
            return self.vwap
        return round((self.high + self.low + self.close) / 3, 4)


def as_event(item: Trade | Bar | Mapping[str, Any]) -> Trade | Bar:
    """Coerce a plain dict into a Trade (has `price`) or Bar (has `open`)."""
    if isinstance(item, (Trade, Bar)):
        return item
    fields = dict(item)
    if "timestamp" in fields:
        fields["timestamp"] = parse_time(fields["timestamp"])
    if "price" in fields:
        return Trade(**fields)
    if "open" in fields:
        return Bar(**fields)
    raise ValueError(f"cannot tell whether {item!r} is a trade (price) or a bar (open)")


@dataclass(frozen=True, order=True)
class Timeframe:
    """A bar size such as 1 minute, 5 minutes, 1 hour or 1 day."""

    amount: int
    unit: str  # "minute", "hour" or "day" (Polygon's spelling)

    _ALPACA_UNITS: ClassVar[dict[str, str]] = {
        "Min": "minute",
        "T": "minute",
        "Hour": "hour",
        "H": "hour",
        "Day": "day",
        "D": "day",
    }

    @classmethod
    def parse_alpaca(cls, text: str) -> Timeframe:
        """Parse Alpaca's `1Min` / `5Min` / `1Hour` / `1Day` spelling."""
        match = re.fullmatch(r"(\d+)(Min|T|Hour|H|Day|D)", text)
        if not match:
            raise ValueError(f"unsupported timeframe {text!r}")
        return cls(int(match[1]), cls._ALPACA_UNITS[match[2]])

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse `1Min`-style or `1/minute`-style text."""
        if "/" in text:
            amount, unit = text.split("/")
            return cls(int(amount), unit)
        return cls.parse_alpaca(text)

    @property
    def minutes(self) -> int:
        """Length in minutes (a day counts as one trading session bucket)."""
        return self.amount * {"minute": 1, "hour": 60, "day": 1440}[self.unit]


MINUTE = Timeframe(1, "minute")
DAY = Timeframe(1, "day")


def _unit_noise(*parts: object) -> float:
    """A reproducible pseudo-random number in [0, 1) derived from `parts`."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def synthetic_price(symbol: str, at: datetime) -> float:
    """A smooth, reproducible price for `symbol` at minute `at` (no state, any order)."""
    minute = int(at.timestamp() // 60)
    base = 50 + 450 * _unit_noise(symbol)
    drift = 0.03 * math.sin(minute / 2000) + 0.01 * math.sin(minute / 97)
    jitter = 0.002 * (_unit_noise(symbol, minute) - 0.5)
    return round(base * (1 + drift + jitter), 2)


def session_minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    """Minute starts in [start, end) inside the regular NYSE session (09:30-16:00 ET, Mon-Fri)."""
    day = start.astimezone(NEW_YORK).date()
    while day <= end.astimezone(NEW_YORK).date():
        if day.weekday() < 5:
            opening = datetime.combine(day, time(9, 30), tzinfo=NEW_YORK).astimezone(UTC)
            for offset in range(390):
                moment = opening + timedelta(minutes=offset)
                if start <= moment < end:
                    yield moment
        day += timedelta(days=1)


def synthetic_minute_bar(symbol: str, at: datetime) -> Bar:
    """The reproducible one-minute bar for `symbol` starting at `at`."""
    first = synthetic_price(symbol, at)
    last = synthetic_price(symbol, at + timedelta(minutes=1))
    spread = 1 + 0.001 * _unit_noise(symbol, "range", at)
    volume = 100 * (1 + int(50 * _unit_noise(symbol, "volume", at)))
    high, low = round(max(first, last) * spread, 2), round(min(first, last) / spread, 2)
    return Bar(
        symbol,
        at,
        first,
        high,
        low,
        last,
        volume,
        trade_count=max(1, volume // 100),
        vwap=round((first + high + low + last) / 4, 4),
    )


TRADE_OFFSETS_S = (1, 15, 30, 50)  # when in its minute each of a bar's four trades prints


def minute_trades(bar: Bar) -> list[Trade]:
    """The trades behind a one-minute bar: open, high, low, close, with stable ids per minute."""
    epoch_minute = int(bar.timestamp.timestamp() // 60)
    part = bar.volume // len(TRADE_OFFSETS_S)
    sizes = [part, part, part, bar.volume - 3 * part]
    prices = (bar.open, bar.high, bar.low, bar.close)
    return [
        Trade(bar.symbol, price, size, bar.timestamp + timedelta(seconds=offset), id=epoch_minute * 10 + number)
        for number, (offset, price, size) in enumerate(zip(TRADE_OFFSETS_S, prices, sizes, strict=True))
    ]


def aggregate(bars: Sequence[Bar], timeframe: Timeframe) -> list[Bar]:
    """Roll one-minute bars up into `timeframe` bars (daily bars are stamped at NY midnight)."""
    buckets: dict[datetime, list[Bar]] = {}
    for bar in bars:
        if timeframe.unit == "day":
            local_day = bar.timestamp.astimezone(NEW_YORK).date()
            key = datetime.combine(local_day, time(), tzinfo=NEW_YORK).astimezone(UTC)
        else:
            epoch_minute = int(bar.timestamp.timestamp() // 60)
            key = datetime.fromtimestamp((epoch_minute - epoch_minute % timeframe.minutes) * 60, UTC)
        buckets.setdefault(key, []).append(bar)
    rolled = []
    for key, group in buckets.items():
        volume = sum(bar.volume for bar in group)
        vwap = sum(bar.effective_vwap * bar.volume for bar in group) / volume
        rolled.append(
            Bar(
                group[0].symbol,
                key,
                group[0].open,
                max(b.high for b in group),
                min(b.low for b in group),
                group[-1].close,
                volume,
                sum(b.trade_count for b in group),
                round(vwap, 4),
            )
        )
    return rolled


class BarDataset:
    """Bars per (symbol, timeframe), sorted by time; other intraday sizes roll up from minutes."""

    def __init__(self, bars: Mapping[Timeframe | str, Mapping[str, Iterable[Bar]]] | None = None):
        self._bars: dict[tuple[str, Timeframe], list[Bar]] = {}
        for timeframe, per_symbol in (bars or {}).items():
            for symbol, series in per_symbol.items():
                self.add(symbol, timeframe, series)

    @classmethod
    def generate(
        cls,
        symbols: Iterable[str],
        start: datetime | str,
        end: datetime | str,
        timeframes: Iterable[Timeframe | str] = (MINUTE, DAY),
    ) -> BarDataset:
        """Reproducible session bars for `symbols` in [start, end) at each timeframe."""
        dataset = cls()
        minutes = list(session_minutes(parse_time(start), parse_time(end)))
        for symbol in symbols:
            minute_bars = [synthetic_minute_bar(symbol, moment) for moment in minutes]
            for timeframe in timeframes:
                timeframe = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
                series = minute_bars if timeframe == MINUTE else aggregate(minute_bars, timeframe)
                dataset.add(symbol, timeframe, series)
        return dataset

    def add(self, symbol: str, timeframe: Timeframe | str, bars: Iterable[Bar]) -> None:
        """Add (or replace) the series for one symbol and timeframe."""
        timeframe = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
        self._bars[(symbol, timeframe)] = sorted(bars, key=lambda bar: bar.timestamp)

    @property
    def symbols(self) -> list[str]:
        """All symbols that have at least one series."""
        return sorted({symbol for symbol, _ in self._bars})

    def trades(self, symbol: str, start: datetime | None = None, end: datetime | None = None) -> list[Trade]:
        """The trades of the minute bars (see ``minute_trades``) with start <= timestamp <= end."""
        return [
            trade
            for bar in self._bars.get((symbol, MINUTE), [])
            for trade in minute_trades(bar)
            if (start is None or trade.timestamp >= start) and (end is None or trade.timestamp <= end)
        ]

    def bars(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[Bar]:
        """Bars with start <= timestamp <= end (both optional, both inclusive)."""
        timeframe = Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
        series = self._bars.get((symbol, timeframe))
        if series is None and timeframe.unit != "day" and (symbol, MINUTE) in self._bars:
            series = aggregate(self._bars[(symbol, MINUTE)], timeframe)
        return [
            bar
            for bar in series or []
            if (start is None or bar.timestamp >= start) and (end is None or bar.timestamp <= end)
        ]
