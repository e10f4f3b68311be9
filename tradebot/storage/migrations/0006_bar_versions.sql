-- A bar's version (a provider's update time, or when tradebot received or fetched it, in
-- microseconds since the epoch): a stored bar is replaced only by a newer version, so a
-- correction delivered late (reclaimed after a crash, or by a second storage worker) never
-- overwrites the one that came after it. Bars stored before this have version 0.
ALTER TABLE bars ADD COLUMN version bigint NOT NULL DEFAULT 0;
