"""Real brokers behind one interface (docs/BROKERS.md).

Layout: ``base.py`` the interface (BrokerGateway) and the broker-neutral shapes; ``alpaca.py`` the
Alpaca gateway (alpaca-py's TradingClient); ``stream.py`` its trade_updates stream with our own
reconnect backoff; ``ledger.py`` our record of every order (the exactly-once event translation);
``reconcile.py`` our orders and positions against the broker's; ``worker.py`` the execution loop
that ties them together; ``live.py`` paper / live endpoint selection; ``ratelimit.py`` the shared
token bucket. The paper broker stays in ``tradebot/broker/paper.py`` (a pure in-process class).
"""
