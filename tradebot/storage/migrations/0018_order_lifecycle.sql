-- A real broker's order lifecycle (tradebot/broker, docs/BROKERS.md): every status an order event
-- can carry. 'denied' is the risk stage's (0017); kept here so either order of merging works.

ALTER TABLE fills DROP CONSTRAINT IF EXISTS fills_status_check;
ALTER TABLE fills ADD CONSTRAINT fills_status_check CHECK (status IN (
    'submitted', 'accepted', 'partially_filled', 'filled', 'canceled', 'expired', 'rejected', 'replaced', 'denied'
));
