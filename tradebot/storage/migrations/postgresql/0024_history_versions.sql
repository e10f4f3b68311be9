-- Plain PostgreSQL only (lane hist, issue 16; the lead renumbers): a version per symbol that
-- changes whenever a write can change a /history window already served, so the API can keep the
-- encoded bytes of closed windows and serve them again while the version is unchanged
-- (tradebot/api/history_cache.py).
--
-- ``frontier`` is the newest time ever written for the symbol (ticks' ts, bars' bucket start).
-- A write whose earliest row (``reach``) is at or before the frontier (a late tick, a backfill, a
-- correction, any stored bar of a bucket already begun), and every deletion of ticks or bars
-- (retention, tradebot data drop), sets ``version`` to a new value of a sequence: never reused,
-- so a version seen once cannot come back. A write entirely after the frontier (the live edge)
-- only moves the frontier: it cannot change a bucket that ended at or before the old frontier,
-- and the API caches only windows whose every bucket ends there. TRUNCATE (tradebot reset)
-- forgets the rows; a symbol without a row is never served from a cache.
--
-- Kept by statement-level triggers in the statement that writes, whoever writes (the storage
-- worker, a backfill, retention, psql). Their names sort before the kept series' triggers, so a
-- writer locks the version rows (in symbol order) before the kept buckets; a transaction writing
-- ticks and bars locks them all first (history_versions_lock). The ON CONFLICT DO
-- UPDATE takes the row's lock: two writers of one symbol (the live partition and a gap repair)
-- see each other's frontier, never race past it.
-- TimescaleDB mode has no such rows (its continuous aggregates change in background refreshes,
-- without a write of ours): the API does not cache there.

LOCK TABLE ticks, bars IN SHARE ROW EXCLUSIVE MODE;

CREATE SEQUENCE IF NOT EXISTS history_version_seq;

CREATE TABLE IF NOT EXISTS history_versions (
    symbol    text        PRIMARY KEY,
    version   bigint      NOT NULL,
    frontier  timestamptz NOT NULL,  -- the newest ts ever written
    reach     timestamptz NOT NULL   -- the earliest ts of the last write (why it bumped or not)
);

-- The rows a statement wrote or deleted (``changed_rows``), per symbol in key order.
CREATE OR REPLACE FUNCTION history_versions_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO history_versions AS h (symbol, version, frontier, reach)
    SELECT symbol, nextval('history_version_seq'), max(ts), min(ts) FROM changed_rows GROUP BY symbol ORDER BY symbol
    ON CONFLICT (symbol) DO UPDATE
       SET version  = CASE WHEN TG_OP = 'DELETE' OR EXCLUDED.reach <= h.frontier THEN EXCLUDED.version ELSE h.version END,
           frontier = greatest(h.frontier, EXCLUDED.frontier),
           reach    = EXCLUDED.reach;
    RETURN NULL;
END
$$;

-- A transaction that writes ticks and bars would lock version rows in two statements, each in
-- symbol order but not together (ticks of A then bars of B, against ticks of B then bars of A:
-- a deadlock). The writer calls this first with all its symbols: one order for the whole
-- transaction. A new symbol's row starts at frontier -infinity (nothing cacheable yet); the
-- statements that follow set its frontier.
CREATE OR REPLACE FUNCTION history_versions_lock(symbols text[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO history_versions AS h (symbol, version, frontier, reach)
    SELECT s, nextval('history_version_seq'), '-infinity', '-infinity' FROM (SELECT DISTINCT unnest(symbols) AS s) named ORDER BY s
    ON CONFLICT (symbol) DO UPDATE SET reach = h.reach;
$$;

CREATE OR REPLACE FUNCTION history_versions_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM history_versions;
    RETURN NULL;
END
$$;

CREATE TRIGGER ticks_history_versions_add AFTER INSERT ON ticks
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_versions_note();
CREATE TRIGGER ticks_history_versions_remove AFTER DELETE ON ticks
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_versions_note();
CREATE TRIGGER ticks_history_versions_truncate AFTER TRUNCATE ON ticks
    FOR EACH STATEMENT EXECUTE FUNCTION history_versions_forget();
CREATE TRIGGER bars_history_versions_add AFTER INSERT ON bars
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_versions_note();
-- a replaced bar (a newer version of the same key) is an UPDATE: its bucket had begun, so it bumps
CREATE TRIGGER bars_history_versions_change AFTER UPDATE ON bars
    REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_versions_note();
CREATE TRIGGER bars_history_versions_remove AFTER DELETE ON bars
    REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION history_versions_note();
CREATE TRIGGER bars_history_versions_truncate AFTER TRUNCATE ON bars
    FOR EACH STATEMENT EXECUTE FUNCTION history_versions_forget();

-- The symbols already stored (a loose index scan finds those of ticks; bars are few).
INSERT INTO history_versions (symbol, version, frontier, reach)
SELECT symbol, nextval('history_version_seq'), max(last_ts), max(last_ts)
FROM (
    WITH RECURSIVE found AS (
        SELECT min(symbol) AS symbol FROM ticks
        UNION ALL
        SELECT (SELECT min(symbol) FROM ticks WHERE symbol > found.symbol) FROM found WHERE found.symbol IS NOT NULL
    )
    SELECT symbol, (SELECT max(ts) FROM ticks t WHERE t.symbol = found.symbol) AS last_ts
    FROM found WHERE symbol IS NOT NULL
    UNION ALL
    SELECT symbol, max(ts) FROM bars GROUP BY symbol
) stored
GROUP BY symbol
ON CONFLICT (symbol) DO NOTHING;
