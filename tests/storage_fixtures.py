"""Shared data for the storage and history tests: a deterministic market and an independent OHLCV.

``reference_bars`` aggregates ticks (and applies the documented precedence of stored bars) in
plain Python, sharing no code with tradebot/storage, so the SQL is checked against a second,
simple implementation.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tradebot.common.db import recreate_database
from tradebot.common.models import Bar, Tick
from tradebot.storage.schema import apply_migrations

NEW_YORK = ZoneInfo("America/New_York")
WIDTH_S = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
TIMEFRAMES = ["1m", "5m", "15m", "1h", "1d"]
# Friday before, and Monday and Tuesday after, the 2024 DST switch (Sunday 10 March).
DAYS = [
    datetime(2024, 3, 8, tzinfo=NEW_YORK),
    datetime(2024, 3, 11, tzinfo=NEW_YORK),
    datetime(2024, 3, 12, tzinfo=NEW_YORK),
]
RANGE_START = datetime(2024, 3, 8, tzinfo=UTC)
RANGE_END = datetime(2024, 3, 14, tzinfo=UTC)


def session_ticks(symbol: str, seed: int, step_s: int = 37) -> list[Tick]:
    """Trades every ``step_s`` seconds through each regular session, plus evening trades that fall
    after UTC midnight (they belong to the New York day they happened in)."""
    rng = random.Random(seed)
    price = 100.0
    ticks = []
    for day in DAYS:
        opening = day.replace(hour=9, minute=30)
        moments = [opening + timedelta(seconds=s) for s in range(0, 390 * 60, step_s)]
        moments += [day.replace(hour=19, minute=45), day.replace(hour=20, minute=30, second=15)]
        for moment in moments:
            price = round(max(1.0, price + rng.uniform(-0.3, 0.3)), 2)
            ticks.append(
                Tick.create(
                    symbol, price, rng.randint(1, 500), moment.astimezone(UTC), source="test", trade_id=len(ticks)
                )
            )
    return ticks


def bucket_of(moment: datetime, timeframe: str) -> datetime:
    """Bucket start, computed independently of tradebot.storage.buckets."""
    if timeframe == "1d":
        local = moment.astimezone(NEW_YORK)
        return datetime(local.year, local.month, local.day, tzinfo=NEW_YORK).astimezone(UTC)
    width = WIDTH_S[timeframe]
    return datetime.fromtimestamp(int(moment.timestamp()) // width * width, UTC)


@dataclass
class RefBar:
    """An expected bar (notional = vwap * volume, to roll up)."""

    timestamp: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    notional: float | None

    @property
    def vwap(self) -> float | None:
        return self.notional / self.volume if self.notional is not None and self.volume else None


def _combine(timestamp: datetime, parts: Sequence[RefBar]) -> RefBar:
    ordered = sorted(parts, key=lambda p: p.timestamp)
    notionals = [p.notional for p in ordered]
    return RefBar(
        timestamp,
        ordered[0].open,
        max(p.high for p in ordered),
        min(p.low for p in ordered),
        ordered[-1].close,
        sum(p.volume for p in ordered),
        sum(p.trade_count for p in ordered),
        None if None in notionals else sum(n for n in notionals if n is not None),
    )


def _group(items: Iterable[RefBar], timeframe: str) -> list[RefBar]:
    buckets: dict[datetime, list[RefBar]] = {}
    for item in items:
        buckets.setdefault(bucket_of(item.timestamp, timeframe), []).append(item)
    return [_combine(start, parts) for start, parts in sorted(buckets.items())]


def _from_tick(tick: Tick) -> RefBar:
    return RefBar(tick.timestamp, tick.price, tick.price, tick.price, tick.price, tick.size, 1, tick.price * tick.size)


def _from_bar(bar: Bar) -> RefBar:
    notional = bar.vwap * bar.volume if bar.vwap is not None else (0.0 if bar.volume == 0 else None)
    return RefBar(bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count, notional)


def _winners(bars: Iterable[Bar], timeframe: str) -> dict[datetime, RefBar]:
    """Stored bars of one timeframe, one per bucket: most volume wins, then source name."""
    best: dict[datetime, Bar] = {}
    for bar in sorted(bars, key=lambda b: (-b.volume, b.source)):
        best.setdefault(bucket_of(bar.timestamp, timeframe), bar)
    return {start: _from_bar(bar) for start, bar in best.items()}


def bucket_end(start: datetime, timeframe: str) -> datetime:
    """End of the bucket starting at ``start``: the next New York midnight for 1d."""
    if timeframe == "1d":
        following = start.astimezone(NEW_YORK).date() + timedelta(days=1)
        return datetime(following.year, following.month, following.day, tzinfo=NEW_YORK).astimezone(UTC)
    return start + timedelta(seconds=WIDTH_S[timeframe])


def _stored_over(
    finer: dict[datetime, RefBar], stored: dict[datetime, RefBar], timeframe: str, now: datetime | None
) -> dict[datetime, RefBar]:
    """A stored bar wins its bucket once the bucket has closed (always when ``now`` is None); a
    stored bar of a still open bucket only fills a bucket the finer series lacks."""
    merged = dict(finer)
    for start, bar in stored.items():
        if now is None or bucket_end(start, timeframe) <= now or start not in finer:
            merged[start] = bar
    return merged


def reference_bars(
    ticks: Sequence[Tick], timeframe: str, stored: Sequence[Bar] = (), now: datetime | None = None
) -> list[RefBar]:
    """The expected series: stored bars of the timeframe win their bucket; otherwise the 1-minute
    series (stored 1m bars over tick minutes) rolled up. With ``now``, stored bars of buckets that
    are still open at ``now`` give way to the finer series wherever it has data."""
    stored_minutes = _winners([b for b in stored if b.timeframe == "1m"], "1m")
    tick_minutes = {m.timestamp: m for m in _group(map(_from_tick, ticks), "1m")}
    minutes = _stored_over(tick_minutes, stored_minutes, "1m", now).values()
    series = {bar.timestamp: bar for bar in _group(minutes, timeframe)}
    if timeframe != "1m":
        series = _stored_over(
            series, _winners([b for b in stored if b.timeframe == timeframe], timeframe), timeframe, now
        )
    return [series[start] for start in sorted(series)]


def assert_same_bars(actual: Sequence[dict], expected: Sequence[RefBar]) -> None:
    """API bars equal the reference as quoted: times and counts exactly, volumes to 1e-9, prices
    rounded to the cent (4 decimals below $1) and VWAP to 4 decimals."""
    assert [_when(bar["timestamp"]) for bar in actual] == [bar.timestamp for bar in expected]
    for got, want in zip(actual, expected, strict=True):
        assert got["trade_count"] == want.trade_count, want.timestamp
        assert abs(got["volume"] - want.volume) <= 1e-9 * max(1.0, abs(got["volume"])), ("volume", want)
        for field in ("open", "high", "low", "close"):
            assert_quoted(got[field], getattr(want, field), 4 if abs(getattr(want, field)) < 1 else 2, (field, want))
        if want.vwap is None:
            assert got["vwap"] is None, want.timestamp
        else:
            assert_quoted(got["vwap"], want.vwap, 4, ("vwap", want))


def assert_quoted(shown: float, exact: float, decimals: int, context: object) -> None:
    """``shown`` is ``exact`` rounded to ``decimals`` (within float noise at a half-unit boundary)."""
    assert shown == round(shown, decimals), (context, shown)
    assert abs(shown - exact) <= 0.5 * 10**-decimals + 1e-9 * max(1.0, abs(exact)), (context, shown, exact)


def _when(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))


def minute_bar(
    symbol: str,
    start: datetime,
    source: str,
    price: float,
    volume: float,
    vwap: float | None = None,
    timeframe: str = "1m",
) -> Bar:
    """A stored bar with a recognisable shape: open/low at ``price``, high/close one above."""
    return Bar(
        id=Bar.bar_id(source, symbol, timeframe, start),
        symbol=symbol,
        timeframe=timeframe,  # type: ignore[arg-type]
        timestamp=start,
        open=price,
        high=price + 1,
        low=price,
        close=price + 1,
        volume=volume,
        trade_count=int(volume // 10),
        vwap=vwap,
        source=source,
    )


def session_database(name: str) -> str:
    """``name`` made unique to this test process, for servers several runs may share (TEST_TIMESCALE_DSN)."""
    return f"{name}_{os.getpid()}"


async def migrated_database(server_dsn: str, name: str) -> str:
    """A new, empty, migrated database on the server of ``server_dsn`` (isolated from other tests)."""
    dsn = await recreate_database(server_dsn, name)
    await apply_migrations(dsn)
    return dsn
