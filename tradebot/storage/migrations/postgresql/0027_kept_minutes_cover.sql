-- Plain PostgreSQL only (lane api, round 10, issue 16): the kept minutes' primary key carries their
-- JSON, so a never-served 1m window of /history reads its 1,000 minutes' time and JSON from ~35
-- pages of the index (an index-only scan: storage/bars_json.first_kept_minutes_json_sql) instead
-- of up to 1,000 heap pages: a live table interleaves every symbol's minutes by time, and each
-- spelled minute's new version lands wherever the heap has room.
--
-- No write does more index work than before: spelling a minute (NULL -> its JSON) and a late
-- tick's reset (its JSON -> NULL) already change a column of the partial index
-- ohlcv_kept_1m_unspelled, so they were never HOT updates and already wrote a new entry here;
-- the ticks of an open minute leave bar_json NULL, so those updates stay HOT. What it costs is
-- size: an entry is ~150 bytes larger once spelled (the bench's 2M minutes: 154 -> 418 MB of index).
-- Upgrading rebuilds the index under an exclusive lock on the kept minutes (writers of ticks
-- wait): ~20 s per 2M minutes on the bench's machine.

ALTER TABLE ohlcv_kept_1m
    DROP CONSTRAINT ohlcv_kept_1m_pkey,
    ADD CONSTRAINT ohlcv_kept_1m_pkey PRIMARY KEY (symbol, bucket) INCLUDE (bar_json);
