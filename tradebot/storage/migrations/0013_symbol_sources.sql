-- Which sources (mock, alpaca, polygon, ...) hold ticks or bars of each symbol, so /history can keep
-- mock and real data apart without scanning the ticks (the writer adds a pair with every batch).
CREATE TABLE IF NOT EXISTS symbol_sources (
    symbol  text NOT NULL,
    source  text NOT NULL,
    PRIMARY KEY (symbol, source)
);

INSERT INTO symbol_sources (symbol, source)
SELECT DISTINCT symbol, source FROM ticks
UNION
SELECT DISTINCT symbol, source FROM bars
ON CONFLICT DO NOTHING;

-- /signals, /orders and /fills page newest first over all symbols (TimescaleDB's hypertables have
-- such an index already; these make plain PostgreSQL's pages index scans too).
CREATE INDEX IF NOT EXISTS signals_ts ON signals (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS orders_ts ON orders (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS fills_ts ON fills (ts DESC, id DESC);
