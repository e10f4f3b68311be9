-- TimescaleDB only: the core tables become hypertables partitioned on ts.
-- migrate_data moves rows a plain-PostgreSQL run already stored (the extension came later).
-- Chunk intervals come from the sizing rule in tradebot/storage/timescale.py; CHUNK_INTERVAL
-- overrides the one for ticks. create_hypertable leaves an existing hypertable alone, so a
-- changed interval applies through set_chunk_time_interval (new chunks only).

SELECT create_hypertable('ticks', 'ts', chunk_time_interval => {{ticks_chunk_interval}}::interval,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('bars', 'ts', chunk_time_interval => {{bars_chunk_interval}}::interval,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('signals', 'ts', chunk_time_interval => {{events_chunk_interval}}::interval,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('orders', 'ts', chunk_time_interval => {{events_chunk_interval}}::interval,
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('fills', 'ts', chunk_time_interval => {{events_chunk_interval}}::interval,
                         if_not_exists => TRUE, migrate_data => TRUE);
