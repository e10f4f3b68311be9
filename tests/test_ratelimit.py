"""The token bucket every trading-API call shares: a pace under the budget, and a pause after 429."""

from __future__ import annotations

import asyncio
import time

from tradebot.common.ratelimit import TokenBucket


async def test_calls_beyond_the_burst_wait_for_tokens() -> None:
    # One a second: the sixth finds no token unless a whole second passed since the start (at 10 a
    # second, as before, a loaded machine pausing this process for 0.1 s let it through).
    bucket = TokenBucket(per_minute=60, burst=5)
    for _ in range(5):
        await bucket.take()
    assert bucket.waited_s == 0
    await bucket.take()
    assert bucket.waited_s > 0  # the sixth had to wait for a token


async def test_a_pause_holds_every_caller_back() -> None:
    bucket = TokenBucket(per_minute=60_000, burst=100)
    bucket.pause(0.2)
    started = time.monotonic()
    await asyncio.gather(bucket.take(), bucket.take())
    assert time.monotonic() - started >= 0.2


async def test_the_rate_over_a_window_stays_under_the_budget() -> None:
    bucket = TokenBucket(per_minute=1_200, burst=2)  # 20 a second
    started = time.monotonic()
    for _ in range(12):
        await bucket.take()
    # 2 from the burst, 10 at 20/s: at least half a second, whatever the machine's speed
    assert time.monotonic() - started >= 0.45


def test_try_take_never_waits_and_says_how_long_until_a_token() -> None:
    bucket = TokenBucket(per_minute=6, burst=2)  # a token every 10 s: margin for a paused process
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == 0.0
    wait = bucket.try_take()  # empty: nothing taken, about ten seconds to the next token
    assert 5 < wait <= 10
    assert bucket.tokens < 1
