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
