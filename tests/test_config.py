"""Settings: seed env names, clear one-line errors, secrets never shown."""

from __future__ import annotations

import pytest

from tradebot.common.config import Settings, SettingsError, load_settings


def test_seed_environment_names_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOL_MODE", "custom")
    monkeypatch.setenv("SYMBOLS", "aapl, msft,,NVDA")
    monkeypatch.setenv("MAX_WEBSOCKET_SYMBOLS", "12")
    monkeypatch.setenv("RATE_LIMIT_DELAY", "0.25")
    settings = load_settings(_env_file=None)
    assert settings.symbols == ["AAPL", "MSFT", "NVDA"]
    assert (settings.symbol_mode, settings.max_websocket_symbols, settings.rate_limit_delay) == ("custom", 12, 0.25)


def test_a_bad_value_names_the_variable_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOL_MODE", "everything")
    with pytest.raises(SettingsError) as stopped:
        load_settings(_env_file=None)
    message = str(stopped.value)
    assert message.startswith("invalid setting SYMBOL_MODE (got 'everything'): ")
    assert message.endswith("set SYMBOL_MODE to a valid value")
    assert "\n" not in message


def test_long_window_must_exceed_short_window() -> None:
    with pytest.raises(SettingsError, match=r"LONG_WINDOW.*greater than SHORT_WINDOW"):
        load_settings(_env_file=None, short_window=10, long_window=10)


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, alpaca_key="AKXXXX", alpaca_secret="shh-secret")
    assert "shh-secret" not in repr(settings)
    assert "shh-secret" not in str(settings.model_dump())


def test_urls_are_shown_with_only_their_passwords_hidden() -> None:
    from tradebot.common.config import redact_url

    assert redact_url("postgresql://trader:hunter2@db:5432/tradebot") == "postgresql://trader:***@db:5432/tradebot"
    assert (
        redact_url("postgresql://postgres@127.0.0.1:5490/tradebot") == "postgresql://postgres@127.0.0.1:5490/tradebot"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url(None) == "-"


def test_the_grace_period_must_outlast_a_blocking_read() -> None:
    with pytest.raises(SettingsError, match=r"GRACE_PERIOD_S.*longer than BUS_BLOCK_MS"):
        load_settings(_env_file=None, bus_block_ms=5000, grace_period_s=2)
