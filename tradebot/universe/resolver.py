"""The one symbol resolver: every worker asks it which symbols to trade.

SYMBOL_MODE picks a universe (a curated list shipped with the package, every listed stock, or
SYMBOLS); MAX_SYMBOLS caps what is traded and MAX_WEBSOCKET_SYMBOLS what is streamed live.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import date
from functools import cache
from importlib import resources

from tradebot.common.config import Settings
from tradebot.universe.assets import AssetsClient, UniverseError, all_symbols
from tradebot.universe.filters import is_valid_symbol

logger = logging.getLogger(__name__)

CURATED_MODES = ("popular", "large", "mid", "small")
SYMBOL_MODES = (*CURATED_MODES, "all", "custom")


def resolve_symbols(
    settings: Settings,
    *,
    today: date | None = None,
    client: AssetsClient | None = None,
    prices: Mapping[str, float] | None = None,
) -> list[str]:
    """The symbols to trade: the SYMBOL_MODE universe, capped at MAX_SYMBOLS."""
    symbols = universe_symbols(settings, settings.symbol_mode, today=today, client=client, prices=prices)
    if len(symbols) > settings.max_symbols:
        logger.info(
            "SYMBOL_MODE=%s has %d symbols; trading the first %d (MAX_SYMBOLS)",
            settings.symbol_mode,
            len(symbols),
            settings.max_symbols,
        )
    return symbols[: settings.max_symbols]


def live_subscription_symbols(
    settings: Settings, *, today: date | None = None, client: AssetsClient | None = None
) -> list[str]:
    """The symbols to stream live: the resolved symbols, capped at MAX_WEBSOCKET_SYMBOLS."""
    return resolve_symbols(settings, today=today, client=client)[: settings.max_websocket_symbols]


def universe_symbols(
    settings: Settings,
    mode: str,
    *,
    today: date | None = None,
    client: AssetsClient | None = None,
    prices: Mapping[str, float] | None = None,
) -> list[str]:
    """Every symbol of one mode's universe, uncapped; raises UniverseError."""
    if mode in CURATED_MODES:
        return curated_symbols(mode)
    if mode == "custom":
        return custom_symbols(settings.symbols)
    if mode == "all":
        check_price_range(settings.min_price, settings.max_price)
        return all_symbols(settings, today=today, client=client, prices=prices)
    raise UniverseError(f"unknown SYMBOL_MODE {mode!r}; use one of: {', '.join(SYMBOL_MODES)}")


@cache
def _curated_list(mode: str) -> tuple[str, ...]:
    text = resources.files("tradebot.universe").joinpath("lists", f"{mode}.txt").read_text(encoding="utf-8")
    return tuple(parse_symbol_list(text))


def curated_symbols(mode: str) -> list[str]:
    """A curated list shipped with the package, in its file's order."""
    if mode not in CURATED_MODES:
        raise UniverseError(f"no curated list {mode!r}; curated lists are: {', '.join(CURATED_MODES)}")
    return list(_curated_list(mode))


def parse_symbol_list(text: str) -> list[str]:
    """Tickers of a list file: one per line, '#' starts a comment, blank lines ignored."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return unique([line for line in lines if line])


def custom_symbols(symbols: Iterable[str]) -> list[str]:
    """SYMBOLS, upper-cased and de-duplicated; raises UniverseError when empty or malformed."""
    cleaned = unique(symbol.strip().upper() for symbol in symbols if symbol.strip())
    if not cleaned:
        raise UniverseError("SYMBOL_MODE=custom but SYMBOLS is empty; set SYMBOLS=AAPL,MSFT,…")
    invalid = [symbol for symbol in cleaned if not is_valid_symbol(symbol)]
    if invalid:
        raise UniverseError(
            f"SYMBOLS has invalid tickers: {', '.join(repr(symbol) for symbol in invalid)}; "
            "a ticker is 1-10 characters A-Z, 0-9, '.' or '-', starting with a letter"
        )
    return cleaned


def check_price_range(min_price: float | None, max_price: float | None) -> None:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise UniverseError(f"MIN_PRICE ({min_price:g}) is above MAX_PRICE ({max_price:g}); lower MIN_PRICE")


def configuration_notes(settings: Settings) -> list[str]:
    """Settings that are valid but probably not what the user meant."""
    notes = []
    if settings.symbols and settings.symbol_mode != "custom":
        notes.append(f"SYMBOLS is set but ignored because SYMBOL_MODE={settings.symbol_mode} (use custom)")
    if settings.max_websocket_symbols > settings.max_symbols:
        notes.append(
            f"MAX_WEBSOCKET_SYMBOLS ({settings.max_websocket_symbols}) is above MAX_SYMBOLS "
            f"({settings.max_symbols}), so at most {settings.max_symbols} symbols are streamed"
        )
    price_set = settings.min_price is not None or settings.max_price is not None
    if price_set and settings.symbol_mode == "all":
        notes.append("MIN_PRICE/MAX_PRICE only filter symbols whose price is known; Alpaca's asset list has none")
    elif price_set:
        notes.append(f"MIN_PRICE/MAX_PRICE only apply to SYMBOL_MODE=all, not {settings.symbol_mode}")
    return notes


def unique(symbols: Iterable[str]) -> list[str]:
    """The symbols in first-seen order, without repeats."""
    return list(dict.fromkeys(symbols))
