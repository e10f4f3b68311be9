"""Process life across a tree: children that die with their parent, and one owner per data folder.

``tradebot up`` starts servers and workers as children. If it is killed with SIGKILL no handler
runs, so each child asks the kernel to signal it when its parent dies (``PR_SET_PDEATHSIG``):
nothing is left running without the supervisor that would restart, stop or own it. A lock on
the data folder (``flock``, released by the kernel when its holder dies, however it dies) keeps a
second ``tradebot up`` from starting a second set of everything on the same data.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tradebot.common.config import SettingsError

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
LOCK_FILE = "up.lock"


def die_with_parent(signum: int = signal.SIGTERM, parent: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``signum`` when the process that started it dies.

    It runs after the child's user switch (``subprocess`` drops privileges first), which matters:
    the kernel clears the setting when the user changes. The setting survives ``exec``. The parent
    must start the child from a thread that lives as long as it does (the main thread), because
    the kernel means the thread by "parent". A process that calls it for itself passes its own
    ``parent`` (``os.getppid()``) and calls the result at once.
    """
    parent = os.getpid() if parent is None else parent
    if not sys.platform.startswith("linux"):  # prctl is Linux's; elsewhere children outlive a SIGKILLed parent
        return lambda: None

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the setting took effect
            os.kill(os.getpid(), signum)

    return arrange


class FolderInUseError(SettingsError):
    """Another live process holds the data folder."""


@contextmanager
def exclusive_folder(folder: Path, what: str = "tradebot up") -> Iterator[None]:
    """Hold ``folder``'s lock for the block, or refuse at once with one line naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as lock:  # opened close-on-exec: children never inherit the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise FolderInUseError(
                f"another `{what}` (pid {holder}) is running on the data folder {folder.resolve()}; "
                "stop it first, or set DATA_DIR to another folder"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)
