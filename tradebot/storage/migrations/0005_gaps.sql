-- Gaps: live events a feed could not publish (Redis refused writes, or was over
-- REDIS_MEMORY_BUDGET_MB while the feed's buffer was full), one row per symbol and gap.
-- Gap repair fills them from the provider's REST history; the row stays as the record.
CREATE TABLE IF NOT EXISTS gaps (
    id        text        PRIMARY KEY,
    symbol    text        NOT NULL,
    first_ts  timestamptz NOT NULL,
    last_ts   timestamptz NOT NULL,
    source    text        NOT NULL,
    dropped   bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_symbol_first_ts ON gaps (symbol, first_ts);
