-- Cancel and replace requests (OrderChange on orders.new, docs/BROKERS.md), and the order events
-- they lead to.
CREATE TABLE IF NOT EXISTS order_changes (
    id             text             NOT NULL,
    ts             timestamptz      NOT NULL,
    symbol         text             NOT NULL,
    action         text             NOT NULL CHECK (action IN ('cancel', 'replace')),
    target         text             NOT NULL,
    quantity       double precision,
    limit_price    double precision,
    stop_price     double precision,
    strategy       text,
    PRIMARY KEY (id, ts)
);
CREATE INDEX IF NOT EXISTS order_changes_target ON order_changes (target);

ALTER TABLE fills DROP CONSTRAINT IF EXISTS fills_status_check;
ALTER TABLE fills ADD CONSTRAINT fills_status_check CHECK (status IN (
    'submitted', 'accepted', 'partially_filled', 'filled', 'canceled', 'expired', 'rejected', 'replaced', 'denied',
    'cancel_requested', 'replace_requested', 'order_cancel_rejected', 'order_replace_rejected'
));
