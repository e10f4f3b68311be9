"""The bound on what a worker's readers hold read and not yet committed (tradebot/common/in_flight.py)."""

from __future__ import annotations

import asyncio
from collections import Counter, deque

import pytest

from tests.helpers import wait_until
from tradebot.common.in_flight import InFlight, Taken


async def waiting(room: InFlight, readers: int) -> None:
    await wait_until(lambda: room.waiting == readers, what=f"{readers} readers waiting for room")


async def test_a_reader_waits_for_room_until_another_commits_and_the_peak_is_counted() -> None:
    counters: Counter[str] = Counter()
    room = InFlight(4, counters, "entries_in_flight_peak")
    first, second = Taken(room), Taken(room)
    assert await first.take(asyncio.Event(), 3)
    second_waits = asyncio.create_task(second.take(asyncio.Event(), 3))
    await waiting(room, 1)
    first.give()
    assert await second_waits
    assert (room.held, room.peak, counters["entries_in_flight_peak"]) == (3, 3, 3)
    second.give_all()
    assert room.held == 0


async def test_room_goes_first_come_first_served_and_a_read_bigger_than_the_room_takes_all_of_it() -> None:
    room = InFlight(4)
    holder, big, small = Taken(room), Taken(room), Taken(room)
    assert await holder.take(asyncio.Event(), 2)
    big_waits = asyncio.create_task(big.take(asyncio.Event(), 10))  # takes the whole room, alone
    await waiting(room, 1)
    assert not small.take_if_free(1)  # room is free, but a reader waits before it
    small_waits = asyncio.create_task(small.take(asyncio.Event(), 1))
    await waiting(room, 2)
    holder.give()
    assert await big_waits
    assert (room.held, room.waiting) == (4, 1)
    big.give()
    assert await small_waits
    assert (room.held, room.peak) == (1, 4)


async def test_a_reader_stopped_or_cancelled_while_it_waits_holds_no_room() -> None:
    room = InFlight(2)
    holder = Taken(room)
    assert holder.take_if_free(2)
    stop = asyncio.Event()
    stopped = asyncio.create_task(Taken(room).take(stop, 1))
    cancelled_reader = Taken(room)
    cancelled = asyncio.create_task(cancelled_reader.take(asyncio.Event(), 2))
    await waiting(room, 2)
    stop.set()
    assert await stopped is False
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    holder.give_all()
    assert (room.held, room.waiting, cancelled_reader.held) == (0, 0, deque())
    assert Taken(room).take_if_free(2)


def test_a_bound_without_room_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        InFlight(0)
