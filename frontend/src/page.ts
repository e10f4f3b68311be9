// Small pieces every part of the page uses: finding elements, reading the API, tables, line charts.
import { createChart, type IChartApi, type ISeriesApi, LineSeries, type UTCTimestamp } from "lightweight-charts";

export const $ = <T extends HTMLElement>(selector: string): T => document.querySelector(selector) as T;

/** GET a JSON document; undefined when the API does not serve it (an optional part not installed). */
export async function getJson<T>(path: string): Promise<T | undefined> {
  const response = await fetch(path);
  if (response.status === 404 || response.status === 503) return undefined;
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return (await response.json()) as T;
}

export function ts(time: number): UTCTimestamp {
  return time as UTCTimestamp;
}

/** Replace the body of the table at `selector` with these rows of cells. */
export function rows(selector: string, cells: (string | number)[][]): void {
  const body = $(`${selector} tbody`);
  body.replaceChildren(
    ...cells.map((values) => {
      const row = document.createElement("tr");
      for (const value of values) {
        const cell = document.createElement("td");
        cell.textContent = String(value);
        row.append(cell);
      }
      return row;
    }),
  );
}

/** A line chart below the candles (the account's equity curve, a backtest's), made when first needed:
 *  a chart made at start-up would cost the candles' first paint its own. */
export function lineChart(selector: string): { chart: IChartApi; line: ISeriesApi<"Line"> } {
  const made = createChart($(selector), {
    autoSize: true,
    layout: { background: { color: "#131722" }, textColor: "#d1d4dc", attributionLogo: false },
    grid: { vertLines: { visible: false }, horzLines: { color: "#1e222d" } },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  return { chart: made, line: made.addSeries(LineSeries, { color: "#26a69a", lineWidth: 2 }) };
}

