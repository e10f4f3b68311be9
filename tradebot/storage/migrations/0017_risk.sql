-- Risk and control (tradebot/risk): orders the risk stage denied are order events with status
-- 'denied' (and the reason); every change of trading state is a control event; the account is
-- sampled every minute into the equity curve (one row per sample time, however many replicas sent it).

ALTER TABLE fills DROP CONSTRAINT IF EXISTS fills_status_check;
ALTER TABLE fills ADD CONSTRAINT fills_status_check CHECK (status IN ('filled', 'rejected', 'denied'));

CREATE TABLE IF NOT EXISTS control_events (
    id       text        NOT NULL,
    ts       timestamptz NOT NULL,
    action   text        NOT NULL,
    state    text        NOT NULL,
    actor    text        NOT NULL,
    reason   text        NOT NULL,
    version  bigint      NOT NULL,
    PRIMARY KEY (id, ts)
);
CREATE INDEX IF NOT EXISTS control_events_ts ON control_events (ts);

CREATE TABLE IF NOT EXISTS equity_samples (
    ts              timestamptz      NOT NULL PRIMARY KEY,
    cash            double precision NOT NULL,
    equity          double precision NOT NULL,
    gross_exposure  double precision NOT NULL,
    realised_pnl    double precision NOT NULL,
    unrealised_pnl  double precision NOT NULL,
    drawdown        double precision NOT NULL
);
