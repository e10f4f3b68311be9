-- Core tables, the same in both modes.
-- Every primary key is the event's natural key, so a redelivered event is skipped by
-- INSERT ... ON CONFLICT DO NOTHING. Every key includes the time column because TimescaleDB
-- requires that of unique indexes on hypertables; it also makes (symbol, ts) range scans of
-- ticks and bars index scans.

CREATE TABLE IF NOT EXISTS ticks (
    symbol  text             NOT NULL,
    ts      timestamptz      NOT NULL,
    id      text             NOT NULL,
    price   double precision NOT NULL,
    size    double precision NOT NULL,
    source  text             NOT NULL,
    PRIMARY KEY (symbol, ts, id)
);

-- Provider, backfill and live bars. One row per (symbol, timeframe, bucket, source); which
-- source wins a bucket is decided at read time (see tradebot/storage/series.py).
CREATE TABLE IF NOT EXISTS bars (
    symbol       text             NOT NULL,
    timeframe    text             NOT NULL,
    ts           timestamptz      NOT NULL,
    source       text             NOT NULL,
    id           text             NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    trade_count  bigint           NOT NULL,
    vwap         double precision,
    PRIMARY KEY (symbol, timeframe, ts, source)
);

CREATE TABLE IF NOT EXISTS signals (
    id          text             NOT NULL,
    ts          timestamptz      NOT NULL,
    symbol      text             NOT NULL,
    side        text             NOT NULL,
    price       double precision NOT NULL,
    confidence  double precision NOT NULL,
    strategy    text             NOT NULL,
    tick_id     text             NOT NULL,
    PRIMARY KEY (id, ts)
);
CREATE INDEX IF NOT EXISTS signals_symbol_ts ON signals (symbol, ts);

-- id is the client order id.
CREATE TABLE IF NOT EXISTS orders (
    id          text             NOT NULL,
    ts          timestamptz      NOT NULL,
    symbol      text             NOT NULL,
    side        text             NOT NULL,
    quantity    double precision NOT NULL,
    order_type  text             NOT NULL,
    signal_id   text             NOT NULL,
    PRIMARY KEY (id, ts)
);
CREATE INDEX IF NOT EXISTS orders_symbol_ts ON orders (symbol, ts);

-- Every order event: fills (status 'filled', with price) and rejections (status 'rejected',
-- with the reason), so an order's outcome is always on record.
CREATE TABLE IF NOT EXISTS fills (
    id               text             NOT NULL,
    ts               timestamptz      NOT NULL,
    client_order_id  text             NOT NULL,
    symbol           text             NOT NULL,
    status           text             NOT NULL CHECK (status IN ('filled', 'rejected')),
    side             text             NOT NULL,
    quantity         double precision NOT NULL,
    price            double precision,
    commission       double precision NOT NULL,
    reason           text,
    PRIMARY KEY (id, ts)
);
CREATE INDEX IF NOT EXISTS fills_client_order_id ON fills (client_order_id);
CREATE INDEX IF NOT EXISTS fills_symbol_ts ON fills (symbol, ts);
