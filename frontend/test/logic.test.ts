import assert from "node:assert/strict";
import { test } from "node:test";

import {
  bucketOf,
  type Candle,
  candleAt,
  foldMinute,
  gapShades,
  liveMessages,
  markersFor,
  money,
  price,
  sma,
  tradeFills,
} from "../src/logic.ts";

const candle = (time: number, close: number, volume = 1): Candle => ({
  time,
  open: close,
  high: close,
  low: close,
  close,
  volume,
});

test("buckets follow the last candle's grid, so New York daily candles line up", () => {
  assert.equal(bucketOf(125, "1m"), 120);
  const ny = 1_700_000_000 - (1_700_000_000 % 86400) + 5 * 3600; // 05:00 UTC
  assert.equal(bucketOf(ny + 86400 + 10, "1d", candle(ny, 1)), ny + 86400);
});

test("a live minute updates the last candle, starts a new one, or is ignored when late", () => {
  const last: Candle = { time: 300, open: 10, high: 11, low: 9, close: 10, volume: 5 };
  assert.deepEqual(foldMinute(last, { time: 360, open: 10, high: 12, low: 10, close: 12, volume: 2 }, "5m", undefined), {
    time: 300,
    open: 10,
    high: 12,
    low: 9,
    close: 12,
    volume: 7,
  });
  // the same minute again, grown: its earlier volume is not counted twice
  const grown = foldMinute(last, { time: 360, open: 10, high: 12, low: 10, close: 11, volume: 3 }, "5m", candle(360, 12, 2));
  assert.equal(grown?.volume, 6);
  assert.equal(foldMinute(last, candle(600, 13), "5m", undefined)?.time, 600);
  assert.equal(foldMinute(last, candle(240, 13), "5m", undefined), undefined);
});

test("sma averages closes once the window is full", () => {
  const series = [1, 2, 3, 4].map((c, i) => candle(i * 60, c));
  assert.deepEqual(sma(series, 3), [
    { time: 120, value: 2 },
    { time: 180, value: 3 },
  ]);
});

test("fills become markers on the candle holding them; fills before the first candle are dropped", () => {
  assert.equal(candleAt([60, 120, 180], 179), 120);
  assert.equal(candleAt([60, 120], 59), undefined);
  const markers = markersFor(
    [
      { id: "b", time: 150, side: "sell", quantity: 5, price: 10 },
      { id: "a", time: 61, side: "buy", quantity: 10, price: 9 },
      { id: "x", time: 1, side: "buy", quantity: 1, price: 9 },
    ],
    [60, 120],
  );
  assert.deepEqual(
    markers.map((m) => [m.id, m.time, m.shape, m.text]),
    [
      ["a", 60, "arrowUp", "B 10"],
      ["b", 120, "arrowDown", "S 5"],
    ],
  );
});

test("money is shown to the cent and prices below $1 to 4 decimals", () => {
  assert.equal(money(20803.570000000018), "20,803.57");
  assert.equal(money(null), "–");
  assert.equal(price(0.12345), "0.1235");
  assert.equal(price(220.126), "220.13");
});

test("a backtest's trades become entry and exit markers, a short entering with a sell", () => {
  const fills = tradeFills([
    { symbol: "AAPL", entry_time: "2026-03-02T15:00:00Z", exit_time: "2026-03-02T15:10:00Z", quantity: 10, entry_price: 1, exit_price: 2 },
    { symbol: "AAPL", entry_time: "2026-03-02T16:00:00Z", exit_time: "2026-03-02T16:05:00Z", quantity: -5, entry_price: 2, exit_price: 1 },
  ]);
  assert.deepEqual(
    fills.map((f) => [f.side, f.quantity]),
    [["buy", 10], ["sell", 10], ["sell", 5], ["buy", 5]],
  );
  assert.equal(fills[1]?.time, Date.parse("2026-03-02T15:10:00Z") / 1000);
});

test("a symbol's gaps shade every bucket they cover, other symbols' none", () => {
  const gap = { source: "alpaca", symbols: ["AAPL"], first: "2026-03-02T15:00:30Z", last: "2026-03-02T15:02:10Z", dropped: 9, repaired: false };
  const start = Date.parse("2026-03-02T15:00:00Z") / 1000;
  assert.deepEqual(gapShades([gap], "AAPL", "1m"), [start, start + 60, start + 120]);
  assert.deepEqual(gapShades([gap], "AAPL", "1h"), [start]);
  assert.deepEqual(gapShades([gap], "MSFT", "1m"), []);
});

test("a /ws frame of events is an array of them, in order; a reply is one object", () => {
  const frame = '[{"channel":"ticks","symbol":"AAPL","data":{"price":1}},{"channel":"bars","symbol":"AAPL","data":{"close":1}}]';
  assert.deepEqual(
    liveMessages(frame).map((m) => m.channel),
    ["ticks", "bars"],
  );
  assert.deepEqual(liveMessages('{"type":"subscribed","channels":[],"symbols":[]}'), [
    { type: "subscribed", channels: [], symbols: [] },
  ]);
});
