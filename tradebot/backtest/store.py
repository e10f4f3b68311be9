"""Backtest runs in the database, so the API and later sessions can list them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from tradebot.common.db import Executor, connection

_SAVE_SQL = """
INSERT INTO backtest_runs (id, strategies, symbols, start_ts, end_ts, source, report, charts)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)
ON CONFLICT (id) DO UPDATE SET report = EXCLUDED.report, charts = EXCLUDED.charts, created_at = now()"""
_LIST_SQL = """
SELECT id, created_at, strategies, symbols, start_ts, end_ts, source,
       report->'total_return' AS total_return, report->'sharpe' AS sharpe, report->'trades' AS trades
FROM backtest_runs ORDER BY created_at DESC LIMIT $1"""


async def save_run(executor: Executor, report: dict[str, Any], charts: dict[str, Any] | None = None) -> None:
    """Store a run under its id (a deterministic run stored twice is one row), with its chart data
    (report.chart_data) when given."""
    # Imported here: the report module pulls in the backtest engine and numpy, 13 MiB the API
    # (which only reads runs) would otherwise carry in every process.
    from tradebot.backtest.report import json_ready

    run = report["run"]
    async with connection(executor) as conn:
        await conn.execute(
            _SAVE_SQL,
            run["id"],
            list(run["strategies"]),
            list(run["symbols"]),
            datetime.fromisoformat(run["start"]),
            datetime.fromisoformat(run["end"]),
            run["source"],
            json.dumps(json_ready(report), default=str),
            None if charts is None else json.dumps(json_ready(charts), default=str),
        )


async def list_runs(executor: Executor, limit: int = 50) -> Sequence[asyncpg.Record]:
    """The latest runs, newest first, with their headline figures."""
    async with connection(executor) as conn:
        rows: Sequence[asyncpg.Record] = await conn.fetch(_LIST_SQL, limit)
        return rows


async def load_report(executor: Executor, run_id: str) -> dict[str, Any] | None:
    async with connection(executor) as conn:
        saved = await conn.fetchval("SELECT report FROM backtest_runs WHERE id = $1", run_id)
    return None if saved is None else json.loads(saved)


async def load_charts(executor: Executor, run_id: str) -> dict[str, Any] | None:
    """A run's equity curve and trades; None for no such run, {} for a run stored without them."""
    async with connection(executor) as conn:
        row = await conn.fetchrow("SELECT charts FROM backtest_runs WHERE id = $1", run_id)
    return None if row is None else json.loads(row["charts"]) if row["charts"] else {}
