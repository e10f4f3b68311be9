// The dashboard: one chart with live candles, fills and moving averages, and the panels around it.
// Everything comes from the API it is served by: REST for what is stored, /ws for what happens now.
import {
  CandlestickSeries,
  createChart,
  createSeriesMarkers,
  HistogramSeries,
  type IChartApi,
  type ISeriesApi,
  LineSeries,
} from "lightweight-charts";

import { showBacktests } from "./backtests.ts";
import {
  type Candle,
  type Fill,
  foldMinute,
  type GapRecord,
  gapShades,
  type LiveMessage,
  liveMessages,
  markersFor,
  money,
  price,
  sma,
} from "./logic.ts";
import { $, getJson, lineChart, rows, ts } from "./page.ts";

const SHORT_WINDOW = 5;
const LONG_WINDOW = 20;
const REFRESH_MS = 5000;

const chart: IChartApi = createChart($("#chart"), {
  autoSize: true,
  layout: { background: { color: "#131722" }, textColor: "#d1d4dc", attributionLogo: true },
  grid: { vertLines: { color: "#1e222d" }, horzLines: { color: "#1e222d" } },
  timeScale: { timeVisible: true, secondsVisible: false },
});
const candles = chart.addSeries(CandlestickSeries, {});
const volume = chart.addSeries(HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" } });
chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
const shortLine = chart.addSeries(LineSeries, { color: "#f7c948", lineWidth: 1, priceLineVisible: false });
const longLine = chart.addSeries(LineSeries, { color: "#2962ff", lineWidth: 1, priceLineVisible: false });
const markers = createSeriesMarkers(candles, []);
// Recorded data gaps of the symbol, shaded over the whole height of the chart.
const gapShade = chart.addSeries(HistogramSeries, {
  priceScaleId: "gaps",
  color: "rgba(239, 83, 80, 0.18)",
  priceLineVisible: false,
  lastValueVisible: false,
});
chart.priceScale("gaps").applyOptions({ scaleMargins: { top: 0, bottom: 0 }, visible: false });

const state = {
  symbol: "AAPL",
  timeframe: "1m",
  bars: [] as Candle[],
  fills: [] as Fill[],
  minute: undefined as Candle | undefined, // the live minute as last seen, to fold it in once
  gaps: [] as GapRecord[],
};

function draw(): void {
  candles.setData(state.bars.map((b) => ({ ...b, time: ts(b.time) })));
  volume.setData(state.bars.map((b) => ({ time: ts(b.time), value: b.volume, color: "#363a45" })));
  shortLine.setData(sma(state.bars, SHORT_WINDOW).map((p) => ({ ...p, time: ts(p.time) })));
  longLine.setData(sma(state.bars, LONG_WINDOW).map((p) => ({ ...p, time: ts(p.time) })));
  drawMarkers();
  drawGaps();
  showLast();
}

function drawGaps(): void {
  const shaded = gapShades(state.gaps, state.symbol, state.timeframe);
  gapShade.setData(shaded.map((time) => ({ time: ts(time), value: 1 })));
  $("#chart").dataset["gaps"] = String(state.gaps.filter((g) => g.symbols.includes(state.symbol)).length);
}

function drawMarkers(): void {
  const placed = markersFor(
    state.fills,
    state.bars.map((b) => b.time),
  );
  markers.setMarkers(placed.map((m) => ({ ...m, time: ts(m.time) })));
  $("#chart").dataset["markers"] = String(placed.length);
}

function showLast(): void {
  const last = state.bars.at(-1);
  const chartElement = $("#chart");
  chartElement.dataset["bars"] = String(state.bars.length);
  chartElement.dataset["lastClose"] = last ? String(last.close) : "";
  $("#legend").textContent = last
    ? `${state.symbol} ${state.timeframe}  O ${price(last.open)}  H ${price(last.high)}  L ${price(last.low)}  C ${price(last.close)}  V ${last.volume}`
    : `${state.symbol}: no bars stored yet`;
}

interface Columns {
  timestamp: string[];
  open: number[];
  high: number[];
  low: number[];
  close: number[];
  volume: number[];
}

interface Marks {
  id: string[];
  time: number[];
  text: string[];
  label: string[];
}

const WINDOW = 1000; // bars per request: the latest first, older ones as the chart is scrolled back
const NEAR_THE_START = 50; // bars left of the view before the next older window is fetched

function barsUrl(end?: number): string {
  const until = end === undefined ? "" : `&end=${new Date(end * 1000).toISOString()}`;
  return `/ohlcv/${encodeURIComponent(state.symbol)}?timeframe=${state.timeframe}&limit=${WINDOW}${until}`;
}

/** The bars of one /ohlcv response (columns: compact, and no object per bar on the server). */
function candlesOf(columns: Columns | undefined): Candle[] {
  if (!columns) return [];
  return columns.timestamp.map((at, i) => ({
    time: Math.floor(Date.parse(at) / 1000),
    open: columns.open[i] as number,
    high: columns.high[i] as number,
    low: columns.low[i] as number,
    close: columns.close[i] as number,
    volume: columns.volume[i] as number,
  }));
}

/** The latest window, from the request index.html started before this code loaded when it asked
 *  for the same one (it has been travelling while the chart library was parsed). */
async function latestBars(): Promise<Candle[]> {
  const early = (window as { firstBars?: { url: string; response: Promise<Response> } }).firstBars;
  delete (window as { firstBars?: unknown }).firstBars;
  if (early?.url === barsUrl()) {
    const response = await early.response.catch(() => undefined);
    if (response?.ok) return candlesOf((await response.json()) as Columns);
  }
  return candlesOf(await getJson<Columns>(barsUrl()));
}

const older = { loading: false, exhausted: false };

async function load(): Promise<void> {
  state.bars = await latestBars();
  performance.mark("bars-received"); // tradebot bench ui reports where first paint's time goes
  state.minute = undefined;
  state.fills = [];
  Object.assign(older, { loading: false, exhausted: state.bars.length < WINDOW });
  draw();
  performance.mark("chart-drawn");
  chart.timeScale().scrollToRealTime();
  void loadFills();
}

async function loadFills(): Promise<void> {
  const marks = await getJson<Marks>(`/udf/marks?symbol=${state.symbol}&from=0&to=4102444800`);
  const stored: Fill[] = (marks?.id ?? []).map((id, i) => ({
    id,
    time: marks?.time[i] ?? 0,
    side: marks?.label[i] === "B" ? "buy" : "sell",
    quantity: Number((marks?.text[i] ?? "").split(" ")[1]),
    price: 0,
  }));
  const known = new Set(stored.map((f) => f.id));
  state.fills = [...stored, ...state.fills.filter((f) => !known.has(f.id))]; // live ones that came first
  drawMarkers();
}

/** Scrolled (or zoomed out) near the first bar: fetch the window before it, keeping the view still. */
async function loadOlder(from: number): Promise<void> {
  const first = state.bars[0];
  if (older.loading || older.exhausted || first === undefined || from > NEAR_THE_START) return;
  older.loading = true;
  const [symbol, timeframe] = [state.symbol, state.timeframe];
  const earlier = candlesOf(await getJson<Columns>(barsUrl(first.time))).filter((b) => b.time < first.time);
  older.loading = false;
  if (symbol !== state.symbol || timeframe !== state.timeframe) return; // switched meanwhile
  older.exhausted = earlier.length === 0;
  if (!earlier.length) return;
  const view = chart.timeScale().getVisibleLogicalRange();
  state.bars = [...earlier, ...state.bars];
  draw();
  if (view) chart.timeScale().setVisibleLogicalRange({ from: view.from + earlier.length, to: view.to + earlier.length });
}

chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
  if (range) void loadOlder(range.from);
});

// --- live: the last candle moves with every tick, fills appear as they happen ---------------------

function onMinute(minute: Candle): void {
  const folded = foldMinute(state.bars.at(-1), minute, state.timeframe, state.minute);
  state.minute = minute;
  if (folded === undefined) return;
  if (state.bars.length && state.bars.at(-1)?.time === folded.time) state.bars[state.bars.length - 1] = folded;
  else state.bars.push(folded);
  candles.update({ ...folded, time: ts(folded.time) });
  volume.update({ time: ts(folded.time), value: folded.volume, color: "#363a45" });
  showLast();
}

let socket: WebSocket | undefined;

function subscribe(): void {
  if (socket?.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ action: "unsubscribe", channels: ["bars", "fills", "orders"], symbols: ["*"] }));
  socket.send(JSON.stringify({ action: "subscribe", channels: ["bars"], symbols: [state.symbol] }));
  socket.send(JSON.stringify({ action: "subscribe", channels: ["fills", "orders", "health", "risk"], symbols: ["*"] }));
}

function connect(): void {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onopen = () => {
    $("#live").textContent = "live";
    $("#live").classList.add("ok");
    subscribe();
  };
  socket.onclose = () => {
    $("#live").textContent = "reconnecting…";
    $("#live").classList.remove("ok");
    setTimeout(connect, 2000);
  };
  socket.onmessage = (message) => {
    for (const event of liveMessages(String(message.data))) onLive(event);
  };
}

function onLive(message: LiveMessage): void {
  const data = message.data ?? {};
  if (message.channel === "bars" && message.symbol === state.symbol && typeof data["time"] === "number") {
    onMinute(data as unknown as Candle);
  } else if (message.channel === "fills" || message.channel === "orders") {
    addActivity(data);
    if (message.channel === "fills" && message.symbol === state.symbol) {
      state.fills.push({
        id: String(data["id"]),
        time: Math.floor(Date.parse(String(data["timestamp"])) / 1000),
        side: data["side"] === "buy" ? "buy" : "sell",
        quantity: Number(data["quantity"]),
        price: Number(data["price"]),
      });
      drawMarkers();
    }
  } else if (message.channel === "health") {
    showHealth(data as unknown as Health);
  } else if (message.channel === "risk") {
    void showRisk();
  }
}

// --- panels -------------------------------------------------------------------------------------

function addActivity(event: Record<string, unknown>): void {
  const body = $("#fills tbody");
  const row = document.createElement("tr");
  const when = String(event["timestamp"] ?? "").slice(11, 19);
  const status = String(event["status"] ?? "new");
  const values = [when, event["symbol"], status, event["side"], event["quantity"], event["price"] ?? "", event["reason"] ?? ""];
  for (const value of values) {
    const cell = document.createElement("td");
    cell.textContent = typeof value === "number" ? String(value) : String(value ?? "");
    row.append(cell);
  }
  body.prepend(row);
  while (body.children.length > 50) body.lastElementChild?.remove();
}

interface Portfolio {
  cash?: number;
  equity?: number;
  realised_pnl?: number;
  unrealised_pnl?: number;
  daily_pnl?: number;
  drawdown_pct?: number;
}

interface Position {
  symbol: string;
  quantity: number;
  average_cost?: number;
  unrealised_pnl?: number;
}

async function showAccount(): Promise<void> {
  const account = await getJson<Portfolio>("/portfolio");
  const entries: [string, number | undefined][] = [
    ["cash", account?.cash],
    ["equity", account?.equity],
    ["realised P&L", account?.realised_pnl],
    ["unrealised P&L", account?.unrealised_pnl],
    ["today's P&L", account?.daily_pnl],
  ];
  $("#account").replaceChildren(
    ...entries.flatMap(([name, value]) => {
      const term = document.createElement("dt");
      term.textContent = name;
      const detail = document.createElement("dd");
      detail.textContent = money(value);
      return [term, detail];
    }),
  );
  const positions = (await getJson<Position[]>("/positions")) ?? [];
  rows(
    "#positions",
    positions.map((p) => [p.symbol, p.quantity, money(p.average_cost), money(p.unrealised_pnl)]),
  );
}

interface Health {
  workers?: { role: string; consumer: string; age_s?: number | null }[];
  streams?: { stream: string; group: string; pending: number; lag: number | null }[];
  gaps?: GapRecord[]; // in /health, not in the live health channel
}

function showGaps(gaps: GapRecord[]): void {
  rows(
    "#gaps",
    gaps.map((g) => [
      g.symbols.join(", "),
      `${g.first.slice(0, 16).replace("T", " ")} – ${g.last.slice(11, 16)}`,
      g.dropped,
      g.repaired ? "repaired" : "open",
    ]),
  );
  if (JSON.stringify(gaps) === JSON.stringify(state.gaps)) return;
  state.gaps = gaps;
  drawGaps();
}

function showHealth(health: Health): void {
  if (health.gaps) showGaps(health.gaps);
  rows(
    "#workers",
    (health.workers ?? []).map((w) => [w.role, w.consumer, w.age_s == null ? "–" : `${w.age_s.toFixed(1)} s`]),
  );
  rows(
    "#streams",
    (health.streams ?? [])
      .filter((s) => s.pending + (s.lag ?? 0) > 0)
      .map((s) => [s.stream, s.group, s.pending, s.lag ?? "–"]),
  );
}

interface Risk {
  state?: string;
  reason?: string | null;
}

async function showRisk(): Promise<void> {
  const risk = await getJson<Risk>("/risk");
  $("#risk-state").textContent = risk?.state ?? "not available";
  $("#risk-reason").textContent = risk?.reason ? `(${risk.reason})` : "";
}

async function control(action: string): Promise<void> {
  const token = ($("#token") as HTMLInputElement).value;
  sessionStorage.setItem("tradebot-token", token);
  const response = await fetch(`/control/${action}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "dashboard", actor: "dashboard" }),
  });
  const body = (await response.json().catch(() => ({}))) as { detail?: string };
  $("#control-result").textContent = response.ok ? `${action}: done` : `${action}: ${body.detail ?? response.status}`;
  await showRisk();
}

let equityLine: ISeriesApi<"Line"> | undefined;

async function showEquity(): Promise<void> {
  const equity = await getJson<{ points?: { timestamp: string; equity: number }[] }>("/equity");
  const points = equity?.points ?? [];
  if (!points.length) return;
  equityLine ??= lineChart("#equity-chart").line;
  equityLine.setData(points.map((p) => ({ time: ts(Math.floor(Date.parse(p.timestamp) / 1000)), value: p.equity })));
}

interface FillsPage {
  fills?: Record<string, unknown>[];
}

async function showRecentFills(): Promise<void> {
  const page = await getJson<FillsPage>("/fills?limit=20");
  for (const event of [...(page?.fills ?? [])].reverse()) addActivity(event);
}


async function refresh(): Promise<void> {
  await Promise.allSettled([showAccount(), showRisk(), showEquity(), getJson<Health>("/health").then((h) => h && showHealth(h))]);
}

async function listSymbols(): Promise<void> {
  const symbols = await getJson<{ symbols: { symbol: string }[] }>("/symbols");
  $("#symbols").replaceChildren(
    ...(symbols?.symbols ?? []).map((s) => {
      const option = document.createElement("option");
      option.value = s.symbol;
      return option;
    }),
  );
}

function start(): void {
  const params = new URLSearchParams(location.search);
  state.symbol = (params.get("symbol") ?? "AAPL").toUpperCase();
  state.timeframe = params.get("timeframe") ?? "1m";
  ($("#symbol") as HTMLInputElement).value = state.symbol;
  ($("#timeframe") as HTMLSelectElement).value = state.timeframe;
  ($("#token") as HTMLInputElement).value = sessionStorage.getItem("tradebot-token") ?? "";
  $("#pick").addEventListener("change", () => {
    state.symbol = ($("#symbol") as HTMLInputElement).value.trim().toUpperCase();
    state.timeframe = ($("#timeframe") as HTMLSelectElement).value;
    history.replaceState(null, "", `?symbol=${state.symbol}&timeframe=${state.timeframe}`);
    void load().then(subscribe);
  });
  $("#pick").addEventListener("submit", (event) => event.preventDefault());
  for (const button of document.querySelectorAll<HTMLButtonElement>("button[data-action]")) {
    button.addEventListener("click", () => void control(button.dataset["action"] ?? ""));
  }
  // The chart first: the panels' requests wait for its bars, so they do not compete with them.
  const drawn = load().catch((error: unknown) => {
    $("#legend").textContent = `${state.symbol}: ${String(error)}`; // the panels still come
  });
  void drawn.then(() => {
    connect();
    void listSymbols();
    void showBacktests();
    void showRecentFills();
    void refresh();
    setInterval(() => void refresh(), REFRESH_MS);
  });
}

start();
