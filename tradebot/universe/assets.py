"""The "all" universe: every active, tradable US stock from Alpaca's assets endpoint.

The filter rules are small pure functions over `ListedAsset`, so they are tested case by case.
The raw asset list (before our filters) is cached once per UTC day under `<data_dir>/universe/`,
so changing a filter setting never needs a refetch and every worker of the day sees the same list.
When the API is unreachable the newest cache is used with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, AssetStatus
from alpaca.trading.requests import GetAssetsRequest
from pydantic import ValidationError

from tradebot.common.config import Settings

logger = logging.getLogger(__name__)

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
MAIN_EXCHANGES = frozenset({"NYSE", "NASDAQ", "AMEX"})
# Alpaca reports NYSE Arca listings as ARCA or NYSEARCA; both are mostly ETFs, hence opt-in.
ARCA_BATS_EXCHANGES = frozenset({"ARCA", "NYSEARCA", "BATS"})
# Exchange test issues that appear in real symbol directories (Nasdaq, NYSE, Cboe).
TEST_SYMBOLS = frozenset(
    {"ZVZZT", "ZWZZT", "ZXZZT", "ZJZZT", "ZBZX", "ZVV", "ZXIET", "ZIEXT", "ZTEST", "NTEST", "ATEST", "CBO", "CBX"}
)
PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
CACHE_FILE_PATTERN = re.compile(r"^all-(\d{4}-\d{2}-\d{2})\.json$")

# Suffix conventions: NYSE/Alpaca style "ABC.WS", "ABC.U", "ABC.RT", "ABC.PRA"; Nasdaq uses a
# fifth letter (W warrant, R right, U unit), which only means that on five-letter Nasdaq symbols.
_WARRANT_SUFFIX = re.compile(r"[.\-](WS|WT|W)([.\-][A-Z])?$")
_RIGHT_SUFFIX = re.compile(r"[.\-](RT|R|RI)$")
_UNIT_SUFFIX = re.compile(r"[.\-](U|UN|UT)$")
_PREFERRED_SUFFIX = re.compile(r"[.\-]PR?[A-Z]?$")
_WARRANT_NAME = re.compile(r"\bwarrants?\b", re.IGNORECASE)
_RIGHT_NAME = re.compile(r"\brights\b|\bright to receive\b", re.IGNORECASE)
# "Unit Corporation" is a company, so only plural "Units" or "unit, each consisting" count.
_UNIT_NAME = re.compile(r"\bunits\b|\bunit,? each\b", re.IGNORECASE)
# "Preferred Bank" is a company; preferred shares say "preferred stock/shares" or "pfd".
_PREFERRED_NAME = re.compile(r"\bpreferred (stock|shares?|securities)\b|\bpfd\b|\bcumulative\b", re.IGNORECASE)
_TEST_NAME = re.compile(r"\btest\b", re.IGNORECASE)
_OS_ERROR = re.compile(r"\[Errno -?\d+\][^'\")]*")


class UniverseError(Exception):
    """The symbol universe cannot be resolved; the message says what to change."""


class AssetsUnavailableError(UniverseError):
    """Alpaca's assets endpoint could not be read (no keys, unreachable, bad answer)."""


@dataclass(frozen=True)
class ListedAsset:
    """The part of an Alpaca asset the filters need."""

    symbol: str
    exchange: str
    name: str = ""
    tradable: bool = True
    status: str = "active"
    asset_class: str = "us_equity"


@dataclass(frozen=True)
class FilterRules:
    """Which listed assets count as tradable stocks."""

    include_arca_bats: bool = False
    min_price: float | None = None
    max_price: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FilterRules:
        return cls(settings.include_arca_bats, settings.min_price, settings.max_price)


@dataclass
class FilterResult:
    """Symbols that passed, and how many assets each rule rejected."""

    symbols: list[str]
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class AssetSnapshot:
    """One day's asset list and where it came from."""

    day: date
    assets: list[ListedAsset]
    source: str  # "api", "cache" or "stale cache"


class AssetsClient(Protocol):
    def get_all_assets(self, filter: GetAssetsRequest | None = None) -> Any: ...


# --- filter rules: one pure function per rule ---


def is_valid_symbol(symbol: str) -> bool:
    """True when the symbol matches the ticker pattern every event model uses."""
    return bool(SYMBOL_PATTERN.match(symbol))


def is_active_and_tradable(asset: ListedAsset) -> bool:
    """Active, tradable and a US equity (the API filters the first and last; a cache may not)."""
    return asset.status == "active" and asset.tradable and asset.asset_class == "us_equity"


def is_on_allowed_exchange(asset: ListedAsset, include_arca_bats: bool) -> bool:
    """NYSE, NASDAQ or AMEX; ARCA and BATS too when INCLUDE_ARCA_BATS is set."""
    allowed = MAIN_EXCHANGES | ARCA_BATS_EXCHANGES if include_arca_bats else MAIN_EXCHANGES
    return asset.exchange in allowed


def _nasdaq_fifth_letter(asset: ListedAsset, letter: str) -> bool:
    symbol = asset.symbol
    return asset.exchange == "NASDAQ" and len(symbol) == 5 and symbol.isalpha() and symbol.endswith(letter)


def _marked(asset: ListedAsset, suffix: re.Pattern[str], name: re.Pattern[str]) -> bool:
    return bool(suffix.search(asset.symbol) or name.search(asset.name))


def is_warrant(asset: ListedAsset) -> bool:
    return _marked(asset, _WARRANT_SUFFIX, _WARRANT_NAME) or _nasdaq_fifth_letter(asset, "W")


def is_right(asset: ListedAsset) -> bool:
    return _marked(asset, _RIGHT_SUFFIX, _RIGHT_NAME) or _nasdaq_fifth_letter(asset, "R")


def is_unit(asset: ListedAsset) -> bool:
    return _marked(asset, _UNIT_SUFFIX, _UNIT_NAME) or _nasdaq_fifth_letter(asset, "U")


def is_preferred(asset: ListedAsset) -> bool:
    return _marked(asset, _PREFERRED_SUFFIX, _PREFERRED_NAME)


def is_test_symbol(asset: ListedAsset) -> bool:
    return asset.symbol in TEST_SYMBOLS or bool(_TEST_NAME.search(asset.name))


def is_within_price_range(price: float | None, min_price: float | None, max_price: float | None) -> bool:
    """An unknown price passes: the assets endpoint carries no prices."""
    if price is None:
        return True
    too_low = min_price is not None and price < min_price
    too_high = max_price is not None and price > max_price
    return not (too_low or too_high)


def rejection_reason(asset: ListedAsset, rules: FilterRules, price: float | None = None) -> str | None:
    """The first rule the asset fails, or None when it is a tradable stock."""
    checks = (
        ("inactive or not tradable", not is_active_and_tradable(asset)),
        ("exchange", not is_on_allowed_exchange(asset, rules.include_arca_bats)),
        ("symbol format", not is_valid_symbol(asset.symbol)),
        ("test symbol", is_test_symbol(asset)),
        ("warrant", is_warrant(asset)),
        ("right", is_right(asset)),
        ("unit", is_unit(asset)),
        ("preferred", is_preferred(asset)),
        ("price range", not is_within_price_range(price, rules.min_price, rules.max_price)),
    )
    return next((reason for reason, failed in checks if failed), None)


def filter_assets(
    assets: Iterable[ListedAsset], rules: FilterRules, prices: Mapping[str, float] | None = None
) -> FilterResult:
    """Sorted, de-duplicated symbols of the assets that pass every rule."""
    prices = prices or {}
    result = FilterResult(symbols=[])
    passed: set[str] = set()
    for asset in assets:
        reason = rejection_reason(asset, rules, prices.get(asset.symbol))
        if reason is None:
            passed.add(asset.symbol)
        else:
            result.rejected[reason] += 1
    result.symbols = sorted(passed)
    return result


# --- fetching through alpaca-py ---


def make_trading_client(settings: Settings) -> TradingClient:
    """alpaca-py's TradingClient (paper endpoint unless ALPACA_TRADING_URL overrides it)."""
    if settings.alpaca_key is None or settings.alpaca_secret is None:
        raise AssetsUnavailableError("ALPACA_KEY and ALPACA_SECRET are not set")
    return TradingClient(
        settings.alpaca_key.get_secret_value(),
        settings.alpaca_secret.get_secret_value(),
        paper=True,
        url_override=settings.alpaca_trading_url,
    )


def _describe_api_failure(error: Exception, base_url: str) -> str:
    if isinstance(error, APIError):
        body = " ".join(str(error).split())[:200]
        return f"Alpaca assets API answered HTTP {error.status_code}: {body}"
    if isinstance(error, ValidationError):
        return f"Alpaca assets API sent assets alpaca-py cannot read ({error.error_count()} errors)"
    # requests' messages are long urllib3 reprs; the errno text is the part a user can act on.
    reason = _OS_ERROR.search(str(error))
    return f"Alpaca assets API unreachable at {base_url} ({reason.group(0) if reason else type(error).__name__})"


def fetch_listed_assets(settings: Settings, client: AssetsClient | None = None) -> list[ListedAsset]:
    """Every active US equity Alpaca lists, as `ListedAsset`s; raises AssetsUnavailableError."""
    request = GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)
    try:
        trading_client = client if client is not None else make_trading_client(settings)
        assets = trading_client.get_all_assets(request)
    except (APIError, requests.RequestException, ValidationError) as error:
        base_url = settings.alpaca_trading_url or PAPER_TRADING_URL
        raise AssetsUnavailableError(_describe_api_failure(error, base_url)) from error
    return [_to_listed_asset(asset) for asset in assets]


def _to_listed_asset(asset: Any) -> ListedAsset:
    return ListedAsset(
        symbol=asset.symbol,
        exchange=_enum_value(asset.exchange),
        name=asset.name or "",
        tradable=asset.tradable,
        status=_enum_value(asset.status),
        asset_class=_enum_value(asset.asset_class),
    )


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


# --- the day cache ---


def cache_dir(data_dir: Path) -> Path:
    return data_dir / "universe"


def cache_path(data_dir: Path, day: date) -> Path:
    """`<data_dir>/universe/all-YYYY-MM-DD.json`: the file name carries the day it is valid for."""
    return cache_dir(data_dir) / f"all-{day.isoformat()}.json"


def utc_today() -> date:
    return datetime.now(UTC).date()


def write_cache(data_dir: Path, day: date, assets: list[ListedAsset]) -> Path:
    """Write the day's cache atomically (workers may resolve at once), then drop older days."""
    path = cache_path(data_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": day.isoformat(),
        "fetched_at": datetime.now(UTC).isoformat(),
        "assets": [asdict(asset) for asset in assets],
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".all-", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(payload, file)
    os.replace(temporary, path)
    _remove_older_caches(data_dir, day)
    return path


def _remove_older_caches(data_dir: Path, day: date) -> None:
    for cached_day, path in cached_days(data_dir):
        if cached_day < day:
            path.unlink(missing_ok=True)


def cached_days(data_dir: Path) -> list[tuple[date, Path]]:
    """Cache files found, newest first."""
    found = []
    directory = cache_dir(data_dir)
    for path in directory.glob("all-*.json") if directory.is_dir() else []:
        match = CACHE_FILE_PATTERN.match(path.name)
        if match:
            found.append((date.fromisoformat(match.group(1)), path))
    return sorted(found, reverse=True)


def read_cache(path: Path) -> list[ListedAsset] | None:
    """The cached assets, or None (with a warning) when the file is unreadable."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return [ListedAsset(**item) for item in payload["assets"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable universe cache %s: %s", path, error)
        return None


# --- cache or API ---


def refresh_assets(
    settings: Settings, *, today: date | None = None, client: AssetsClient | None = None
) -> AssetSnapshot:
    """Fetch from the API and rewrite today's cache; raises AssetsUnavailableError."""
    day = today or utc_today()
    assets = fetch_listed_assets(settings, client)
    write_cache(settings.data_dir, day, assets)
    logger.info("fetched %d assets from Alpaca; cached for %s", len(assets), day)
    return AssetSnapshot(day, assets, "api")


def load_assets(settings: Settings, *, today: date | None = None, client: AssetsClient | None = None) -> AssetSnapshot:
    """Today's cache, else the API, else the newest older cache with a warning."""
    day = today or utc_today()
    todays_path = cache_path(settings.data_dir, day)
    todays = read_cache(todays_path) if todays_path.exists() else None
    if todays is not None:
        return AssetSnapshot(day, todays, "cache")
    try:
        return refresh_assets(settings, today=day, client=client)
    except AssetsUnavailableError as error:
        return _fall_back_to_cache(settings.data_dir, day, error)


def _fall_back_to_cache(data_dir: Path, day: date, error: AssetsUnavailableError) -> AssetSnapshot:
    for cached_day, path in cached_days(data_dir):
        assets = read_cache(path)
        if assets is not None:
            age_days = (day - cached_day).days
            age = f"{age_days} day{'' if age_days == 1 else 's'} old"
            logger.warning("%s; using the cached universe from %s (%s)", error, cached_day, age)
            return AssetSnapshot(cached_day, assets, "stale cache")
    raise UniverseError(
        f"SYMBOL_MODE=all needs the asset list: {error}, and there is no cached universe in "
        f"{cache_dir(data_dir)}; set ALPACA_KEY/ALPACA_SECRET and run `manage_symbols.py fetch` "
        "while online, or choose another SYMBOL_MODE"
    ) from error


def all_symbols(
    settings: Settings,
    *,
    today: date | None = None,
    client: AssetsClient | None = None,
    prices: Mapping[str, float] | None = None,
) -> list[str]:
    """Every active, tradable US stock that passes the filters, sorted."""
    snapshot = load_assets(settings, today=today, client=client)
    result = filter_assets(snapshot.assets, FilterRules.from_settings(settings), prices)
    logger.info(
        "universe 'all' from %s of %s: %d of %d assets pass the filters",
        snapshot.source,
        snapshot.day,
        len(result.symbols),
        len(snapshot.assets),
    )
    return result.symbols
