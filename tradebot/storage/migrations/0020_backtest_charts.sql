-- A stored backtest run's equity curve and trades, for the dashboard's chart of the run
-- (GET /backtests/{id}/chart); runs stored before this have none.
ALTER TABLE backtest_runs ADD COLUMN IF NOT EXISTS charts jsonb;
