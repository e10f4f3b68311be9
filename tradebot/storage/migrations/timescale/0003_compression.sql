-- TimescaleDB only: columnar compression of ticks and bars, one segment per symbol, newest
-- first (the layout of Timescale's financial tick tutorial). The other key columns follow ts in
-- the ordering so that unique checks on insert (ON CONFLICT, backfill into compressed chunks,
-- TimescaleDB >= 2.11) decompress as little as possible. The policy that compresses chunks after
-- COMPRESS_AFTER lives in R_policies.sql.

ALTER TABLE ticks SET (timescaledb.compress,
                       timescaledb.compress_segmentby = 'symbol',
                       timescaledb.compress_orderby = 'ts DESC, id');
ALTER TABLE bars SET (timescaledb.compress,
                      timescaledb.compress_segmentby = 'symbol',
                      timescaledb.compress_orderby = 'ts DESC, timeframe, source');
