"""The backtest's HTML page in a real headless browser: it renders on its own, charts and tables."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.backtest_helpers import crossover_specs, mock_ticks, request
from tradebot.backtest.output import write_html
from tradebot.backtest.run import simulate

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(BROWSER is None, reason="needs chromium (apt-get install chromium)")
def test_the_page_renders_offline_with_its_charts_and_tables(tmp_path: Path) -> None:
    outcome = simulate(request(crossover_specs((5, 20))), mock_ticks(3000))
    page = tmp_path / "report.html"
    write_html(outcome.report, outcome.result, page)
    assert BROWSER is not None
    rendered = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-network-access",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert rendered.count("<svg") == 2
    assert rendered.count("<polyline") == 2
    assert "sharpe" in rendered
    assert "per strategy" in rendered
    assert "cross_5_20" in rendered
    trades = outcome.report["trades"]
    assert rendered.count("<tr>") >= trades + 1  # every trade is a row
