"""The resolver and the "all" filter rules, pure: no network, no server."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from tradebot.common.config import Settings
from tradebot.universe import UniverseError, live_subscription_symbols, resolve_symbols
from tradebot.universe.cache import cache_path, cached_days, read_cache, write_cache
from tradebot.universe.filters import (
    FilterRules,
    ListedAsset,
    filter_assets,
    is_active_and_tradable,
    is_on_allowed_exchange,
    is_preferred,
    is_right,
    is_test_symbol,
    is_unit,
    is_valid_symbol,
    is_warrant,
    is_within_price_range,
    rejection_reason,
)
from tradebot.universe.resolver import (
    CURATED_MODES,
    configuration_notes,
    curated_symbols,
    custom_symbols,
    parse_symbol_list,
    universe_symbols,
)

# --- curated lists ---


@pytest.mark.parametrize(
    ("mode", "low", "high"), [("popular", 90, 110), ("large", 45, 55), ("mid", 45, 55), ("small", 90, 110)]
)
def test_curated_list_has_its_documented_size(mode: str, low: int, high: int) -> None:
    assert low <= len(curated_symbols(mode)) <= high


@pytest.mark.parametrize("mode", CURATED_MODES)
def test_curated_list_holds_only_valid_unique_tickers(mode: str) -> None:
    symbols = curated_symbols(mode)
    assert all(is_valid_symbol(symbol) for symbol in symbols)
    assert len(symbols) == len(set(symbols))


def test_mid_and_small_lists_do_not_overlap_the_large_caps() -> None:
    large = set(curated_symbols("large")) | set(curated_symbols("popular"))
    assert not large & set(curated_symbols("mid"))
    assert not large & set(curated_symbols("small"))
    assert not set(curated_symbols("mid")) & set(curated_symbols("small"))


def test_list_file_ignores_comments_blank_lines_and_repeats() -> None:
    text = "# header\nAAPL  # Apple\n\n  MSFT\nAAPL\n#TSLA\n"
    assert parse_symbol_list(text) == ["AAPL", "MSFT"]


# --- resolve_symbols / live_subscription_symbols ---


def test_popular_mode_is_the_default_and_capped_by_max_symbols() -> None:
    symbols = resolve_symbols(Settings(max_symbols=10))
    assert symbols == curated_symbols("popular")[:10]


def test_live_subscriptions_are_capped_by_max_websocket_symbols() -> None:
    settings = Settings(symbol_mode="large", max_symbols=20, max_websocket_symbols=5)
    assert live_subscription_symbols(settings) == curated_symbols("large")[:5]


def test_live_subscriptions_never_exceed_max_symbols() -> None:
    settings = Settings(symbol_mode="large", max_symbols=3, max_websocket_symbols=30)
    assert live_subscription_symbols(settings) == curated_symbols("large")[:3]


def test_custom_mode_keeps_order_and_drops_repeats() -> None:
    settings = Settings(symbol_mode="custom", symbols="msft, AAPL,MSFT,brk.b")
    assert resolve_symbols(settings) == ["MSFT", "AAPL", "BRK.B"]


def test_custom_mode_without_symbols_says_to_set_symbols() -> None:
    with pytest.raises(UniverseError, match="SYMBOLS is empty; set SYMBOLS="):
        resolve_symbols(Settings(symbol_mode="custom"))


def test_custom_mode_names_every_bad_ticker() -> None:
    settings = Settings(symbol_mode="custom", symbols="AAPL,$SPX,1ABC,TOOLONGTICKER")
    with pytest.raises(UniverseError, match=r"'\$SPX', '1ABC', 'TOOLONGTICKER'"):
        resolve_symbols(settings)


def test_custom_symbols_are_upper_cased_when_passed_as_a_list() -> None:
    assert custom_symbols([" aapl ", "", "Msft"]) == ["AAPL", "MSFT"]


def test_unknown_mode_lists_the_valid_modes() -> None:
    settings = Settings().model_copy(update={"symbol_mode": "penny"})
    with pytest.raises(UniverseError, match="unknown SYMBOL_MODE 'penny'; use one of: popular, large"):
        resolve_symbols(settings)


def test_all_mode_rejects_min_price_above_max_price(tmp_path: Path) -> None:
    settings = Settings(symbol_mode="all", data_dir=tmp_path, min_price=50, max_price=10)
    with pytest.raises(UniverseError, match=r"MIN_PRICE \(50\) is above MAX_PRICE \(10\)"):
        resolve_symbols(settings)


def test_all_mode_reads_todays_cache_without_a_client(tmp_path: Path) -> None:
    day = date(2024, 5, 6)
    write_cache(
        tmp_path, day, [ListedAsset("MSFT", "NASDAQ"), ListedAsset("AAPL", "NASDAQ"), ListedAsset("SPY", "ARCA")]
    )
    settings = Settings(symbol_mode="all", data_dir=tmp_path, max_symbols=1)
    assert universe_symbols(settings, "all", today=day) == ["AAPL", "MSFT"]
    assert resolve_symbols(settings, today=day) == ["AAPL"]


def test_all_mode_applies_the_price_range_to_known_prices(tmp_path: Path) -> None:
    day = date(2024, 5, 6)
    write_cache(
        tmp_path, day, [ListedAsset("AAPL", "NASDAQ"), ListedAsset("PENY", "NYSE"), ListedAsset("NEWC", "NYSE")]
    )
    settings = Settings(symbol_mode="all", data_dir=tmp_path, min_price=5)
    assert resolve_symbols(settings, today=day, prices={"AAPL": 190.0, "PENY": 0.5}) == ["AAPL", "NEWC"]


def test_notes_warn_about_settings_that_have_no_effect() -> None:
    notes = configuration_notes(Settings(symbols="AAPL", max_symbols=10, max_websocket_symbols=20, min_price=1))
    assert any("SYMBOLS is set but ignored" in note for note in notes)
    assert any("MAX_WEBSOCKET_SYMBOLS (20) is above MAX_SYMBOLS (10)" in note for note in notes)
    assert any("only apply to SYMBOL_MODE=all" in note for note in notes)


# --- filter rules, case by case ---


def stock(
    symbol: str, exchange: str = "NYSE", name: str = "Example Corp Common Stock", **fields: object
) -> ListedAsset:
    return ListedAsset(symbol=symbol, exchange=exchange, name=name, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("symbol", ["A", "AAPL", "BRK.B", "BF-B", "GOOGL", "X1"])
def test_valid_symbols(symbol: str) -> None:
    assert is_valid_symbol(symbol)


@pytest.mark.parametrize("symbol", ["", "aapl", "1AB", "$SPX", "AB CD", "ABCDEFGHIJK", "AB/C", ".A"])
def test_invalid_symbols(symbol: str) -> None:
    assert not is_valid_symbol(symbol)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, True),
        ({"tradable": False}, False),
        ({"status": "inactive"}, False),
        ({"asset_class": "crypto"}, False),
    ],
)
def test_active_and_tradable(fields: dict[str, object], expected: bool) -> None:
    assert is_active_and_tradable(stock("AAPL", **fields)) is expected


@pytest.mark.parametrize(
    ("exchange", "include_arca_bats", "expected"),
    [
        ("NYSE", False, True),
        ("NASDAQ", False, True),
        ("AMEX", False, True),
        ("ARCA", False, False),
        ("NYSEARCA", False, False),
        ("BATS", False, False),
        ("ARCA", True, True),
        ("NYSEARCA", True, True),
        ("BATS", True, True),
        ("OTC", True, False),
        ("CRYPTO", True, False),
        ("", True, False),
    ],
)
def test_allowed_exchanges(exchange: str, include_arca_bats: bool, expected: bool) -> None:
    assert is_on_allowed_exchange(stock("ABC", exchange), include_arca_bats) is expected


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        (stock("ABC.WS"), True),
        (stock("ABC.WS.A"), True),
        (stock("ABC-WT"), True),
        (stock("ABCDW", "NASDAQ"), True),
        (stock("XYZ", name="XYZ Acquisition Corp Warrants"), True),
        (stock("SNOW", "NYSE", "Snowflake Inc."), False),
        (stock("ABCDW", "NYSE"), False),  # the fifth-letter code is Nasdaq's only
        (stock("AW", "NYSE"), False),
    ],
)
def test_warrants(asset: ListedAsset, expected: bool) -> None:
    assert is_warrant(asset) is expected


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        (stock("ABC.RT"), True),
        (stock("ABCDR", "NASDAQ"), True),
        (stock("XYZ", name="XYZ Acquisition Corp Rights"), True),
        (stock("XYZ", name="XYZ Corp right to receive 1/10 share"), True),
        (stock("AAPR", "NASDAQ"), False),
        (stock("BRK.B"), False),
    ],
)
def test_rights(asset: ListedAsset, expected: bool) -> None:
    assert is_right(asset) is expected


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        (stock("ABC.U"), True),
        (stock("ABCDU", "NASDAQ"), True),
        (stock("XYZ", name="XYZ Acquisition Corp Units"), True),
        (stock("XYZ", name="XYZ Corp Unit, each consisting of one share"), True),
        (stock("UNTC", name="Unit Corporation Common Stock"), False),
        (stock("UAL", "NASDAQ", "United Airlines Holdings"), False),
    ],
)
def test_units(asset: ListedAsset, expected: bool) -> None:
    assert is_unit(asset) is expected


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        (stock("BAC.PRL"), True),
        (stock("BAC-PL"), True),
        (stock("ABC.PA"), True),
        (stock("XYZ", name="XYZ Corp 5.25% Series A Preferred Stock"), True),
        (stock("XYZ", name="XYZ 6% Cumulative Redeemable Shares"), True),
        (stock("PFBC", "NASDAQ", "Preferred Bank Common Stock"), False),
        (stock("BRK.B"), False),
    ],
)
def test_preferred_shares(asset: ListedAsset, expected: bool) -> None:
    assert is_preferred(asset) is expected


@pytest.mark.parametrize(
    ("asset", "expected"),
    [
        (stock("ZVZZT", "NASDAQ"), True),
        (stock("NTEST", "NYSE"), True),
        (stock("ZZZZ", name="NASDAQ TEST STOCK"), True),
        (stock("CNTST", name="Contest Holdings"), False),
    ],
)
def test_test_symbols(asset: ListedAsset, expected: bool) -> None:
    assert is_test_symbol(asset) is expected


@pytest.mark.parametrize(
    ("price", "min_price", "max_price", "expected"),
    [
        (None, 5.0, 100.0, True),  # price unknown: kept
        (10.0, None, None, True),
        (10.0, 5.0, None, True),
        (4.99, 5.0, None, False),
        (5.0, 5.0, 100.0, True),  # bounds are inclusive
        (100.0, 5.0, 100.0, True),
        (100.01, None, 100.0, False),
    ],
)
def test_price_range(price: float | None, min_price: float | None, max_price: float | None, expected: bool) -> None:
    assert is_within_price_range(price, min_price, max_price) is expected


def test_rejection_reason_names_the_first_failed_rule() -> None:
    rules = FilterRules(min_price=5)
    assert rejection_reason(stock("AAPL", "NASDAQ"), rules) is None
    assert rejection_reason(stock("SPY", "ARCA"), rules) == "exchange"
    assert rejection_reason(stock("ABC.WS", tradable=False), rules) == "inactive or not tradable"
    assert rejection_reason(stock("aapl"), rules) == "symbol format"
    assert rejection_reason(stock("ABC.U"), rules) == "unit"
    assert rejection_reason(stock("AAPL"), rules, price=1.0) == "price range"


def test_filter_assets_sorts_dedupes_and_counts_rejections() -> None:
    assets = [
        stock("MSFT", "NASDAQ"),
        stock("AAPL", "NASDAQ"),
        stock("AAPL", "NASDAQ"),
        stock("ABC.WS"),
        stock("SPY", "ARCA"),
    ]
    result = filter_assets(assets, FilterRules())
    assert result.symbols == ["AAPL", "MSFT"]
    assert result.rejected == {"warrant": 1, "exchange": 1}
    assert filter_assets(assets, FilterRules(include_arca_bats=True)).symbols == ["AAPL", "MSFT", "SPY"]


# --- the cache file ---


def test_cache_round_trips_and_replaces_older_days(tmp_path: Path) -> None:
    assets = [stock("AAPL", "NASDAQ", "Apple Inc.")]
    write_cache(tmp_path, date(2024, 5, 3), assets)
    path = write_cache(tmp_path, date(2024, 5, 6), assets)
    assert path == cache_path(tmp_path, date(2024, 5, 6)) == tmp_path / "universe" / "all-2024-05-06.json"
    assert read_cache(path) == assets
    assert [day for day, _ in cached_days(tmp_path)] == [date(2024, 5, 6)]


def test_unreadable_cache_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = cache_path(tmp_path, date(2024, 5, 6))
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    assert read_cache(path) is None
    assert "ignoring unreadable universe cache" in caplog.text
