"""Paper unless live trading is asked for twice; keys never shown; one line and exit 78 otherwise."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tradebot.broker.live import LIVE_CONFIRMATION, alpaca_is_paper, announce
from tradebot.common.config import Settings, SettingsError
from tradebot.common.runtime import CONFIG_ERROR_EXIT

from .worker_processes import ROOT, worker_environment

KEY, SECRET = "AKSECRETKEYID123", "shh-this-is-the-secret-0123456789"


def alpaca(**overrides: object) -> Settings:
    return Settings(_env_file=None, execution_broker="alpaca", alpaca_key=KEY, alpaca_secret=SECRET, **overrides)  # type: ignore[arg-type]


def test_the_paper_endpoint_is_the_default() -> None:
    assert alpaca_is_paper(alpaca()) is True
    assert alpaca_is_paper(alpaca(alpaca_live_confirm=LIVE_CONFIRMATION)) is True  # one opt-in is not two


def test_live_needs_the_second_confirmation() -> None:
    with pytest.raises(SettingsError, match="ALPACA_LIVE_CONFIRM"):
        alpaca_is_paper(alpaca(alpaca_paper=False))
    with pytest.raises(SettingsError, match="ALPACA_LIVE_CONFIRM"):
        alpaca_is_paper(alpaca(alpaca_paper=False, alpaca_live_confirm="yes"))
    assert alpaca_is_paper(alpaca(alpaca_paper=False, alpaca_live_confirm=LIVE_CONFIRMATION)) is False


def test_keys_are_required() -> None:
    with pytest.raises(SettingsError, match="ALPACA_KEY and ALPACA_SECRET"):
        alpaca_is_paper(Settings(_env_file=None, execution_broker="alpaca"))


def test_live_mode_says_so_loudly_without_the_keys(caplog: pytest.LogCaptureFixture) -> None:
    settings = alpaca(alpaca_paper=False, alpaca_live_confirm=LIVE_CONFIRMATION)
    with caplog.at_level(logging.INFO):
        announce(settings, paper=False)
    line = caplog.records[-1]
    assert line.levelno == logging.WARNING
    assert "LIVE TRADING WITH REAL MONEY" in line.getMessage()
    assert KEY not in caplog.text
    assert SECRET not in caplog.text


def test_the_worker_refuses_live_without_confirmation_in_one_line(settings: Settings) -> None:
    env = worker_environment(
        settings, execution_broker="alpaca", alpaca_key=KEY, alpaca_secret=SECRET, alpaca_paper="false"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tradebot.execution.service"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == CONFIG_ERROR_EXIT
    output = (result.stdout + result.stderr).decode()
    named = [line for line in output.splitlines() if "ALPACA_LIVE_CONFIRM" in line]
    assert len(named) == 1
    assert named[0].startswith("ALPACA_PAPER=false asks for LIVE trading")
    assert KEY not in output
    assert SECRET not in output
