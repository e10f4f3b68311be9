"""The filter rules for the "all" universe: which listed assets count as tradable stocks.

Each rule is a small pure function over `ListedAsset`, so they are tested case by case;
`rejection_reason` names the first rule an asset fails and `filter_assets` applies them all.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tradebot.common.config import Settings

SYMBOL_PATTERN = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
MAIN_EXCHANGES = frozenset({"NYSE", "NASDAQ", "AMEX"})
# Alpaca reports NYSE Arca listings as ARCA or NYSEARCA; both are mostly ETFs, hence opt-in.
ARCA_BATS_EXCHANGES = frozenset({"ARCA", "NYSEARCA", "BATS"})
# Exchange test issues that appear in real symbol directories (Nasdaq, NYSE, Cboe).
TEST_SYMBOLS = frozenset(
    {"ZVZZT", "ZWZZT", "ZXZZT", "ZJZZT", "ZBZX", "ZVV", "ZXIET", "ZIEXT", "ZTEST", "NTEST", "ATEST", "CBO", "CBX"}
)

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
