"""Plumbing shared by all emulators: a private event loop thread and condition-based waiting."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a call into the emulator's loop (push, drop, stop...) may take before it is a bug.
CALL_TIMEOUT = 10.0


class BackgroundLoop:
    """An asyncio event loop running in a daemon thread, so sync and async tests can share it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (only valid between start and stop)."""
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._loop

    def start(self) -> None:
        """Start the thread and return once its loop is running."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._loop.call_soon(ready.set)
        self._thread = threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True)
        self._thread.start()
        ready.wait(CALL_TIMEOUT)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run `coro` on the loop from another thread and return its result."""
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("BackgroundLoop.call() would deadlock inside its own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop, join the thread and close the loop."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self._loop.close()
        self._loop = self._thread = None


class Observable:
    """State guarded by one Condition: mutate inside `changing()`, wait with `wait_until()`."""

    def __init__(self) -> None:
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the lock while mutating state, then wake every waiter."""
        with self._condition:
            yield
            self._condition.notify_all()

    def wait_until(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
        """Block until `predicate()` is truthy and return it; TimeoutError after `timeout` s."""
        with self._condition:
            result = self._condition.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        return result

    async def wait_until_async(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
        """`wait_until` for async tests: waits in a worker thread so the caller's loop keeps running."""
        return await asyncio.to_thread(self.wait_until, predicate, timeout, what)
