"""One settings class for every worker, built once at start-up and passed down.

Field names map to environment variables by upper-casing them (``redis_url`` ← ``REDIS_URL``), so
the seed's names keep working. A bad value stops start-up with one line naming what to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SymbolMode = Literal["popular", "large", "mid", "small", "all", "custom"]
SizingMode = Literal["fixed_quantity", "fixed_notional", "fixed_fractional", "atr", "kelly", "equal_risk"]


class Settings(BaseSettings):
    """Every setting of tradebot; see env.example for the commented list."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- infrastructure: unset URLs mean "start the embedded servers" ---
    redis_url: str | None = None
    # REDIS_URL names one node of a Redis Cluster: the bus uses redis-py's cluster client (keys of a
    # partition share a slot through their {p} hash tag, see common/streams.py).
    redis_cluster: bool = False
    database_url: str | None = None
    # A read replica for the API's history, symbols, stats, activity and UDF; unset = DATABASE_URL.
    # Migrations and every write keep DATABASE_URL.
    database_read_url: str | None = None
    data_dir: Path = Path(".tradebot")
    embedded_redis_port: int = Field(6390, ge=1, le=65535)
    embedded_postgres_port: int = Field(5490, ge=1, le=65535)
    # the embedded Redis refuses writes (OOM) past this rather than evict a cursor or checkpoint
    embedded_redis_maxmemory: str = Field("2gb", pattern=r"(?i)^[1-9][0-9]*(b|kb|mb|gb)?$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- bus ---
    tick_partitions: int = Field(8, ge=1, le=256)
    # Redis memory (INFO used_memory) past which producers that can wait do, and live feeds buffer
    # then record gaps. Streams are trimmed by consumer progress, never by length.
    redis_memory_budget_mb: float = Field(1024.0, gt=0)
    # A commit counts only once this many replicas have it (Redis WAIT); 0 = once its master has it.
    redis_min_replicas: int = Field(0, ge=0, le=16)
    # Events a live feed holds while Redis cannot take writes; past this it records a gap.
    live_buffer_events: int = Field(50_000, ge=100)
    bus_batch_size: int = Field(500, ge=1, le=10_000)
    # Ticks a publisher puts in one stream entry (a tick-batch entry, schema version 2) at most;
    # every per-entry cost (the entry's own bytes, reads, acks) is shared by them. 1 = one per entry.
    bus_ticks_per_entry: int = Field(16, ge=1, le=1000)
    bus_block_ms: int = Field(1000, ge=1)
    claim_idle_ms: int = Field(15_000, ge=100)
    max_deliveries: int = Field(5, ge=1)
    lease_ttl_ms: int = Field(6000, ge=500)
    # The strategy writes its state (the symbol parts) in a snapshot every this many tick entries per
    # partition or this many seconds; in between a commit writes only the outputs and the position.
    strategy_snapshot_entries: int = Field(2000, ge=1)
    strategy_snapshot_s: float = Field(30.0, gt=0)
    heartbeat_ttl_s: int = Field(15, ge=2)
    grace_period_s: float = Field(10.0, gt=0)
    # exit code of a worker stopped by SIGINT/SIGTERM; `tradebot up` sets 143 for its workers so it
    # can tell a stop it did not ask for (restart) from a finished burst / max-messages run (exit 0)
    stopped_exit_code: int = Field(0, ge=0, le=255)
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
    # one share: the default demo can hold every symbol of its universe at once, within the risk limits
    order_quantity: float = Field(1.0, gt=0)
    # A TOML file of [[strategy]] tables (docs/STRATEGIES.md); unset = one crossover of the windows above.
    strategies_file: Path | None = None

    # --- execution (paper broker) ---
    starting_cash: float = Field(100_000.0, gt=0)
    # Half a spread of about 3 cents on the default universe's ~$318 average price: what a one-share
    # market order in large caps pays. Alpaca, the real broker here, charges no commission on US
    # equities. (1 bp and $0.005 made the demo's crossover lose its 3 % daily limit in 42 minutes.)
    slippage_bps: float = Field(0.5, ge=0)
    commission_per_share: float = Field(0.0, ge=0)
    # how long (days of order time) the paper broker remembers executed client order ids
    order_memory_days: float = Field(7.0, gt=0, le=366)
    # symbols the paper broker treats as not fractionable (Alpaca's asset flag), so fractional
    # and notional orders can be rehearsed on paper: they are rejected for these
    paper_not_fractionable: Annotated[list[str], NoDecode] = []

    # --- execution broker (docs/BROKERS.md) ---
    execution_broker: Literal["paper", "alpaca"] = "paper"
    alpaca_paper: bool = True  # live trading needs ALPACA_PAPER=false AND ALPACA_LIVE_CONFIRM
    alpaca_live_confirm: str | None = None
    alpaca_trading_stream_url: str | None = None
    alpaca_requests_per_minute: int = Field(190, ge=1, le=100_000)  # Alpaca allows 200 per account
    alpaca_timeout_s: float = Field(10.0, gt=0, le=120)
    alpaca_poll_interval_s: float = Field(2.0, gt=0, le=600)  # REST polling while the stream is down
    reconcile_interval_s: float = Field(60.0, gt=0, le=86_400)
    reconcile_tolerance: float = Field(1e-6, ge=0)  # shares a position may differ before trading halts

    # --- risk (tradebot/risk, docs/RISK.md); a limit of 0 switches its check off ---
    risk_max_order_notional: float = Field(50_000.0, ge=0)
    risk_max_position_pct: float = Field(0.15, ge=0, le=1)
    risk_max_gross_exposure_pct: float = Field(0.90, ge=0, le=10)
    risk_max_open_positions: int = Field(100, ge=0)  # as many as the default universe (MAX_SYMBOLS)
    risk_max_orders_per_second: int = Field(100, ge=0)
    risk_max_orders_per_minute: int = Field(2_000, ge=0)
    risk_max_symbol_orders_per_second: int = Field(5, ge=0)
    risk_max_symbol_orders_per_minute: int = Field(60, ge=0)
    risk_duplicate_window_s: float = Field(1.0, ge=0)
    risk_price_collar_pct: float = Field(0.10, ge=0)
    risk_daily_loss_pct: float = Field(0.03, ge=0, le=1)
    risk_max_drawdown_pct: float = Field(0.15, ge=0, le=1)
    risk_cooldown_s: float = Field(0.0, ge=0)
    risk_loss_lock_count: int = Field(0, ge=0)
    risk_loss_lock_window_s: float = Field(3600.0, ge=0)
    risk_loss_lock_s: float = Field(900.0, ge=0)
    # the trading state a data gap in a held or traded symbol sets (off: none)
    risk_data_gap_state: Literal["reducing", "halted", "off"] = "reducing"
    # auto: enforce for a real broker, off for the paper broker (the mock demo trades at any hour)
    market_hours: Literal["auto", "enforce", "off"] = "auto"
    position_sizing: SizingMode = "fixed_quantity"
    sizing_notional: float = Field(5_000.0, gt=0)
    sizing_risk_pct: float = Field(0.01, gt=0, le=1)
    sizing_stop_pct: float = Field(0.02, gt=0, le=1)
    sizing_atr_multiple: float = Field(2.0, gt=0)
    sizing_kelly_fraction: float = Field(0.5, gt=0, le=1)
    sizing_kelly_cap: float = Field(0.10, gt=0, le=1)
    fractional_shares: bool = False
    # exits on every tick, in the strategy role (0 = off)
    exit_stop_loss_pct: float = Field(0.0, ge=0, le=1)
    exit_take_profit_pct: float = Field(0.0, ge=0)
    exit_trailing_pct: float = Field(0.0, ge=0, le=1)
    # the ATR stop: entry less this many ATRs (0 = off), the ATR over EXIT_ATR_WINDOW bars of EXIT_ATR_TIMEFRAME
    exit_atr_multiple: float = Field(0.0, ge=0)
    exit_take_profit_atr_multiple: float = Field(0.0, ge=0)  # the ATR target: entry plus this many ATRs (0 = off)
    exit_atr_window: int = Field(14, ge=1, le=10_000)
    exit_atr_timeframe: Literal["tick", "1m", "5m", "15m", "1h", "1d"] = "1m"
    equity_sample_s: float = Field(60.0, gt=0)

    # --- history API ---
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # uvicorn worker processes of the API on that port (each with its own pools; >1 uses more cores)
    api_workers: int = Field(1, ge=1, le=32)
    # MiB of encoded /history responses of closed windows each API process keeps (0 = none)
    history_cache_mb: int = Field(8, ge=0, le=4096)

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

    # --- monitoring ---
    # tradebot up logs a one-line activity summary this often; 0 turns it off.
    summary_interval_s: float = Field(30.0, ge=0)

    # --- TimescaleDB ---
    chunk_interval: str | None = None
    compress_after: str = "7 days"
    tick_retention: str | None = None

    # --- operator surface: auth, exposure, live streams ---
    # Bearer token for every mutating endpoint; required to bind the API beyond loopback.
    api_token: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = []  # empty: CORS closed
    api_max_body_bytes: int = Field(65_536, ge=1024, le=64 * 1024 * 1024)
    ws_queue_size: int = Field(1000, ge=10, le=1_000_000)  # messages a slow WebSocket client may lag
    # TradingView alert webhooks: the shared secret in the alert body; unset = the endpoint answers 403
    webhook_secret: SecretStr | None = None
    webhook_rate_per_minute: int = Field(60, ge=1, le=10_000)
    webhook_dedup_days: float = Field(7.0, gt=0, le=365)

    # --- alerts (the alerts role): each channel is used when its settings are given ---
    alert_telegram_token: SecretStr | None = None
    alert_telegram_chat_id: str | None = None
    alert_telegram_api_url: str = "https://api.telegram.org"
    alert_discord_webhook_url: SecretStr | None = None
    alert_slack_webhook_url: SecretStr | None = None
    alert_smtp_host: str | None = None
    alert_smtp_port: int = Field(587, ge=1, le=65535)
    alert_smtp_user: str | None = None
    alert_smtp_password: SecretStr | None = None
    alert_email_from: str = "tradebot@localhost"
    alert_email_to: str | None = None
    alert_reminder_minutes: float = Field(60.0, gt=0)  # one alert per incident, a reminder this often
    alert_rate_per_minute: int = Field(20, ge=1, le=1000)  # per channel
    alert_check_s: float = Field(15.0, gt=0)  # how often worker heartbeats are checked
    # The daily summary (P&L, fills, denials, positions, gaps, worker incidents), once per NYSE session
    alert_daily_summary: bool = True
    alert_daily_summary_after_close_minutes: int = Field(10, ge=0, le=480)  # when: minutes after the close

    @field_validator("api_token", "webhook_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        # `API_TOKEN=` in a .env file means "not set", never "the empty token"
        return None if value == "" else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("symbols", "paper_not_fractionable", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator("grace_period_s")
    @classmethod
    def _grace_outlasts_a_read(cls, value: float, info: ValidationInfo) -> float:
        block_ms = info.data.get("bus_block_ms")
        if block_ms is not None and block_ms >= value * 1000:
            raise ValueError(
                f"must be longer than BUS_BLOCK_MS ({block_ms} ms), or a stopping worker is cut off "
                "in the middle of a blocking read"
            )
        return value

    @field_validator("long_window")
    @classmethod
    def _long_after_short(cls, value: int, info: ValidationInfo) -> int:
        short = info.data.get("short_window")
        if short is not None and value <= short:
            raise ValueError(f"must be greater than SHORT_WINDOW ({short})")
        return value


class ReadySettings(Settings):
    """Settings once start-up has found or started the servers (``runtime.infrastructure``): workers
    receive these, so REDIS_URL and DATABASE_URL are always there."""

    redis_url: str
    database_url: str

    @classmethod
    def resolved(cls, settings: Settings, *, redis_url: str, database_url: str) -> ReadySettings:
        """``settings`` with the server URLs filled in."""
        return cls(**{**dict(settings), "redis_url": redis_url, "database_url": database_url})


# EX_CONFIG from sysexits.h: a setting is wrong, so restarting the process cannot help.
CONFIG_ERROR_EXIT = 78


class SettingsError(Exception):
    """A setting (or key) is missing or wrong; the message is the one line that says what to set.

    Entry points end with that line and CONFIG_ERROR_EXIT (``runtime.bootstrap``, ``runtime.serve``).
    """


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment (and .env), or raise SettingsError with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        given = first.get("input")
        shown = "" if name in _SECRET_NAMES or isinstance(given, dict) else f" (got {given!r})"
        raise SettingsError(f"invalid setting {name}{shown}: {first['msg']}; set {name} to a valid value") from None


_SECRET_NAMES = {
    "ALPACA_KEY",
    "ALPACA_SECRET",
    "POLYGON_API_KEY",
    "DATABASE_URL",
    "DATABASE_READ_URL",
    "REDIS_URL",
    "API_TOKEN",
    "WEBHOOK_SECRET",
}


def redact_url(url: str | None) -> str:
    """Where a server is, with only the password in its URL hidden (for logs and summaries).

    A user name is not a secret, and showing it tells a reader which account connects."""
    if not url or "@" not in url:
        return url or "-"
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    credentials, location = rest.rsplit("@", 1)
    user, has_password, _ = credentials.partition(":")
    shown = f"{user}:***" if has_password else user
    return f"{scheme}://{shown}@{location}" if scheme else f"{shown}@{location}"
