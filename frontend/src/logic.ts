// Pure pieces of the dashboard, unit-tested in test/logic.test.ts.

export interface Candle {
  time: number; // bucket start, Unix seconds
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

export interface Fill {
  id: string;
  time: number;
  side: "buy" | "sell";
  quantity: number;
  price: number;
}

export const TIMEFRAMES: Record<string, number> = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400 };

/** Start of the bucket holding `time` (Unix seconds), on the grid of the chart's last candle (so
 *  daily candles, which start at New York midnight, line up too); without one, on the UTC grid. */
export function bucketOf(time: number, timeframe: string, last?: Candle): number {
  const width = TIMEFRAMES[timeframe] ?? 60;
  if (last !== undefined && time >= last.time) return last.time + Math.floor((time - last.time) / width) * width;
  return Math.floor(time / width) * width;
}

/** The chart's last candle after a live 1-minute bar: the same bucket is merged, a later one starts a
 *  new candle, an earlier one is ignored (the stored history already has it). `minuteSoFar` is the
 *  bar's previous state within this bucket, so a minute updated many times is counted once. */
export function foldMinute(
  last: Candle | undefined,
  minute: Candle,
  timeframe: string,
  minuteSoFar: Candle | undefined,
): Candle | undefined {
  const bucket = bucketOf(minute.time, timeframe, last);
  if (last === undefined || bucket > last.time) return { ...minute, time: bucket };
  if (bucket < last.time) return undefined;
  const earlierVolume = minuteSoFar !== undefined && minuteSoFar.time === minute.time ? minuteSoFar.volume : 0;
  const opened = timeframe === "1m" ? minute.open : last.open;
  return {
    time: bucket,
    open: opened,
    high: Math.max(last.high, minute.high),
    low: Math.min(last.low, minute.low),
    close: minute.close,
    volume: timeframe === "1m" ? minute.volume : last.volume - earlierVolume + minute.volume,
  };
}

/** Simple moving average of closes over `window` bars; undefined until enough bars. */
export function sma(candles: Candle[], window: number): { time: number; value: number }[] {
  const out: { time: number; value: number }[] = [];
  let sum = 0;
  candles.forEach((candle, i) => {
    sum += candle.close;
    if (i >= window) sum -= (candles[i - window] as Candle).close;
    if (i >= window - 1) out.push({ time: candle.time, value: sum / window });
  });
  return out;
}

export interface Marker {
  time: number;
  position: "belowBar" | "aboveBar";
  color: string;
  shape: "arrowUp" | "arrowDown";
  text: string;
  id: string;
}

/** The start of the candle holding `time`: the latest of `times` (ascending) not after it. */
export function candleAt(times: number[], time: number): number | undefined {
  let low = 0;
  let high = times.length - 1;
  let found: number | undefined;
  while (low <= high) {
    const middle = (low + high) >> 1;
    const start = times[middle] as number;
    if (start <= time) {
      found = start;
      low = middle + 1;
    } else high = middle - 1;
  }
  return found;
}

/** Chart markers for fills, on the candle holding each (fills before the first candle are left
 *  out); sorted by time, as the chart needs. */
export function markersFor(fills: Fill[], candleTimes: number[]): Marker[] {
  return fills
    .flatMap((fill) => {
      const time = candleAt(candleTimes, fill.time);
      return time === undefined ? [] : [{ fill, time }];
    })
    .map(({ fill, time }) => ({
      time,
      position: fill.side === "buy" ? ("belowBar" as const) : ("aboveBar" as const),
      color: fill.side === "buy" ? "#26a69a" : "#ef5350",
      shape: fill.side === "buy" ? ("arrowUp" as const) : ("arrowDown" as const),
      text: `${fill.side === "buy" ? "B" : "S"} ${fill.quantity}`,
      id: fill.id,
    }))
    .sort((a, b) => a.time - b.time);
}

/** Money as a market quotes it: to the cent, with thousands separators. */
export function money(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

/** A price: to the cent, or 4 decimals below $1. */
export function price(value: number): string {
  return value.toFixed(Math.abs(value) < 1 ? 4 : 2);
}

export interface Trade {
  symbol: string;
  entry_time: string;
  exit_time: string;
  quantity: number;
  entry_price: number;
  exit_price: number;
}

/** A backtest's trades as fills, entry and exit, for markers on its equity curve (a short, with a
 *  negative quantity, enters with a sell). */
export function tradeFills(trades: Trade[]): Fill[] {
  return trades.flatMap((trade, i) => {
    const long = trade.quantity >= 0;
    const quantity = Math.abs(trade.quantity);
    const at = (iso: string): number => Math.floor(Date.parse(iso) / 1000);
    return [
      { id: `${i}-in`, time: at(trade.entry_time), side: long ? "buy" : "sell", quantity, price: trade.entry_price },
      { id: `${i}-out`, time: at(trade.exit_time), side: long ? "sell" : "buy", quantity, price: trade.exit_price },
    ] satisfies Fill[];
  });
}

export interface GapRecord {
  source: string;
  symbols: string[];
  first: string;
  last: string;
  dropped: number;
  repaired: boolean;
}

const MAX_SHADED_BUCKETS = 2000; // per gap: a long outage is shaded at its start, not candle by candle

/** The chart's buckets inside each of `symbol`'s gaps, to shade them: one point per bucket. */
export function gapShades(gaps: GapRecord[], symbol: string, timeframe: string): number[] {
  const width = TIMEFRAMES[timeframe] ?? 60;
  const buckets = new Set<number>();
  for (const gap of gaps) {
    if (!gap.symbols.includes(symbol)) continue;
    const first = bucketOf(Math.floor(Date.parse(gap.first) / 1000), timeframe);
    const last = Math.min(Math.floor(Date.parse(gap.last) / 1000), first + (MAX_SHADED_BUCKETS - 1) * width);
    for (let time = first; time <= last; time += width) buckets.add(time);
  }
  return [...buckets].sort((a, b) => a - b);
}

export interface LiveMessage {
  type?: string;
  channel?: string;
  symbol?: string | null;
  data?: Record<string, unknown>;
}

/** The messages of one /ws frame: events come as a JSON array of them, in stream order; a reply to a
 *  request (`{"type": ...}`) is a single object. */
export function liveMessages(frame: string): LiveMessage[] {
  const parsed = JSON.parse(frame) as LiveMessage | LiveMessage[];
  return Array.isArray(parsed) ? parsed : [parsed];
}
