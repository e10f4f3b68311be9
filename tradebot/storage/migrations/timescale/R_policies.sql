-- tradebot:no-transaction
-- TimescaleDB only, repeatable: rendered with the settings and re-applied whenever the rendered
-- text changes (COMPRESS_AFTER, TICK_RETENTION). Each policy is removed and added again, so
-- running this twice is harmless. Policies run outside a transaction block (see the marker).
--
-- Refresh windows: each level re-materializes its last few buckets on a schedule matching its
-- width; the newest minutes come from real-time aggregation in the meantime. Late ticks inside a
-- window are picked up by the next refresh; older ones need a manual refresh_continuous_aggregate.

SELECT remove_continuous_aggregate_policy('ohlcv_1m', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('ohlcv_1m', start_offset => {{refresh_1m_start_offset}}::interval,
       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT remove_continuous_aggregate_policy('ohlcv_5m', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('ohlcv_5m', start_offset => INTERVAL '2 days',
       end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '5 minutes');
SELECT remove_continuous_aggregate_policy('ohlcv_15m', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('ohlcv_15m', start_offset => INTERVAL '2 days',
       end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '15 minutes');
SELECT remove_continuous_aggregate_policy('ohlcv_1h', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('ohlcv_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
SELECT remove_continuous_aggregate_policy('ohlcv_1d', if_exists => TRUE);
SELECT add_continuous_aggregate_policy('ohlcv_1d', start_offset => INTERVAL '7 days',
       end_offset => INTERVAL '1 day', schedule_interval => INTERVAL '1 hour');

SELECT remove_compression_policy('ticks', if_exists => TRUE);
SELECT add_compression_policy('ticks', compress_after => {{compress_after}}::interval);
SELECT remove_compression_policy('bars', if_exists => TRUE);
SELECT add_compression_policy('bars', compress_after => {{compress_after}}::interval);

-- Optional raw-tick retention (TICK_RETENTION). The runner refuses a value that does not exceed
-- the 1-minute aggregate's refresh window, so dropping chunks never deletes aggregated minutes;
-- the aggregates keep their history after the ticks are gone. Without a value, nothing is added.
SELECT remove_retention_policy('ticks', if_exists => TRUE);
SELECT add_retention_policy('ticks', drop_after => {{tick_retention}}::interval)
WHERE {{tick_retention}}::interval IS NOT NULL;
