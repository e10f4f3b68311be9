"""The benchmark machinery at tiny sizes: every figure is produced, with its method (speed is not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradebot.bench.cli import BenchSizes, run_bench
from tradebot.bench.history_table import StorageSizes
from tradebot.bench.report import Figure, Report, table
from tradebot.bench.target import BenchTargetError, bench_target, require_loopback
from tradebot.common.config import Settings

TINY = BenchSizes(
    bus_messages=2_000,
    strategy_ticks=3_000,
    backtest_ticks=3_000,
    backtest_bars=300,
    e2e_ticks=3_000,
    e2e_offered_rate=20_000,
    latency_rates=(2_000,),
    latency_seconds=2,
    storage=StorageSizes(table_ticks=20_000, ingest_rows=2_000, samples=3, load_seconds=1, concurrency=2),
    risk_orders=500,
)
EXPECTED_SECTIONS = {
    "bus",
    "strategy",
    "risk",
    "backtest",
    "end to end",
    "tick → order latency",
    "storage",
    "history API",
    "memory",
    "operator",
}
WORKER_ROLES = {"market_data", "strategy", "execution", "storage", "api"}


# Every section runs, the pipeline started several times over: minutes on a loaded 2-core machine
# (about 170 s at load 15), so this test has a longer hang guard than the suite's 120 s.
@pytest.mark.timeout(600)
def test_every_figure_is_produced_with_its_method(redis_url: str, database_url: str, tmp_path: Path) -> None:
    # Short windows, so the 2-second latency run has plenty of orders to measure.
    settings = Settings(
        _env_file=None, redis_url=redis_url, database_url=database_url, data_dir=tmp_path, short_window=2, long_window=4
    )
    out = tmp_path / "bench.json"
    report = run_bench(settings, out=out, sizes=TINY)
    # only a comparison with a library installed for the bench only may be missing, saying how to install it
    missing = [
        f"{f.section}: {f.name} ({f.method})" for f in report.figures if f.value is None and "install" not in f.detail
    ]
    assert not missing, f"figures without a value: {missing}"
    assert {figure.section for figure in report.figures} == EXPECTED_SECTIONS
    assert all(figure.method and figure.unit for figure in report.figures)
    assert {f.name.removeprefix("peak RSS, ") for f in report.figures if f.section == "memory"} == WORKER_ROLES
    names = {figure.name for figure in report.figures}
    rate = "2,000 ticks/s offered"
    assert {f"p{q} at {rate}" for q in (50, 95, 99)} | {f"p{q} on the bus only, at {rate}" for q in (50, 99)} <= names
    written = json.loads(out.read_text())
    assert len(written["figures"]) == len(report.figures)
    assert written["machine"]["cpus"]
    assert written["sizes"]["e2e_ticks"] == TINY.e2e_ticks


def test_the_table_has_a_method_column_and_shows_missing_values() -> None:
    report = Report(
        figures=[
            Figure("bus", "publish, batch 1", 1234.5, "msgs/s", "how"),
            Figure("bus", "publish, batch 100", None, "msgs/s", "how"),
        ]
    )
    view = table(report)
    assert [column.header for column in view.columns][-1].startswith("method")
    assert report.figures[0].shown() == "1,234"
    assert report.figures[1].shown() == "n/a"


@pytest.mark.parametrize("url", ["redis://10.0.0.5:6379/0", "postgresql://u@db.example.com/tradebot"])
def test_the_benchmark_refuses_servers_on_other_machines(url: str) -> None:
    with pytest.raises(BenchTargetError, match=r"127\.0\.0\.1"):
        require_loopback(url)


def test_the_benchmark_refuses_a_redis_cluster_with_one_line_saying_what_to_run(settings: Settings) -> None:
    cluster = settings.model_copy(update={"redis_cluster": True})
    with (
        pytest.raises(BenchTargetError, match=r"REDIS_CLUSTER=true: .*tests\.measure_cluster --e2e"),
        bench_target(cluster),
    ):
        pass
