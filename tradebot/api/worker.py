"""Entry of one of API_WORKERS uvicorn worker processes: ``tradebot.api.worker:app`` (a factory).

uvicorn's supervisor (the API process) starts, watches and on a normal shutdown stops its workers
itself. If it dies without stopping them — a SIGKILLed ``tradebot up`` takes the API process with
it — the kernel kills them (``PR_SET_PDEATHSIG``), so nothing outlives a killed ``tradebot up``.
That is arranged first thing, before the heavy imports: a worker that uvicorn starts (or restarts)
just before its supervisor dies is killed as well, instead of starting to serve on its own.
"""

from __future__ import annotations

import os
import signal

from tradebot.common.lifeline import die_with_parent

# Not from history_service: importing it first is what would leave the window open.
die_with_parent(signal.SIGKILL, parent=int(os.environ["TRADEBOT_API_PROCESS"]))()

from tradebot.api.history_service import worker_app as app  # noqa: E402 - only once the lifeline is set

__all__ = ["app"]
