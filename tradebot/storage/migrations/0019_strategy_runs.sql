-- Which strategy an order came from (signals already say it), and stored backtest runs.
-- Numbered after issue 19 so it cannot collide with migrations written alongside it.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS strategy text;

-- One row per `tradebot backtest` run: what ran on which data, and its whole report (JSON).
CREATE TABLE IF NOT EXISTS backtest_runs (
    id          text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    strategies  text[]      NOT NULL,
    symbols     text[]      NOT NULL,
    start_ts    timestamptz NOT NULL,
    end_ts      timestamptz NOT NULL,
    source      text        NOT NULL,
    report      jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS backtest_runs_created_at ON backtest_runs (created_at DESC);
