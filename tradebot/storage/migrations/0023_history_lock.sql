-- Both modes (lane hist, issue 16; the lead renumbers): the lock a writer takes first when one
-- transaction writes ticks and bars (tradebot/storage/writer.py). On plain PostgreSQL,
-- postgresql/0024_history_versions.sql replaces it with one that locks the symbols' history
-- version rows in symbol order; TimescaleDB keeps no such rows, so here it does nothing.
CREATE OR REPLACE FUNCTION history_versions_lock(symbols text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
END
$$;
