"""The lifecycle toolkit: one backoff formula, one "first of (stop, …)" wait."""

from __future__ import annotations

import asyncio

from tradebot.common.lifecycle import Backoff, backoff_delay_s, first_of


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_delay_s(n, base_s=1, cap_s=30, jitter=False) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_the_jittered_backoff_stays_in_the_upper_half() -> None:
    delays = [backoff_delay_s(3, base_s=1, cap_s=30) for _ in range(200)]
    assert all(2 <= delay <= 4 for delay in delays)
    assert len(set(delays)) > 1


async def test_a_backoff_wait_is_cut_short_by_stop_and_reset_by_a_success() -> None:
    backoff, stop = Backoff("test", cap_s=3600, base_s=3600), asyncio.Event()
    stop.set()
    await asyncio.wait_for(backoff.wait(ConnectionError("down"), stop), timeout=30)
    assert (backoff.failures, backoff.total_retries) == (1, 1)
    backoff.succeeded()
    assert (backoff.failures, backoff.total_retries) == (0, 1)


async def test_first_of_returns_when_a_task_ends_and_leaves_the_others_running() -> None:
    stop, never = asyncio.Event(), asyncio.Event()
    quick = asyncio.create_task(asyncio.sleep(0))
    slow = asyncio.create_task(never.wait())
    await asyncio.wait_for(first_of(stop, quick, slow), timeout=30)
    assert quick.done()
    assert not slow.done()
    slow.cancel()


async def test_first_of_returns_on_stop_on_an_event_or_after_the_timeout() -> None:
    stop, other = asyncio.Event(), asyncio.Event()
    stop.set()
    await asyncio.wait_for(first_of(stop, other), timeout=30)
    stop.clear()
    other.set()
    await asyncio.wait_for(first_of(stop, other), timeout=30)
    other.clear()
    await asyncio.wait_for(first_of(stop, other, timeout_s=0.01), timeout=30)
    assert not stop.is_set()
    assert not other.is_set()
