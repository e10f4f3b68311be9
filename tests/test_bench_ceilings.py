"""The bench prints a rate next to the ceiling it is bound by, and a share (a per cent) with none."""

from __future__ import annotations

from tradebot.bench.ceilings import Ceilings, with_ceilings
from tradebot.bench.report import Figure


def test_a_rate_gets_its_ceilings_share_and_a_share_of_rates_gets_none() -> None:
    ceilings = Ceilings(xadd=50_000, read_ack=200_000, copy=400_000)
    rate = Figure("storage", "ingest, storage worker x1", 25_000, "rows/s", "m")
    share = Figure("storage", "ingest, storage worker / writer alone", 90, "%", "m")
    shown_rate, shown_share = with_ceilings([rate, share], ceilings)
    assert shown_rate.method == "= 50 % of raw XADD (50,000/s, same run). m"
    assert shown_rate.detail["percent_of_ceiling"] == 50
    assert shown_share == share
