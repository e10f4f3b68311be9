"""Market data providers, one module each: stream client, REST bars, conversions and credentials together.

``base`` holds the contracts every provider meets, ``rest`` the request pacing and retries they
share, ``convert`` the record helpers they share. Workers (market_data, backfill) only pick a
provider; nothing here imports a worker.
"""
