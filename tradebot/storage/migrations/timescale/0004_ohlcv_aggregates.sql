-- tradebot:no-transaction
-- TimescaleDB only: OHLCV continuous aggregates, 1 minute from ticks, then each level from the
-- one below (hierarchical, TimescaleDB >= 2.9). CREATE MATERIALIZED VIEW ... WITH DATA cannot
-- run inside a transaction block, hence the marker above: each statement runs on its own, and
-- IF NOT EXISTS makes a re-run after a partial failure safe.
--
-- materialized_only = false is set explicitly (the default flipped in 2.13): queries see the
-- newest, not yet materialized minutes through real-time aggregation.
-- notional = sum(price * size), so vwap = notional / volume at every level.
-- Daily buckets are America/New_York days, so a US trading day is never split at UTC midnight.

CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 minute', ts) AS bucket,
       first(price, ts) AS open,
       max(price) AS high,
       min(price) AS low,
       last(price, ts) AS close,
       sum(size) AS volume,
       count(*) AS trade_count,
       sum(price * size) AS notional
FROM ticks
GROUP BY symbol, time_bucket(INTERVAL '1 minute', ts)
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '5 minutes', bucket) AS bucket,
       first(open, bucket) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, bucket) AS close,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(notional) AS notional
FROM ohlcv_1m
GROUP BY symbol, time_bucket(INTERVAL '5 minutes', bucket)
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_15m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '15 minutes', bucket) AS bucket,
       first(open, bucket) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, bucket) AS close,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(notional) AS notional
FROM ohlcv_5m
GROUP BY symbol, time_bucket(INTERVAL '15 minutes', bucket)
WITH DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       first(open, bucket) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, bucket) AS close,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(notional) AS notional
FROM ohlcv_15m
GROUP BY symbol, time_bucket(INTERVAL '1 hour', bucket)
WITH DATA;

-- A variable-width (time-zone) bucket on top of a fixed-width one is allowed; the reverse is not.
CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT symbol,
       time_bucket(INTERVAL '1 day', bucket, 'America/New_York') AS bucket,
       first(open, bucket) AS open,
       max(high) AS high,
       min(low) AS low,
       last(close, bucket) AS close,
       sum(volume) AS volume,
       sum(trade_count) AS trade_count,
       sum(notional) AS notional
FROM ohlcv_1h
GROUP BY symbol, time_bucket(INTERVAL '1 day', bucket, 'America/New_York')
WITH DATA;
