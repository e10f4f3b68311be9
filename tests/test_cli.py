"""The tradebot command: bad arguments get one clear error and start nothing."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from tradebot.cli import app, parse_scale
from tradebot.roles import DEFAULT_UP

runner = CliRunner()


def test_scale_adds_to_the_default_process_set() -> None:
    assert parse_scale(["strategy=3", "storage=2", "api=0"]) == {
        **{role: count for role, count in DEFAULT_UP.items() if role != "api"},
        "strategy": 3,
        "storage": 2,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("bogus=2", "unknown role 'bogus'"),
        ("strategy=three", "count must be a whole number"),
        ("api=2", "at most 1"),
        ("strategy=-1", "use 0..N"),
    ],
)
def test_bad_scale_values_are_refused(value: str, message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        parse_scale([value])


def test_an_unknown_worker_role_is_a_usage_error() -> None:
    result = runner.invoke(app, ["worker", "bogus"])
    assert result.exit_code == 2
    assert "unknown role 'bogus'; choose one of: market_data, alpaca" in result.output


def test_migrate_prints_the_ddl_of_either_mode_without_a_database() -> None:
    plain = runner.invoke(app, ["migrate", "--mode", "postgresql"])
    timescale = runner.invoke(app, ["migrate", "--mode", "timescaledb"])
    assert plain.exit_code == timescale.exit_code == 0
    assert "CREATE TABLE IF NOT EXISTS ticks" in plain.output
    assert "create_hypertable" not in plain.output
    assert "create_hypertable" in timescale.output
    assert "timescaledb.materialized_only" in timescale.output


@pytest.mark.parametrize("command", [["activity"], ["tail"], ["reset"], ["data", "drop"]])
def test_the_newcomer_commands_exist_with_their_options(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    expected = {"activity": "--from-start", "tail": "--max-events", "reset": "--keep-history", "data": "--source"}
    assert expected[command[0]] in result.output


def test_data_drop_needs_a_source() -> None:
    result = runner.invoke(app, ["data", "drop"])
    assert result.exit_code == 2
    assert "--source" in result.output
