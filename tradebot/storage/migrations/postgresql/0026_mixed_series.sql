-- Plain PostgreSQL only (lane mixed, issue 16; the lead renumbers): the 1-hour and daily buckets
-- that hold a stored 1-minute bar ("mixed"), rolled up from the merged minute series (a stored
-- 1-minute bar wins its minute, the kept minute of the ticks fills the others: series.py's
-- precedence with every minute closed), kept at write time. A read of closed 1h / 1d buckets then
-- takes one row per mixed bucket instead of rebuilding it from up to 1,440 minutes (a backfill or
-- a live Alpaca / Polygon feed stores a 1-minute bar for every minute, so every day is mixed);
-- the still open bucket is rebuilt from its minutes when read, as before (a stored bar of a
-- minute that has not closed does not win it yet).
--
-- A row exists exactly for each hour / day holding a stored 1-minute bar (reads take the buckets
-- without a row from the kept series alone), kept in the statement that writes:
-- * bars (insert, replace, delete of 1-minute bars): the touched hours are rebuilt from their
--   minutes (<= 60 kept + 60 stored), then their days from the day's mixed hours and the kept
--   minutes of its other hours;
-- * ticks (insert): a tick in a minute without a stored bar of a mixed day is added to its hour
--   and day like the kept series adds it (open / close by (ts, id); a stored minute sorts as
--   (its minute, '')). A batch none of whose symbols has a mixed day near its ticks costs one
--   probe per symbol;
-- * ticks deleted (kept_series_rebuild) or truncated: rebuilt, like the kept series.
-- Triggers named after the history versions' and the kept series' fire after them (names sort):
-- the symbol's version row is locked first (one writer of a symbol at a time) and the kept
-- minutes are already up to date. A symbol whose kept series is off (kept_series_off) has no
-- rows (it is read on the fly); a stored bar whose values overflow turns its series off too.

LOCK TABLE ticks, bars IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE IF NOT EXISTS ohlcv_mixed_1h (
    symbol      text             NOT NULL,
    bucket      timestamptz      NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    volume      double precision NOT NULL,
    trade_count bigint           NOT NULL,
    notional    double precision,  -- NULL when a stored minute's vwap is unknown (so is the bucket's)
    first_ts    timestamptz      NOT NULL,
    first_id    text             NOT NULL,
    last_ts     timestamptz      NOT NULL,
    last_id     text             NOT NULL,
    PRIMARY KEY (symbol, bucket)
);

CREATE TABLE IF NOT EXISTS ohlcv_mixed_1d (LIKE ohlcv_mixed_1h INCLUDING ALL);

-- The mixed hours (symbols[i], hours[i]) and their days, again from their minutes; only_symbol:
-- just that symbol's pairs (NULL: all). The range scans are LATERAL ... OFFSET 0 (not pulled up
-- into a join): an index range scan per hour or day, where a join of the CTE's unknown number of
-- rows was planned as a hash join on symbol filtering every minute of the symbol (60 s for 900 hours).
-- PL/pgSQL, not SQL: its statements are planned once a session (an SQL function's, every call:
-- ~15 ms). jit is off: the estimates of those scans (a 1,000-row generate_series, 100-row unnests) pass
-- jit_above_cost, and compiling costs ~100 ms a statement for a few milliseconds of work.
CREATE OR REPLACE FUNCTION mixed_series_build(symbols text[], hours timestamptz[], only_symbol text)
RETURNS void LANGUAGE plpgsql SET jit = off AS $$
BEGIN
    DELETE FROM ohlcv_mixed_1h h USING unnest(symbols, hours) AS t(symbol, hour)
    WHERE h.symbol = t.symbol AND h.bucket = t.hour AND (only_symbol IS NULL OR t.symbol = only_symbol);
    INSERT INTO ohlcv_mixed_1h
    WITH touched AS (
        SELECT DISTINCT symbol, hour FROM unnest(symbols, hours) AS t(symbol, hour)
        WHERE (only_symbol IS NULL OR symbol = only_symbol) AND symbol NOT IN (SELECT symbol FROM kept_series_off)
    ), stored AS (
        -- one bar per minute: most volume, then source name (series.py)
        SELECT DISTINCT ON (b.symbol, 2) b.symbol,
               date_bin(INTERVAL '1 minute', b.ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
               b.open, b.high, b.low, b.close, b.volume, b.trade_count,
               coalesce(b.vwap * b.volume, CASE WHEN b.volume = 0 THEN 0 END) AS notional
        FROM touched t
        CROSS JOIN LATERAL (
            SELECT * FROM bars b
            WHERE b.symbol = t.symbol AND b.timeframe = '1m' AND b.ts >= t.hour AND b.ts < t.hour + INTERVAL '1 hour'
            OFFSET 0) b
        ORDER BY b.symbol, 2, b.volume DESC, b.source
    ), minutes AS (
        SELECT symbol, bucket, open, high, low, close, volume, trade_count, notional,
               bucket AS first_ts, '' AS first_id, bucket AS last_ts, '' AS last_id, true AS stored
        FROM stored
        UNION ALL
        SELECT k.symbol, k.bucket, k.open, k.high, k.low, k.close, k.volume, k.trade_count, k.notional,
               k.first_ts, k.first_id, k.last_ts, k.last_id, false
        FROM touched t
        CROSS JOIN LATERAL (
            SELECT * FROM ohlcv_kept_1m k
            WHERE k.symbol = t.symbol AND k.bucket >= t.hour AND k.bucket < t.hour + INTERVAL '1 hour'
            OFFSET 0) k
        WHERE NOT EXISTS (SELECT 1 FROM stored s WHERE s.symbol = k.symbol AND s.bucket = k.bucket)
    )
    SELECT symbol, date_bin(INTERVAL '1 hour', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
           (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
           sum(volume), sum(trade_count), CASE WHEN count(notional) = count(*) THEN sum(notional) END,
           min(first_ts), (array_agg(first_id ORDER BY bucket))[1], max(last_ts), (array_agg(last_id ORDER BY bucket DESC))[1]
    FROM minutes GROUP BY 1, 2 HAVING bool_or(stored) ORDER BY 1, 2;

    DELETE FROM ohlcv_mixed_1d d USING unnest(symbols, hours) AS t(symbol, hour)
    WHERE d.symbol = t.symbol AND d.bucket = date_trunc('day', t.hour, 'America/New_York')
      AND (only_symbol IS NULL OR t.symbol = only_symbol);
    INSERT INTO ohlcv_mixed_1d
    WITH touched AS (
        SELECT symbol, day, ((day AT TIME ZONE 'America/New_York') + INTERVAL '1 day') AT TIME ZONE 'America/New_York' AS day_end
        FROM (SELECT DISTINCT symbol, date_trunc('day', hour, 'America/New_York') AS day FROM unnest(symbols, hours) AS t(symbol, hour)
              WHERE (only_symbol IS NULL OR symbol = only_symbol) AND symbol NOT IN (SELECT symbol FROM kept_series_off)) days
    ), day_hours AS (
        SELECT h.* FROM touched t
        CROSS JOIN LATERAL (
            SELECT * FROM ohlcv_mixed_1h h WHERE h.symbol = t.symbol AND h.bucket >= t.day AND h.bucket < t.day_end OFFSET 0) h
    ), parts AS (
        -- a New York day is whole UTC hours: its mixed hours, and the kept minutes of the others
        SELECT symbol, bucket, open, high, low, close, volume, trade_count, notional,
               first_ts, first_id, last_ts, last_id, true AS mixed
        FROM day_hours
        UNION ALL
        SELECT k.symbol, k.bucket, k.open, k.high, k.low, k.close, k.volume, k.trade_count, k.notional,
               k.first_ts, k.first_id, k.last_ts, k.last_id, false
        FROM touched t
        CROSS JOIN generate_series(t.day, t.day_end - INTERVAL '1 hour', INTERVAL '1 hour') AS hour
        CROSS JOIN LATERAL (
            SELECT * FROM ohlcv_kept_1m k
            WHERE k.symbol = t.symbol AND k.bucket >= hour AND k.bucket < hour + INTERVAL '1 hour' OFFSET 0) k
        WHERE NOT EXISTS (SELECT 1 FROM day_hours h WHERE h.symbol = t.symbol AND h.bucket = hour)
    )
    SELECT symbol, date_trunc('day', bucket, 'America/New_York'),
           (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
           sum(volume), sum(trade_count), CASE WHEN count(notional) = count(*) THEN sum(notional) END,
           min(first_ts), (array_agg(first_id ORDER BY bucket))[1], max(last_ts), (array_agg(last_id ORDER BY bucket DESC))[1]
    FROM parts GROUP BY 1, 2 HAVING bool_or(mixed) ORDER BY 1, 2;
END
$$;

-- mixed_series_build, symbol by symbol when some symbol's values overflow (that symbol's series stops).
CREATE OR REPLACE FUNCTION mixed_series_refresh(symbols text[], hours timestamptz[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    one record;
BEGIN
    IF symbols IS NULL THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM mixed_series_build(symbols, hours, NULL);
    EXCEPTION WHEN data_exception THEN
        FOR one IN SELECT DISTINCT s AS symbol FROM unnest(symbols) AS s ORDER BY 1 LOOP
            BEGIN
                PERFORM mixed_series_build(symbols, hours, one.symbol);
            EXCEPTION WHEN data_exception THEN
                PERFORM kept_series_stop(one.symbol, SQLERRM);
            END;
        END LOOP;
    END;
END
$$;

-- The mixed buckets of ``one_symbol`` in [from_ts, to_ts) (whole New York days), again.
CREATE OR REPLACE FUNCTION mixed_series_rebuild(one_symbol text, from_ts timestamptz, to_ts timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    symbols text[];
    hours timestamptz[];
BEGIN
    SELECT array_agg(one_symbol ORDER BY hour), array_agg(hour ORDER BY hour) INTO symbols, hours
    FROM (
        SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour
        FROM bars WHERE symbol = one_symbol AND timeframe = '1m' AND ts >= from_ts AND ts < to_ts
        UNION
        SELECT bucket FROM ohlcv_mixed_1h WHERE symbol = one_symbol AND bucket >= from_ts AND bucket < to_ts
    ) found;
    PERFORM mixed_series_refresh(symbols, hours);
END
$$;

-- Changed 1-minute bars (``changed_bars``): their hours and days again.
CREATE OR REPLACE FUNCTION mixed_series_bars() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    symbols text[];
    hours timestamptz[];
BEGIN
    SELECT array_agg(symbol ORDER BY symbol, hour), array_agg(hour ORDER BY symbol, hour) INTO symbols, hours
    FROM (
        SELECT DISTINCT symbol, date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour
        FROM changed_bars WHERE timeframe = '1m'
    ) touched;
    PERFORM mixed_series_refresh(symbols, hours);
    RETURN NULL;
END
$$;

-- New ticks (``new_ticks``, as the kept series' trigger sees them) added to the mixed hours and
-- days they fall in, unless a stored bar has their minute; only_symbol as in mixed_series_build.
CREATE OR REPLACE FUNCTION mixed_series_add() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    passes text[] := ARRAY[NULL];  -- the whole batch; after an overflow, each symbol on its own
    pass integer := 1;
    only_symbol text;
BEGIN
    -- the usual case, no stored minute on the days of the batch: one probe per symbol (a New
    -- York day starts at most 25 hours before a tick in it)
    IF NOT EXISTS (
        SELECT 1 FROM (SELECT symbol, min(ts) AS first_ts, max(ts) AS last_ts FROM new_ticks GROUP BY symbol) n
        CROSS JOIN LATERAL (
            SELECT 1 FROM ohlcv_mixed_1d d
            WHERE d.symbol = n.symbol AND d.bucket > n.first_ts - INTERVAL '25 hours' AND d.bucket <= n.last_ts LIMIT 1) d
    ) THEN
        RETURN NULL;
    END IF;
    WHILE pass <= cardinality(passes) LOOP
        only_symbol := passes[pass];
        pass := pass + 1;
        BEGIN
        WITH minutes AS (
            SELECT symbol, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
                   (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
                   (array_agg(price ORDER BY ts, id))[count(*)] AS close, sum(size) AS volume,
                   count(*) AS trade_count, sum(price * size) AS notional,
                   min(ts) AS first_ts, (array_agg(id ORDER BY ts, id))[1] AS first_id,
                   max(ts) AS last_ts, (array_agg(id ORDER BY ts, id))[count(*)] AS last_id
            FROM new_ticks
            WHERE (only_symbol IS NULL OR symbol = only_symbol) AND symbol NOT IN (SELECT symbol FROM kept_series_off)
            GROUP BY 1, 2
        ), added AS (
            SELECT m.* FROM minutes m
            JOIN ohlcv_mixed_1d d ON d.symbol = m.symbol AND d.bucket = date_trunc('day', m.bucket, 'America/New_York')
            WHERE NOT EXISTS (
                SELECT 1 FROM bars b
                WHERE b.symbol = m.symbol AND b.timeframe = '1m' AND b.ts >= m.bucket AND b.ts < m.bucket + INTERVAL '1 minute')
        ), mixed_hours AS (
            UPDATE ohlcv_mixed_1h AS k
               SET open     = CASE WHEN (x.first_ts, x.first_id) < (k.first_ts, k.first_id) THEN x.open ELSE k.open END,
                   first_id = CASE WHEN (x.first_ts, x.first_id) < (k.first_ts, k.first_id) THEN x.first_id ELSE k.first_id END,
                   first_ts = least(k.first_ts, x.first_ts),
                   close    = CASE WHEN (x.last_ts, x.last_id) > (k.last_ts, k.last_id) THEN x.close ELSE k.close END,
                   last_id  = CASE WHEN (x.last_ts, x.last_id) > (k.last_ts, k.last_id) THEN x.last_id ELSE k.last_id END,
                   last_ts  = greatest(k.last_ts, x.last_ts),
                   high = greatest(k.high, x.high), low = least(k.low, x.low),
                   volume = k.volume + x.volume, trade_count = k.trade_count + x.trade_count,
                   notional = k.notional + x.notional
            FROM (
                SELECT symbol, date_bin(INTERVAL '1 hour', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
                       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
                       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
                       sum(trade_count) AS trade_count, sum(notional) AS notional,
                       min(first_ts) AS first_ts, (array_agg(first_id ORDER BY bucket))[1] AS first_id,
                       max(last_ts) AS last_ts, (array_agg(last_id ORDER BY bucket DESC))[1] AS last_id
                FROM added GROUP BY 1, 2
            ) x
            WHERE k.symbol = x.symbol AND k.bucket = x.bucket
        )
        UPDATE ohlcv_mixed_1d AS k
           SET open     = CASE WHEN (x.first_ts, x.first_id) < (k.first_ts, k.first_id) THEN x.open ELSE k.open END,
               first_id = CASE WHEN (x.first_ts, x.first_id) < (k.first_ts, k.first_id) THEN x.first_id ELSE k.first_id END,
               first_ts = least(k.first_ts, x.first_ts),
               close    = CASE WHEN (x.last_ts, x.last_id) > (k.last_ts, k.last_id) THEN x.close ELSE k.close END,
               last_id  = CASE WHEN (x.last_ts, x.last_id) > (k.last_ts, k.last_id) THEN x.last_id ELSE k.last_id END,
               last_ts  = greatest(k.last_ts, x.last_ts),
               high = greatest(k.high, x.high), low = least(k.low, x.low),
               volume = k.volume + x.volume, trade_count = k.trade_count + x.trade_count,
               notional = k.notional + x.notional
        FROM (
            SELECT symbol, date_trunc('day', bucket, 'America/New_York') AS bucket,
                   (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
                   (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
                   sum(trade_count) AS trade_count, sum(notional) AS notional,
                   min(first_ts) AS first_ts, (array_agg(first_id ORDER BY bucket))[1] AS first_id,
                   max(last_ts) AS last_ts, (array_agg(last_id ORDER BY bucket DESC))[1] AS last_id
            FROM added GROUP BY 1, 2
        ) x
        WHERE k.symbol = x.symbol AND k.bucket = x.bucket;
        EXCEPTION WHEN data_exception THEN
            IF only_symbol IS NULL THEN
                passes := passes || (SELECT array_agg(DISTINCT symbol ORDER BY symbol) FROM new_ticks);
            ELSE
                PERFORM kept_series_stop(only_symbol, SQLERRM);
            END IF;
        END;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION mixed_series_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    one record;
BEGIN
    DELETE FROM ohlcv_mixed_1h;
    DELETE FROM ohlcv_mixed_1d;
    IF TG_TABLE_NAME = 'ticks' THEN
        -- the stored minutes alone make up the mixed buckets now
        FOR one IN SELECT DISTINCT symbol FROM bars WHERE timeframe = '1m' ORDER BY 1 LOOP
            PERFORM mixed_series_rebuild(one.symbol, '-infinity', 'infinity');
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

-- kept_series_stop of 0022_kept_series.sql, also forgetting the symbol's mixed buckets.
CREATE OR REPLACE FUNCTION kept_series_stop(one_symbol text, why text) RETURNS void LANGUAGE sql AS $$
    DELETE FROM ohlcv_kept_1m WHERE symbol = one_symbol;
    DELETE FROM ohlcv_kept_1d WHERE symbol = one_symbol;
    DELETE FROM ohlcv_mixed_1h WHERE symbol = one_symbol;
    DELETE FROM ohlcv_mixed_1d WHERE symbol = one_symbol;
    INSERT INTO kept_series_off (symbol, reason) VALUES (one_symbol, why) ON CONFLICT (symbol) DO NOTHING;
$$;

-- kept_series_rebuild of 0022_kept_series.sql, then the mixed buckets of the same days.
CREATE OR REPLACE FUNCTION kept_series_rebuild(one_symbol text, from_ts timestamptz, to_ts timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    built bigint;
BEGIN
    DELETE FROM ohlcv_kept_1m WHERE symbol = one_symbol AND bucket >= from_ts AND bucket < to_ts;
    DELETE FROM ohlcv_kept_1d WHERE symbol = one_symbol AND bucket >= from_ts AND bucket < to_ts;
    INSERT INTO ohlcv_kept_1m
    SELECT symbol, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
               (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
               (array_agg(price ORDER BY ts, id))[count(*)] AS close, sum(size) AS volume,
               count(*) AS trade_count, sum(price * size) AS notional,
               min(ts) AS first_ts, (array_agg(id ORDER BY ts, id))[1] AS first_id,
               max(ts) AS last_ts, (array_agg(id ORDER BY ts, id))[count(*)] AS last_id
    FROM ticks WHERE symbol = one_symbol AND ts >= from_ts AND ts < to_ts
    GROUP BY 1, 2;
    GET DIAGNOSTICS built = ROW_COUNT;
    INSERT INTO ohlcv_kept_1d
    SELECT symbol, date_trunc('day', bucket, 'America/New_York') AS day,
           (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
           sum(volume), sum(trade_count), sum(notional),
           min(first_ts), (array_agg(first_id ORDER BY bucket))[1], max(last_ts), (array_agg(last_id ORDER BY bucket DESC))[1]
    FROM ohlcv_kept_1m WHERE symbol = one_symbol AND bucket >= from_ts AND bucket < to_ts
    GROUP BY 1, 2;
    PERFORM mixed_series_rebuild(one_symbol, from_ts, to_ts);
    RETURN built;
EXCEPTION WHEN data_exception THEN
    PERFORM kept_series_stop(one_symbol, SQLERRM);
    RETURN 0;
END
$$;

CREATE TRIGGER ticks_mixed_series_add AFTER INSERT ON ticks
    REFERENCING NEW TABLE AS new_ticks FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_add();
CREATE TRIGGER ticks_mixed_series_truncate AFTER TRUNCATE ON ticks
    FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_truncate();
CREATE TRIGGER bars_mixed_series_add AFTER INSERT ON bars
    REFERENCING NEW TABLE AS changed_bars FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_bars();
CREATE TRIGGER bars_mixed_series_change AFTER UPDATE ON bars
    REFERENCING NEW TABLE AS changed_bars FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_bars();
CREATE TRIGGER bars_mixed_series_remove AFTER DELETE ON bars
    REFERENCING OLD TABLE AS changed_bars FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_bars();
CREATE TRIGGER bars_mixed_series_truncate AFTER TRUNCATE ON bars
    FOR EACH STATEMENT EXECUTE FUNCTION mixed_series_truncate();

-- The mixed buckets of what is already stored, symbol by symbol (bars of 1 minute are the
-- stored minutes; ticks were deleted by ticks' remove trigger only through kept_series_rebuild).
DO $$
DECLARE
    one record;
BEGIN
    FOR one IN SELECT DISTINCT symbol FROM bars WHERE timeframe = '1m' ORDER BY 1 LOOP
        PERFORM mixed_series_rebuild(one.symbol, '-infinity', 'infinity');
    END LOOP;
END
$$;
