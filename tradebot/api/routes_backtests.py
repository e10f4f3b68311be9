"""GET /backtests: the stored backtest runs, newest first, and one run's whole report."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from tradebot.api.deps import PoolDep
from tradebot.backtest.store import list_runs, load_charts, load_report

router = APIRouter(tags=["backtests"])


@router.get("/backtests", summary="Stored backtest runs, newest first, with their headline figures")
async def backtests(
    pool: PoolDep, limit: Annotated[int, Query(ge=1, le=1000, description="how many runs")] = 50
) -> list[dict[str, Any]]:
    """What ran on which data, and its total return, Sharpe and trade count."""
    return [
        {
            "id": row["id"],
            "created_at": row["created_at"],
            "strategies": row["strategies"],
            "symbols": row["symbols"],
            "start": row["start_ts"],
            "end": row["end_ts"],
            "source": row["source"],
            **{
                name: json.loads(row[name]) if row[name] is not None else None
                for name in ("total_return", "sharpe", "trades")
            },
        }
        for row in await list_runs(pool, limit)
    ]


@router.get("/backtests/{run_id}", summary="One stored backtest run's whole report")
async def backtest_report(pool: PoolDep, run_id: str) -> dict[str, Any]:
    report = await load_report(pool, run_id)
    if report is None:
        raise HTTPException(status_code=404, detail=f"no backtest run {run_id!r}: GET /backtests lists them")
    return report


@router.get("/backtests/{run_id}/chart", summary="One stored run's equity curve and trades, for its chart")
async def backtest_chart(pool: PoolDep, run_id: str) -> dict[str, Any]:
    """Equity as [time, value] pairs (at most 5,000, oldest first) and the closed trades; both empty
    for a run stored before runs kept them."""
    charts = await load_charts(pool, run_id)
    if charts is None:
        raise HTTPException(status_code=404, detail=f"no backtest run {run_id!r}: GET /backtests lists them")
    return {"id": run_id, "equity": charts.get("equity", []), "trades": charts.get("trades", [])}
