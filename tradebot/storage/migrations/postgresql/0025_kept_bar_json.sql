-- Plain PostgreSQL only (lane histjson, issue 16; the lead renumbers): the JSON object of each
-- kept minute as /history spells it, stored once off the read path, so a read of 1,000 closed
-- minutes joins stored strings instead of rounding and spelling six numbers a bar
-- (tradebot/storage/fragments.py spells them; storage/bars_json.py joins them).
--
-- ``bar_json`` is NULL until spelled, and set to NULL again in the same UPDATE whenever the ticks'
-- trigger changes the minute (a late tick, a batch of the open minute): a stored JSON is always
-- that of the row's values. '' marks a minute that is not plain (bars_json.py): it is encoded from
-- rows when read, as before. A read spells on the fly whatever is NULL, and a stored 1-minute bar
-- still wins its minute (series.py): the responses are the same bytes with or without it.
-- Rebuilt minutes (kept_series_rebuild: deleted ticks) are new rows, NULL.
--
-- The storage worker spells closed minutes in the background, newest first, through the partial
-- index of those not spelled. On the tick path the UPDATE sets a NULL column to NULL (the update
-- stays HOT) and a new minute adds an entry to that index.

ALTER TABLE ohlcv_kept_1m ADD COLUMN IF NOT EXISTS bar_json text;

CREATE INDEX IF NOT EXISTS ohlcv_kept_1m_unspelled ON ohlcv_kept_1m (bucket) WHERE bar_json IS NULL;

-- kept_series_add of 0022_kept_series.sql, its minutes' upserts also forgetting bar_json.
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
               notional = k.notional + EXCLUDED.notional,
               bar_json = NULL
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
                       notional = k.notional + EXCLUDED.notional,
                       bar_json = NULL
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
