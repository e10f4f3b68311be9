"""manage_symbols.py commands through typer's CliRunner; "all" mode against the Alpaca REST emulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.emulators.alpaca_rest import AlpacaRestEmulator, make_asset
from tradebot.common.config import CONFIG_ERROR_EXIT, Settings
from tradebot.universe import assets as assets_module
from tradebot.universe import live_subscription_symbols, resolve_symbols
from tradebot.universe.cache import cached_days, write_cache
from tradebot.universe.cli import SAMPLES, app, render_sample
from tradebot.universe.filters import ListedAsset
from tradebot.universe.resolver import curated_symbols

runner = CliRunner()


def invoke(settings: Settings | None, *args: str) -> Result:
    """Run a command the way `tradebot symbols` does: Settings passed in as the context object."""
    return runner.invoke(app, list(args), obj=settings)


@pytest.fixture(autouse=True)
def _in_empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Commands read .env and env.example from the current directory; keep the repo's out of it.
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOL_MODE", "SYMBOLS", "MAX_SYMBOLS", "MAX_WEBSOCKET_SYMBOLS", "ALPACA_KEY", "ALPACA_SECRET"):
        monkeypatch.delenv(name, raising=False)


# --- test ---


def test_test_accepts_the_default_configuration() -> None:
    result = invoke(Settings(), "test")
    assert result.exit_code == 0
    assert "OK: SYMBOL_MODE=popular resolves to 100 symbols; trading 100 (MAX_SYMBOLS=100)" in result.output
    assert "streaming 30 live (MAX_WEBSOCKET_SYMBOLS=30)" in result.output


def test_test_reads_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOL_MODE", "custom")
    monkeypatch.setenv("SYMBOLS", "AAPL,MSFT")
    result = invoke(None, "test")
    assert result.exit_code == 0
    assert "OK: SYMBOL_MODE=custom resolves to 2 symbols" in result.output
    assert "first symbols: AAPL, MSFT" in result.output


def test_test_rejects_an_unknown_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOL_MODE", "penny")
    result = invoke(None, "test")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert result.stderr.startswith("error: invalid setting SYMBOL_MODE (got 'penny')")


def test_test_rejects_an_empty_custom_list() -> None:
    result = invoke(Settings(symbol_mode="custom"), "test")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert result.stderr == "error: SYMBOL_MODE=custom but SYMBOLS is empty; set SYMBOLS=AAPL,MSFT,…\n"


def test_test_names_the_bad_symbols() -> None:
    result = invoke(Settings(symbol_mode="custom", symbols="AAPL,MS FT,$X"), "test")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert "error: SYMBOLS has invalid tickers: 'MS FT', '$X'" in result.stderr


def test_test_prints_notes_for_settings_without_effect() -> None:
    result = invoke(Settings(symbols="AAPL", max_symbols=10, max_websocket_symbols=20), "test")
    assert result.exit_code == 0
    assert "note: SYMBOLS is set but ignored because SYMBOL_MODE=popular" in result.output
    assert "note: MAX_WEBSOCKET_SYMBOLS (20) is above MAX_SYMBOLS (10)" in result.output


# --- list ---


def test_list_shows_a_table_limited_to_n_rows() -> None:
    result = invoke(Settings(max_symbols=3, max_websocket_symbols=2), "list", "large", "--limit", "4")
    assert result.exit_code == 0
    assert "large universe: 50 symbols" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert len(rows) == 4
    assert "AAPL" in rows[0]
    assert "traded, live" in rows[0]
    assert curated_symbols("large")[3] in rows[3]
    assert "beyond MAX_SYMBOLS" in rows[3]
    assert "traded " in rows[2]


def test_list_custom_uses_symbols() -> None:
    result = invoke(Settings(symbols="TSLA,F"), "list", "custom")
    assert result.exit_code == 0
    assert "custom universe: 2 symbols" in result.output


def test_list_rejects_an_unknown_mode() -> None:
    result = invoke(Settings(), "list", "penny")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert result.stderr == "error: unknown SYMBOL_MODE 'penny'; use one of: popular, large, mid, small, all, custom\n"


# --- benchmark (offline: "all" is reported unavailable, the other modes still run) ---


def test_benchmark_prints_a_row_per_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_symbols=40, max_websocket_symbols=30, mock_ticks_per_second=200)
    result = invoke(settings, "benchmark")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    for mode in ("popular", "large", "mid", "small", "all", "custom"):
        assert mode in rows
    assert [cell.strip() for cell in rows["popular"].split("│")[3:7]] == ["100", "40", "5.0", "30"]
    assert "current" in rows["popular"]
    assert "see below" in rows["all"]
    assert "see below" in rows["custom"]
    assert (
        "unavailable all: SYMBOL_MODE=all needs the asset list: ALPACA_KEY and ALPACA_SECRET are not set"
        in result.output
    )
    assert "unavailable custom: SYMBOL_MODE=custom but SYMBOLS is empty" in result.output


# --- samples ---

TEMPLATE = """# tradebot settings
REDIS_URL=
# SYMBOL_MODE=all   (example)
SYMBOL_MODE=popular
# SYMBOLS=AAPL,MSFT
MAX_SYMBOLS=100
"""


def test_render_sample_sets_live_lines_then_commented_examples_then_appends() -> None:
    text = render_sample(TEMPLATE, ".env.x", "a test", {"SYMBOL_MODE": "custom", "SYMBOLS": "F", "MIN_PRICE": "5"})
    lines = text.splitlines()
    assert lines[0] == "# .env.x: a test."
    assert "# SYMBOL_MODE=all   (example)" in lines  # the example stays a comment...
    assert "SYMBOL_MODE=custom" in lines
    assert "SYMBOL_MODE=popular" not in lines
    assert "SYMBOLS=F" in lines
    assert "# SYMBOLS=AAPL,MSFT" not in lines
    assert lines[-1] == "MIN_PRICE=5"
    assert "REDIS_URL=" in lines


def test_samples_writes_every_sample_from_env_example(tmp_path: Path) -> None:
    (tmp_path / "env.example").write_text(TEMPLATE, encoding="utf-8")
    result = invoke(None, "samples")
    assert result.exit_code == 0
    for name in (".env.popular", ".env.all_stocks", ".env.large_cap", ".env.testing"):
        assert f"wrote {name}" in result.output
        assert (tmp_path / name).is_file()
    testing = (tmp_path / ".env.testing").read_text(encoding="utf-8").splitlines()
    assert {"SYMBOL_MODE=custom", "SYMBOLS=AAPL,MSFT,NVDA", "MAX_SYMBOLS=3"} <= set(testing)
    assert "SYMBOL_MODE=all" in (tmp_path / ".env.all_stocks").read_text(encoding="utf-8").splitlines()
    assert set(SAMPLES) == {".env.popular", ".env.all_stocks", ".env.large_cap", ".env.testing"}


def test_samples_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "env.example").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / ".env.popular").write_text("MINE=1\n", encoding="utf-8")
    result = invoke(None, "samples")
    assert result.exit_code == 0
    assert "skipped .env.popular: it already exists (use --force to overwrite)" in result.output
    assert (tmp_path / ".env.popular").read_text(encoding="utf-8") == "MINE=1\n"
    assert "wrote .env.testing" in result.output


def test_samples_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "env.example").write_text(TEMPLATE, encoding="utf-8")
    (tmp_path / ".env.popular").write_text("MINE=1\n", encoding="utf-8")
    result = invoke(None, "samples", "--force")
    assert result.exit_code == 0
    assert "SYMBOL_MODE=popular" in (tmp_path / ".env.popular").read_text(encoding="utf-8")


def test_samples_without_env_example_says_so(tmp_path: Path) -> None:
    result = invoke(None, "samples")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert (
        f"error: {tmp_path / 'env.example'} not found; run from the repository root or pass --template PATH"
        in result.stderr
    )
    assert not (tmp_path / ".env.popular").exists()


# --- "all" mode against the Alpaca REST emulator ---

TODAY = date(2024, 5, 6)
KEY, SECRET = "emulator-key", "emulator-secret-do-not-print"
LISTED = [
    make_asset("AAPL", exchange="NASDAQ", name="Apple Inc. Common Stock"),
    make_asset("IBM", exchange="NYSE", name="International Business Machines Corporation Common Stock"),
    make_asset("BRK.B", exchange="NYSE", name="Berkshire Hathaway Inc. Class B"),
    make_asset("UAMY", exchange="AMEX", name="United States Antimony Corporation Common Stock"),
    make_asset("SPY", exchange="ARCA", name="SPDR S&P 500 ETF Trust"),
    make_asset("CBOE", exchange="BATS", name="Cboe Global Markets Inc. Common Stock"),
    make_asset("OTCX", exchange="OTC", name="Pink Sheet Co"),
    make_asset("HALT", exchange="NYSE", tradable=False, name="Halted Corp"),
    make_asset("GONE", exchange="NYSE", status="inactive", name="Delisted Corp"),
    make_asset("ACAHW", exchange="NASDAQ", name="Acme Acquisition Corp Warrant"),
    make_asset("ACA.WS", exchange="NYSE", name="Acme Acquisition Corp Warrants"),
    make_asset("ACAHU", exchange="NASDAQ", name="Acme Acquisition Corp Units"),
    make_asset("ACAHR", exchange="NASDAQ", name="Acme Acquisition Corp Rights"),
    make_asset("BAC.PRL", exchange="NYSE", name="Bank of America Corp 7.25% Series L Preferred Stock"),
    make_asset("ZVZZT", exchange="NASDAQ", name="NASDAQ TEST STOCK"),
    make_asset("BTCUSD", exchange="CRYPTO", **{"class": "crypto"}),
]
PASSING = ["AAPL", "BRK.B", "IBM", "UAMY"]


@pytest.fixture(autouse=True)
def _fixed_day(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache is per UTC day; a fixed day keeps tests from depending on the clock.
    monkeypatch.setattr(assets_module, "utc_today", lambda: TODAY)


@pytest.fixture
def emulator() -> Iterator[AlpacaRestEmulator]:
    with AlpacaRestEmulator(assets=LISTED, key=KEY, secret=SECRET) as server:
        yield server


def all_mode(url: str, data_dir: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "symbol_mode": "all",
        "alpaca_key": KEY,
        "alpaca_secret": SECRET,
        "alpaca_trading_url": url,
        "data_dir": data_dir,
        **overrides,
    }
    return Settings(**fields)  # type: ignore[arg-type]


def table_symbols(output: str) -> list[str]:
    return [line.split("│")[2].strip() for line in output.splitlines() if line.startswith("│")]


def test_fetch_downloads_filters_and_caches(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    result = invoke(all_mode(emulator.url, tmp_path), "fetch")
    assert result.exit_code == 0, result.output
    # The API itself drops GONE (inactive) and BTCUSD (crypto): 14 of the 16 listed come back.
    assert "Fetched 14 active US equities; 4 pass the filters (include ARCA/BATS: no)." in result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith("│")]
    rejected = {row[1].strip(): int(row[2]) for row in rows}
    assert rejected == {
        "exchange": 3,
        "inactive or not tradable": 1,
        "warrant": 2,
        "unit": 1,
        "right": 1,
        "preferred": 1,
        "test symbol": 1,
    }
    assert f"Cached for {TODAY} in {tmp_path / 'universe' / 'all-2024-05-06.json'}" in result.output
    [request] = emulator.requests_to("/v2/assets")
    assert request.query == {"status": "active", "asset_class": "us_equity"}
    assert SECRET not in result.output


def test_all_mode_filters_the_emulators_assets(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    assert resolve_symbols(all_mode(emulator.url, tmp_path)) == PASSING


def test_all_mode_can_include_arca_and_bats(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    settings = all_mode(emulator.url, tmp_path, include_arca_bats=True)
    assert resolve_symbols(settings) == ["AAPL", "BRK.B", "CBOE", "IBM", "SPY", "UAMY"]


def test_all_mode_is_capped_by_max_symbols_and_max_websocket_symbols(
    emulator: AlpacaRestEmulator, tmp_path: Path
) -> None:
    settings = all_mode(emulator.url, tmp_path, max_symbols=3, max_websocket_symbols=2)
    assert resolve_symbols(settings) == PASSING[:3]
    assert live_subscription_symbols(settings) == PASSING[:2]


def test_list_all_fetches_once_per_day_then_reads_the_cache(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    settings = all_mode(emulator.url, tmp_path)
    first = invoke(settings, "list", "all")
    second = invoke(settings, "list", "all")
    assert first.exit_code == second.exit_code == 0
    assert table_symbols(first.output) == table_symbols(second.output) == PASSING
    assert "all universe: 4 symbols" in second.output
    assert len(emulator.requests_to("/v2/assets")) == 1


def test_a_cache_from_an_earlier_day_is_stale_and_replaced(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    write_cache(tmp_path, TODAY - timedelta(days=1), [ListedAsset("OLD", "NYSE")])
    assert resolve_symbols(all_mode(emulator.url, tmp_path)) == PASSING
    assert len(emulator.requests_to("/v2/assets")) == 1
    assert [day for day, _ in cached_days(tmp_path)] == [TODAY]


def test_fetch_refreshes_even_when_todays_cache_exists(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    write_cache(tmp_path, TODAY, [ListedAsset("OLD", "NYSE")])
    result = invoke(all_mode(emulator.url, tmp_path), "fetch")
    assert result.exit_code == 0
    assert len(emulator.requests_to("/v2/assets")) == 1
    assert resolve_symbols(all_mode(emulator.url, tmp_path)) == PASSING


def test_api_error_falls_back_to_the_newest_cache_with_a_warning(
    emulator: AlpacaRestEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_cache(tmp_path, TODAY - timedelta(days=3), [ListedAsset("OLD", "NYSE")])
    emulator.fail_next(503, path_prefix="/v2/assets")
    result = invoke(all_mode(emulator.url, tmp_path), "list", "all")
    assert result.exit_code == 0
    assert table_symbols(result.output) == ["OLD"]
    assert "Alpaca assets API answered HTTP 503" in caplog.text
    assert "using the cached universe from 2024-05-03 (3 days old)" in caplog.text


def test_unreachable_api_falls_back_to_the_newest_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with AlpacaRestEmulator(assets=LISTED, key=KEY, secret=SECRET) as stopped:
        url = stopped.url  # nothing listens here once the block ends
    write_cache(tmp_path, TODAY - timedelta(days=1), [ListedAsset("OLD", "NYSE")])
    assert resolve_symbols(all_mode(url, tmp_path)) == ["OLD"]
    assert f"Alpaca assets API unreachable at {url} ([Errno" in caplog.text
    assert "Connection refused" in caplog.text
    assert "using the cached universe from 2024-05-05 (1 day old)" in caplog.text


def test_no_cache_and_no_api_is_one_clear_error(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    emulator.fail_next(500, path_prefix="/v2/assets")
    result = invoke(all_mode(emulator.url, tmp_path), "list", "all")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert result.stderr.startswith("error: SYMBOL_MODE=all needs the asset list: Alpaca assets API answered HTTP 500")
    assert f"there is no cached universe in {tmp_path / 'universe'}" in result.stderr
    assert "run `manage_symbols.py fetch` while online" in result.stderr


def test_fetch_with_wrong_keys_fails_without_printing_them(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    settings = all_mode(emulator.url, tmp_path, alpaca_secret="wrong-secret-do-not-print")
    result = invoke(settings, "fetch")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert 'error: Alpaca assets API answered HTTP 403: {"message":"forbidden."}' in result.stderr
    assert "wrong-secret-do-not-print" not in result.output
    assert KEY not in result.output
    assert not (tmp_path / "universe").exists()


def test_fetch_without_keys_says_which_settings_to_set(tmp_path: Path) -> None:
    result = invoke(Settings(symbol_mode="all", data_dir=tmp_path), "fetch")
    assert result.exit_code == CONFIG_ERROR_EXIT
    assert result.stderr == "error: ALPACA_KEY and ALPACA_SECRET are not set\n"


def test_test_command_resolves_all_mode(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    result = invoke(all_mode(emulator.url, tmp_path, max_symbols=2), "test")
    assert result.exit_code == 0
    assert "OK: SYMBOL_MODE=all resolves to 4 symbols; trading 2 (MAX_SYMBOLS=2)" in result.output


def test_benchmark_resolves_all_mode_through_the_api(emulator: AlpacaRestEmulator, tmp_path: Path) -> None:
    result = invoke(all_mode(emulator.url, tmp_path, symbols="AAPL,MSFT"), "benchmark")
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│") for line in result.output.splitlines() if line.startswith("│")}
    assert [cell.strip() for cell in rows["all"][3:7]] == ["4", "4", "125.0", "4"]
    assert [cell.strip() for cell in rows["custom"][3:7]] == ["2", "2", "250.0", "2"]
    assert "unavailable" not in result.output


def test_a_usage_error_stays_exit_2_and_a_bad_setting_is_78(monkeypatch: pytest.MonkeyPatch) -> None:
    assert invoke(Settings(), "list", "--no-such-option").exit_code == 2  # typer's usage error
    monkeypatch.setenv("MAX_SYMBOLS", "zero")
    assert invoke(None, "test").exit_code == CONFIG_ERROR_EXIT
