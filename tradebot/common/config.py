"""One settings class for every worker, built once at start-up and passed down.

Field names map to environment variables by upper-casing them (``redis_url`` ← ``REDIS_URL``), so
the seed's names keep working. A bad value stops start-up with one line naming what to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SymbolMode = Literal["popular", "large", "mid", "small", "all", "custom"]


class Settings(BaseSettings):
    """Every setting of tradebot; see env.example for the commented list."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- infrastructure: unset URLs mean "start the embedded servers" ---
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path(".tradebot")
    embedded_redis_port: int = Field(6390, ge=1, le=65535)
    embedded_postgres_port: int = Field(5490, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- bus ---
    tick_partitions: int = Field(8, ge=1, le=256)
    stream_maxlen: int = Field(1_000_000, ge=1000)
    bus_batch_size: int = Field(500, ge=1, le=10_000)
    bus_block_ms: int = Field(1000, ge=1)
    claim_idle_ms: int = Field(15_000, ge=100)
    max_deliveries: int = Field(5, ge=1)
    lease_ttl_ms: int = Field(6000, ge=500)
    heartbeat_ttl_s: int = Field(15, ge=2)
    grace_period_s: float = Field(10.0, gt=0)
    # test / batch mode: stop after this many messages, or once the input is drained (burst)
    max_messages: int | None = Field(None, ge=1)
    burst: bool = False

    # --- symbol universe ---
    symbol_mode: SymbolMode = "popular"
    symbols: Annotated[list[str], NoDecode] = []
    max_symbols: int = Field(100, ge=1)
    max_websocket_symbols: int = Field(30, ge=1)
    include_arca_bats: bool = False
    min_price: float | None = Field(None, ge=0)
    max_price: float | None = Field(None, gt=0)

    # --- mock market data ---
    mock_ticks_per_second: float = Field(500.0, gt=0)  # ~5 ticks/s per symbol: signals within seconds
    mock_seed: int = 42
    mock_max_ticks: int | None = Field(None, ge=1)

    # --- strategy ---
    short_window: int = Field(5, ge=1)
    long_window: int = Field(20, ge=2)
    order_quantity: float = Field(10.0, gt=0)
    # A TOML file of [[strategy]] tables (docs/STRATEGIES.md); unset = one crossover of the windows above.
    strategies_file: Path | None = None

    # --- execution (paper broker) ---
    starting_cash: float = Field(100_000.0, gt=0)
    slippage_bps: float = Field(1.0, ge=0)
    commission_per_share: float = Field(0.005, ge=0)

    # --- history API ---
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)

    # --- providers (secrets are SecretStr so they never print) ---
    alpaca_key: SecretStr | None = None
    alpaca_secret: SecretStr | None = None
    alpaca_feed: Literal["iex", "sip"] = "iex"
    alpaca_stream_url: str | None = None
    alpaca_data_url: str | None = None
    alpaca_trading_url: str | None = None
    polygon_api_key: SecretStr | None = None
    polygon_feed: Literal["realtime", "delayed"] = "realtime"
    polygon_stream_host: str | None = None
    polygon_rest_url: str | None = None

    # --- backfill ---
    backfill_days: int = Field(90, ge=1)
    backfill_minute_days: int = Field(5, ge=0)
    backfill_concurrent_requests: int = Field(4, ge=1, le=64)
    backfill_batch_size: int = Field(50, ge=1)
    rate_limit_delay: float = Field(0.0, ge=0)
    # Seconds of silence before a provider REST request (backfill, gap repair) is retried.
    provider_timeout_s: float = Field(10.0, gt=0, le=300)

    # --- TimescaleDB ---
    chunk_interval: str | None = None
    compress_after: str = "7 days"
    tick_retention: str | None = None

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("grace_period_s")
    @classmethod
    def _grace_outlasts_a_read(cls, value: float, info) -> float:  # type: ignore[no-untyped-def]
        block_ms = info.data.get("bus_block_ms")
        if block_ms is not None and block_ms >= value * 1000:
            raise ValueError(
                f"must be longer than BUS_BLOCK_MS ({block_ms} ms), or a stopping worker is cut off "
                "in the middle of a blocking read"
            )
        return value

    @field_validator("long_window")
    @classmethod
    def _long_after_short(cls, value: int, info) -> int:  # type: ignore[no-untyped-def]
        short = info.data.get("short_window")
        if short is not None and value <= short:
            raise ValueError(f"must be greater than SHORT_WINDOW ({short})")
        return value


class SettingsError(SystemExit):
    """Start-up stops with one line that names the setting to fix."""


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (and .env), or exit with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        given = first.get("input")
        shown = "" if name in _SECRET_NAMES or isinstance(given, dict) else f" (got {given!r})"
        raise SettingsError(f"invalid setting {name}{shown}: {first['msg']}; set {name} to a valid value") from None


_SECRET_NAMES = {"ALPACA_KEY", "ALPACA_SECRET", "POLYGON_API_KEY", "DATABASE_URL", "REDIS_URL"}


def redact_url(url: str | None) -> str:
    """Where a server is, without the credentials in its URL (for logs and summaries)."""
    if not url or "@" not in url:
        return url or "-"
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
