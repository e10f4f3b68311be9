"""Response models of the history API (they are also its OpenAPI documentation)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from tradebot.common.models import Timeframe
from tradebot.storage.timescale import Mode


class ErrorOut(BaseModel):
    """What went wrong and what to change."""

    detail: str = Field(examples=["start (2024-03-09T00:00:00Z) is after end (2024-03-08T00:00:00Z)"])


class BarOut(BaseModel):
    """One OHLCV bar; ``timestamp`` is the start of its bucket (UTC). Prices are rounded as quoted:
    to the cent, or to 4 decimals below $1."""

    timestamp: datetime
    session_date: date | None = Field(
        None, description="daily bars only: the trading session's date (America/New_York), e.g. 2026-12-01"
    )
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float | None = Field(
        description="volume-weighted average price (4 decimals); null when a source bar had none"
    )


class HistoryOut(BaseModel):
    """Bars of one symbol and timeframe, oldest first."""

    symbol: str
    timeframe: Timeframe
    mode: Mode = Field(description="where tick aggregates came from: continuous aggregates or on the fly")
    sources: list[str] = Field(description="the sources these bars are built from (real data wins over mock)")
    count: int
    bars: list[BarOut]


class OhlcvOut(BaseModel):
    """The same bars as /history, column by column (what charting libraries take)."""

    symbol: str
    timeframe: Timeframe
    count: int
    timestamp: list[datetime]
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]
    trade_count: list[int]
    vwap: list[float | None]
    session_date: list[date] | None = Field(None, description="daily bars only: each bar's session date")


class SymbolOut(BaseModel):
    """A stored symbol: its time range and how many ticks and bars are stored."""

    symbol: str
    first: datetime
    last: datetime
    ticks: int
    bars: int
    sources: list[str] = Field(description="where its data comes from (mock, alpaca, polygon, ...); see ?source=")


class SymbolsOut(BaseModel):
    """Every symbol with stored data."""

    count: int
    symbols: list[SymbolOut]


class StatsOut(BaseModel):
    """Summary of the daily series (America/New_York days) over the requested range."""

    symbol: str
    first_day: datetime | None
    last_day: datetime | None
    first_session: date | None = Field(None, description="first_day as its trading date (America/New_York)")
    last_session: date | None = Field(None, description="last_day as its trading date (America/New_York)")
    days: int
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    change: float | None = Field(description="close - open")
    change_pct: float | None = Field(description="change / open * 100")
    volume: float | None
    trade_count: int | None
    vwap: float | None
    mean_daily_return: float | None = Field(description="mean close-to-close return, as a fraction")
    daily_return_stdev: float | None = Field(description="sample standard deviation of daily returns")


class WorkerOut(BaseModel):
    """A live worker, from its heartbeat key."""

    role: str
    consumer: str
    pid: int | None = None
    host: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    age_s: float | None = Field(None, description="seconds since the last heartbeat")
    counters: dict[str, int | float] = {}


class StreamOut(BaseModel):
    """One stream as seen by one consumer group."""

    stream: str
    group: str
    length: int
    pending: int
    lag: int | None = Field(description="entries not yet delivered to the group")


class RedisMemoryOut(BaseModel):
    """Redis memory against REDIS_MEMORY_BUDGET_MB: past it producers wait and live feeds record gaps."""

    used_bytes: int
    budget_bytes: int
    over_budget: bool


class GapOut(BaseModel):
    """Live events a feed could not publish while Redis could not take writes; gap repair fills them."""

    source: str
    symbols: list[str]
    first: datetime
    last: datetime
    dropped: int
    repaired: bool


class DatabaseOut(BaseModel):
    """Whether PostgreSQL answers, and which storage mode is active."""

    reachable: bool
    mode: Mode | None
    # Whether the read replica (DATABASE_READ_URL) answers; None when no replica is configured.
    replica_reachable: bool | None = None


class HealthOut(BaseModel):
    """Overall status (503 when degraded), database, Redis, workers and streams."""

    status: Literal["ok", "degraded"]
    database: DatabaseOut
    redis_reachable: bool | None = Field(description="null when REDIS_URL is not configured")
    workers: list[WorkerOut]
    streams: list[StreamOut]
    dead_letters: dict[str, int] = Field({}, description="records per dead-letter stream (`tradebot dlq`)")
    redis_memory: RedisMemoryOut | None = None
    gaps: list[GapOut] = Field([], description="gaps live feeds recorded (newest first)")
