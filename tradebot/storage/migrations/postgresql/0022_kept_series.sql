-- Plain PostgreSQL only (helper G, issue 16; the lead renumbers): kept 1-minute and daily OHLCV
-- series of the ticks, what TimescaleDB's continuous aggregates are in the other mode, so /history
-- reads one row per closed bucket instead of aggregating every tick of it on each request.
--
-- Kept in the statement that writes the ticks: a statement-level AFTER INSERT trigger sees the
-- rows the INSERT really wrote (its transition table), so a tick that ON CONFLICT DO NOTHING
-- skipped (a redelivered batch, two writers racing) is never added twice; whatever writes ticks
-- (the storage worker, a backfill, psql) keeps the series right, in the same transaction.
-- A late tick updates its closed minute and day: open and close go by (ts, id), as on the fly.
-- Deleting ticks (retention, tradebot data drop) rebuilds the days they were in from the ticks
-- left; TRUNCATE empties the series. Aggregates mix every source, like the continuous aggregates:
-- a request for a subset of the sources aggregates its ticks on the fly.
--
-- Building the series from existing ticks holds a SHARE lock on ticks (writers wait; readers do
-- not) and reports each symbol as a NOTICE, which the migration runner logs.

LOCK TABLE ticks IN SHARE MODE;

CREATE TABLE IF NOT EXISTS ohlcv_kept_1m (
    symbol      text             NOT NULL,
    bucket      timestamptz      NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,
    volume      double precision NOT NULL,
    trade_count bigint           NOT NULL,
    notional    double precision NOT NULL,
    -- the keys of the bucket's first and last tick: a late tick replaces open / close only if it
    -- sorts before / after them
    first_ts    timestamptz      NOT NULL,
    first_id    text             NOT NULL,
    last_ts     timestamptz      NOT NULL,
    last_id     text             NOT NULL,
    PRIMARY KEY (symbol, bucket)
);

CREATE TABLE IF NOT EXISTS ohlcv_kept_1d (LIKE ohlcv_kept_1m INCLUDING ALL);

-- Symbols whose stored ticks cannot be aggregated (price * size leaves double precision's range):
-- their series is not kept, so /history aggregates their ticks on the fly and answers 422 with the
-- reason for a range that holds such ticks, as without the kept series, instead of the write
-- failing. Deleting ticks of such a symbol (tradebot data drop) tries to build its series again.
CREATE TABLE IF NOT EXISTS kept_series_off (
    symbol  text        PRIMARY KEY,
    reason  text        NOT NULL,
    since   timestamptz NOT NULL DEFAULT now()
);

-- A symbol's series cannot be kept: forget it and say why.
CREATE OR REPLACE FUNCTION kept_series_stop(one_symbol text, why text) RETURNS void LANGUAGE sql AS $$
    DELETE FROM ohlcv_kept_1m WHERE symbol = one_symbol;
    DELETE FROM ohlcv_kept_1d WHERE symbol = one_symbol;
    INSERT INTO kept_series_off (symbol, reason) VALUES (one_symbol, why) ON CONFLICT (symbol) DO NOTHING;
$$;

-- The rows an INSERT into ticks really wrote, added to their minutes and days. The days are
-- written first, then the minutes (an unreferenced data-modifying CTE runs after the main query),
-- each in key order: every writer takes the locks in the same order, so two cannot deadlock.
CREATE OR REPLACE FUNCTION kept_series_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    one record;
BEGIN
    BEGIN
    WITH minutes AS (
        SELECT symbol, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
               (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
               (array_agg(price ORDER BY ts, id))[count(*)] AS close, sum(size) AS volume,
               count(*) AS trade_count, sum(price * size) AS notional,
               min(ts) AS first_ts, (array_agg(id ORDER BY ts, id))[1] AS first_id,
               max(ts) AS last_ts, (array_agg(id ORDER BY ts, id))[count(*)] AS last_id
        FROM new_ticks WHERE symbol NOT IN (SELECT symbol FROM kept_series_off)
        GROUP BY 1, 2
    ), kept_minutes AS (
        INSERT INTO ohlcv_kept_1m AS k SELECT * FROM minutes ORDER BY symbol, bucket
        ON CONFLICT (symbol, bucket) DO UPDATE
           SET open     = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.open ELSE k.open END,
               first_id = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.first_id ELSE k.first_id END,
               first_ts = least(k.first_ts, EXCLUDED.first_ts),
               close    = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.close ELSE k.close END,
               last_id  = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.last_id ELSE k.last_id END,
               last_ts  = greatest(k.last_ts, EXCLUDED.last_ts),
               high = greatest(k.high, EXCLUDED.high), low = least(k.low, EXCLUDED.low),
               volume = k.volume + EXCLUDED.volume, trade_count = k.trade_count + EXCLUDED.trade_count,
               notional = k.notional + EXCLUDED.notional
    )
    INSERT INTO ohlcv_kept_1d AS k
    SELECT symbol, date_trunc('day', bucket, 'America/New_York') AS day,
           (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
           sum(volume), sum(trade_count), sum(notional),
           min(first_ts), (array_agg(first_id ORDER BY bucket))[1], max(last_ts), (array_agg(last_id ORDER BY bucket DESC))[1]
    FROM minutes GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (symbol, bucket) DO UPDATE
       SET open     = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.open ELSE k.open END,
               first_id = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.first_id ELSE k.first_id END,
               first_ts = least(k.first_ts, EXCLUDED.first_ts),
               close    = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.close ELSE k.close END,
               last_id  = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.last_id ELSE k.last_id END,
               last_ts  = greatest(k.last_ts, EXCLUDED.last_ts),
               high = greatest(k.high, EXCLUDED.high), low = least(k.low, EXCLUDED.low),
               volume = k.volume + EXCLUDED.volume, trade_count = k.trade_count + EXCLUDED.trade_count,
               notional = k.notional + EXCLUDED.notional;
    EXCEPTION WHEN data_exception THEN
        -- Some symbol's ticks overflow: the same statement symbol by symbol (it is written out
        -- twice so both copies are planned once per session), and that symbol's series stops.
        FOR one IN SELECT DISTINCT symbol FROM new_ticks WHERE symbol NOT IN (SELECT symbol FROM kept_series_off) LOOP
            BEGIN
            WITH minutes AS (
                SELECT symbol, date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
                       (array_agg(price ORDER BY ts, id))[1] AS open, max(price) AS high, min(price) AS low,
                       (array_agg(price ORDER BY ts, id))[count(*)] AS close, sum(size) AS volume,
                       count(*) AS trade_count, sum(price * size) AS notional,
                       min(ts) AS first_ts, (array_agg(id ORDER BY ts, id))[1] AS first_id,
                       max(ts) AS last_ts, (array_agg(id ORDER BY ts, id))[count(*)] AS last_id
                FROM new_ticks WHERE symbol = one.symbol GROUP BY 1, 2
            ), kept_minutes AS (
                INSERT INTO ohlcv_kept_1m AS k SELECT * FROM minutes ORDER BY symbol, bucket
                ON CONFLICT (symbol, bucket) DO UPDATE
                   SET open     = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.open ELSE k.open END,
                       first_id = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.first_id ELSE k.first_id END,
                       first_ts = least(k.first_ts, EXCLUDED.first_ts),
                       close    = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.close ELSE k.close END,
                       last_id  = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.last_id ELSE k.last_id END,
                       last_ts  = greatest(k.last_ts, EXCLUDED.last_ts),
                       high = greatest(k.high, EXCLUDED.high), low = least(k.low, EXCLUDED.low),
                       volume = k.volume + EXCLUDED.volume, trade_count = k.trade_count + EXCLUDED.trade_count,
                       notional = k.notional + EXCLUDED.notional
            )
            INSERT INTO ohlcv_kept_1d AS k
            SELECT symbol, date_trunc('day', bucket, 'America/New_York') AS day,
                   (array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1],
                   sum(volume), sum(trade_count), sum(notional),
                   min(first_ts), (array_agg(first_id ORDER BY bucket))[1], max(last_ts), (array_agg(last_id ORDER BY bucket DESC))[1]
            FROM minutes GROUP BY 1, 2 ORDER BY 1, 2
            ON CONFLICT (symbol, bucket) DO UPDATE
               SET open     = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.open ELSE k.open END,
                       first_id = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_id) < (k.first_ts, k.first_id) THEN EXCLUDED.first_id ELSE k.first_id END,
                       first_ts = least(k.first_ts, EXCLUDED.first_ts),
                       close    = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.close ELSE k.close END,
                       last_id  = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_id) > (k.last_ts, k.last_id) THEN EXCLUDED.last_id ELSE k.last_id END,
                       last_ts  = greatest(k.last_ts, EXCLUDED.last_ts),
                       high = greatest(k.high, EXCLUDED.high), low = least(k.low, EXCLUDED.low),
                       volume = k.volume + EXCLUDED.volume, trade_count = k.trade_count + EXCLUDED.trade_count,
                       notional = k.notional + EXCLUDED.notional;
            EXCEPTION WHEN data_exception THEN
                PERFORM kept_series_stop(one.symbol, SQLERRM);
            END;
        END LOOP;
    END;
    RETURN NULL;
END
$$;

-- Both series of ``one_symbol`` in [from_ts, to_ts) (whole New York days), again from its ticks.
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
    RETURN built;
EXCEPTION WHEN data_exception THEN
    PERFORM kept_series_stop(one_symbol, SQLERRM);
    RETURN 0;
END
$$;

-- Deleted ticks (retention, tradebot data drop): their days are rebuilt from the ticks left.
CREATE OR REPLACE FUNCTION kept_series_remove() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        SELECT symbol, date_trunc('day', min(ts), 'America/New_York') AS first_day, max(ts) AS last_ts
        FROM old_ticks GROUP BY symbol ORDER BY symbol
    LOOP
        IF EXISTS (SELECT 1 FROM kept_series_off WHERE symbol = gone.symbol) THEN
            -- maybe the ticks that overflowed are gone: try the whole series again
            DELETE FROM kept_series_off WHERE symbol = gone.symbol;
            PERFORM kept_series_rebuild(gone.symbol, '-infinity', 'infinity');
            CONTINUE;
        END IF;
        PERFORM kept_series_rebuild(
            gone.symbol, gone.first_day,
            ((date_trunc('day', gone.last_ts, 'America/New_York') AT TIME ZONE 'America/New_York')
             + INTERVAL '1 day') AT TIME ZONE 'America/New_York');
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION kept_series_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: a TRUNCATE of ticks may name these tables too (tradebot reset)
    DELETE FROM ohlcv_kept_1m;
    DELETE FROM ohlcv_kept_1d;
    DELETE FROM kept_series_off;
    RETURN NULL;
END
$$;

CREATE TRIGGER ticks_kept_series_add AFTER INSERT ON ticks
    REFERENCING NEW TABLE AS new_ticks FOR EACH STATEMENT EXECUTE FUNCTION kept_series_add();
CREATE TRIGGER ticks_kept_series_remove AFTER DELETE ON ticks
    REFERENCING OLD TABLE AS old_ticks FOR EACH STATEMENT EXECUTE FUNCTION kept_series_remove();
CREATE TRIGGER ticks_kept_series_truncate AFTER TRUNCATE ON ticks
    FOR EACH STATEMENT EXECUTE FUNCTION kept_series_truncate();

-- The series of the ticks already stored, symbol by symbol (a loose index scan finds the symbols).
DO $$
DECLARE
    one record;
    done integer := 0;
    minutes bigint;
    total integer;
BEGIN
    CREATE TEMP TABLE kept_series_symbols ON COMMIT DROP AS
    WITH RECURSIVE found AS (
        SELECT min(symbol) AS symbol FROM ticks
        UNION ALL
        SELECT (SELECT min(symbol) FROM ticks WHERE symbol > found.symbol) FROM found WHERE found.symbol IS NOT NULL
    )
    SELECT symbol FROM found WHERE symbol IS NOT NULL;
    SELECT count(*) INTO total FROM kept_series_symbols;
    FOR one IN SELECT symbol FROM kept_series_symbols ORDER BY symbol LOOP
        minutes := kept_series_rebuild(one.symbol, '-infinity', 'infinity');
        done := done + 1;
        RAISE NOTICE 'kept series: % built from its ticks, % minutes (% of % symbols)', one.symbol, minutes, done, total;
    END LOOP;
END
$$;
