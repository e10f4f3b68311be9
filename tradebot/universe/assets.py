"""The "all" universe: every active, tradable US stock from Alpaca's assets endpoint.

This module fetches the asset list through alpaca-py and decides where it comes from: today's
cache (`tradebot.universe.cache`), else the API, else the newest older cache with a warning.
The filter rules live in `tradebot.universe.filters`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import requests
from pydantic import ValidationError

from tradebot.common.config import Settings
from tradebot.universe.cache import (
    cache_dir,
    describe_age,
    newest_readable_cache,
    read_day_cache,
    write_cache,
)
from tradebot.universe.filters import FilterRules, ListedAsset, filter_assets

if TYPE_CHECKING:  # alpaca-py (and the pandas it imports, ~30 MiB) is loaded only to fetch assets
    from alpaca.trading.client import TradingClient
    from alpaca.trading.requests import GetAssetsRequest

logger = logging.getLogger(__name__)

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
_OS_ERROR = re.compile(r"\[Errno -?\d+\][^'\")]*")


class UniverseError(Exception):
    """The symbol universe cannot be resolved; the message says what to change."""


class AssetsUnavailableError(UniverseError):
    """Alpaca's assets endpoint could not be read (no keys, unreachable, bad answer)."""


@dataclass(frozen=True)
class AssetSnapshot:
    """One day's asset list and where it came from."""

    day: date
    assets: list[ListedAsset]
    source: str  # "api", "cache" or "stale cache"


class AssetsClient(Protocol):
    def get_all_assets(self, filter: GetAssetsRequest | None = None) -> Any: ...


# --- fetching through alpaca-py ---


def make_trading_client(settings: Settings) -> TradingClient:
    """alpaca-py's TradingClient (paper endpoint unless ALPACA_TRADING_URL overrides it)."""
    from alpaca.trading.client import TradingClient

    if settings.alpaca_key is None or settings.alpaca_secret is None:
        raise AssetsUnavailableError("ALPACA_KEY and ALPACA_SECRET are not set")
    return TradingClient(
        settings.alpaca_key.get_secret_value(),
        settings.alpaca_secret.get_secret_value(),
        paper=True,
        url_override=settings.alpaca_trading_url,
    )


def _describe_api_failure(error: Exception, base_url: str) -> str:
    from alpaca.common.exceptions import APIError

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
    from alpaca.common.exceptions import APIError
    from alpaca.trading.enums import AssetClass, AssetStatus
    from alpaca.trading.requests import GetAssetsRequest

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


# --- cache or API ---


def utc_today() -> date:
    """The day whose cache is current (the cache is per UTC day)."""
    return datetime.now(UTC).date()


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
    todays = read_day_cache(settings.data_dir, day)
    if todays is not None:
        return AssetSnapshot(day, todays, "cache")
    try:
        return refresh_assets(settings, today=day, client=client)
    except AssetsUnavailableError as error:
        return _fall_back_to_cache(settings.data_dir, day, error)


def _fall_back_to_cache(data_dir: Path, day: date, error: AssetsUnavailableError) -> AssetSnapshot:
    newest = newest_readable_cache(data_dir)
    if newest is None:
        raise UniverseError(
            f"SYMBOL_MODE=all needs the asset list: {error}, and there is no cached universe in "
            f"{cache_dir(data_dir)}; set ALPACA_KEY/ALPACA_SECRET and run `manage_symbols.py fetch` "
            "while online, or choose another SYMBOL_MODE"
        ) from error
    cached_day, assets = newest
    logger.warning("%s; using the cached universe from %s (%s)", error, cached_day, describe_age(cached_day, day))
    return AssetSnapshot(cached_day, assets, "stale cache")


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
