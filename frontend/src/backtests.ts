// Stored backtest runs: the list, and one run's equity curve with its trades and its statistics.
import { createSeriesMarkers, type IChartApi } from "lightweight-charts";

import { markersFor, money, type Trade, tradeFills } from "./logic.ts";
import { $, getJson, lineChart, rows, ts } from "./page.ts";

interface BacktestRun {
  id: string;
  strategies?: string[];
  total_return?: number | null;
  trades?: number | null;
}

export async function showBacktests(): Promise<void> {
  const runs = (await getJson<BacktestRun[]>("/backtests?limit=10")) ?? [];
  rows(
    "#backtests",
    runs.map((r) => [
      r.id,
      (r.strategies ?? []).join(", "),
      `${((r.total_return ?? 0) * 100).toFixed(2)} %`,
      r.trades ?? 0,
    ]),
  );
  $("#backtests tbody")
    .querySelectorAll("tr")
    .forEach((row, i) => {
      row.classList.add("pick");
      row.addEventListener("click", () => void showBacktest(runs[i]?.id ?? ""));
    });
}

// --- one backtest run: its equity curve with its trades as markers, and its statistics -----------

const STATISTICS: [string, string, (value: number) => string][] = [
  ["total_return", "return", (v) => `${(v * 100).toFixed(2)} %`],
  ["buy_and_hold_return", "buy and hold", (v) => `${(v * 100).toFixed(2)} %`],
  ["sharpe", "Sharpe", (v) => v.toFixed(2)],
  ["max_drawdown", "max drawdown", (v) => `${(v * 100).toFixed(2)} %`],
  ["trades", "trades", (v) => String(v)],
  ["win_rate", "win rate", (v) => `${(v * 100).toFixed(1)} %`],
  ["final_equity", "final equity", (v) => money(v)],
  ["total_fees", "fees", (v) => money(v)],
];

let backtestChart: IChartApi | undefined;

async function showBacktest(id: string): Promise<void> {
  const path = `/backtests/${encodeURIComponent(id)}`;
  const [report, chartData] = await Promise.all([
    getJson<Record<string, unknown>>(path),
    getJson<{ equity: [string, number][]; trades: Trade[] }>(`${path}/chart`),
  ]);
  const view = $("#backtest-view");
  view.hidden = false;
  $("#backtest-title").textContent = `run ${id}`;
  $("#backtest-stats").replaceChildren(
    ...STATISTICS.flatMap(([key, name, shown]) => {
      const value = report?.[key];
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = typeof value === "number" ? shown(value) : "–";
      return [term, detail];
    }),
  );
  backtestChart?.remove();
  const made = lineChart("#backtest-chart");
  backtestChart = made.chart;
  const line = made.line;
  const points = (chartData?.equity ?? []).map(([at, value]) => ({ time: Math.floor(Date.parse(at) / 1000), value }));
  line.setData(points.map((p) => ({ ...p, time: ts(p.time) })));
  const placed = markersFor(
    tradeFills(chartData?.trades ?? []),
    points.map((p) => p.time),
  );
  createSeriesMarkers(line, placed.map((m) => ({ ...m, time: ts(m.time) })));
  backtestChart.timeScale().fitContent();
  Object.assign($("#backtest-chart").dataset, { run: id, points: String(points.length), markers: String(placed.length) });
}

