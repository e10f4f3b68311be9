"""The history API: an app factory whose lifespan owns the asyncpg pools and the Redis client.

Reads (history, symbols, stats, activity, UDF) go to ``read_pool``: a replica at DATABASE_READ_URL
when it is set, else the primary ``pool`` itself. Migrations, /health's primary check and the
operator views that must show what was just done (risk, control events, equity, backtests) use
DATABASE_URL.

Run it with ``python -m tradebot.api.history_service`` (embedded servers start when REDIS_URL /
DATABASE_URL are unset). OpenAPI docs are served at /docs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from tradebot.api import (
    routes_account,
    routes_activity,
    routes_backtests,
    routes_control,
    routes_health,
    routes_history,
    routes_portfolio,
    routes_risk,
    routes_udf,
    routes_webhooks,
    routes_ws,
)
from tradebot.api.auth import BodyLimit, check_exposure
from tradebot.api.history_cache import HistoryCache
from tradebot.api.routes_docs import add_offline_docs
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import connect
from tradebot.common.config import ReadySettings, Settings, SettingsError, load_settings
from tradebot.common.db import TRANSIENT_DB_ERRORS, create_pool
from tradebot.common.runtime import bootstrap, infrastructure, setup_logging
from tradebot.storage.queries import StoredDataError, UnknownSourceError, UnknownSymbolError
from tradebot.storage.schema import apply_migrations
from tradebot.storage.timescale import TimescaleOptions, database_mode
from tradebot.ui import dashboard
from tradebot.ui.live import Hub

log = logging.getLogger(__name__)
# The API process's pid, for its uvicorn worker processes (tradebot/api/worker.py).
API_PROCESS_ENV = "TRADEBOT_API_PROCESS"
# Connections of each pool of one API worker process. A worker is one event loop: ~1 ms of its CPU
# per never-served 1,000-bar /history window against ~2.5 ms of the database's, so three queries
# at a time keep it busy (more throughput: more API_WORKERS). A further connection only holds
# memory: asyncpg keeps each connection's last two socket reads, a whole ~150 KB response each
# under load, so 8 connections at the bench's 8 clients held ~2 MiB more at peak (BENCHMARKS.md,
# "Tenth round, api").
POOL_SIZE = 3
# The API's reads return at most a few thousand rows, but their estimates over the kept and mixed
# series can pass jit_above_cost: JIT then compiled ~100 functions (~500 ms) for a 1d read of a
# few milliseconds (BENCHMARKS.md, "Tenth round, api").
SESSION_SETTINGS = {"jit": "off"}


async def _open_pools(app: FastAPI, settings: Settings, primary_url: str) -> None:
    """The primary pool, and the read pool: the replica's, or the primary's when there is none."""
    # The routes set no session state: a released connection needs no reset query, a round trip
    # that a /history cache hit (one query) would otherwise pay twice.
    app.state.pool = await create_pool(
        primary_url,
        max_size=POOL_SIZE,
        application_name="tradebot-api",
        reset_sessions=False,
        session_settings=SESSION_SETTINGS,
    )
    app.state.read_pool = app.state.pool
    if settings.database_read_url:
        try:
            app.state.read_pool = await create_pool(
                settings.database_read_url,
                max_size=POOL_SIZE,
                application_name="tradebot-api-read",
                reset_sessions=False,
                session_settings=SESSION_SETTINGS,
            )
        except BaseException:
            await app.state.pool.close()
            raise
    # The mode of the database the queries run on (a replica has its primary's extensions).
    app.state.mode = await database_mode(app.state.read_pool)


async def _close_pools(app: FastAPI) -> None:
    if app.state.read_pool is not app.state.pool:
        await app.state.read_pool.close()
    await app.state.pool.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate (so the tables exist), open the pools and Redis client, close them at shutdown."""
    settings: Settings = app.state.settings
    if not settings.database_url:
        raise SettingsError("DATABASE_URL is not set: set it, or start the API through tradebot up")
    await apply_migrations(settings.database_url, options=TimescaleOptions.from_settings(settings))
    await _open_pools(app, settings, settings.database_url)
    app.state.redis = connect(settings.redis_url, cluster=settings.redis_cluster) if settings.redis_url else None
    stop, live_tasks = asyncio.Event(), []
    app.state.hub = None
    if settings.redis_url:
        app.state.hub = Hub(
            Bus(connect(settings.redis_url, cluster=settings.redis_cluster)),
            settings.tick_partitions,
            queue_size=settings.ws_queue_size,
        )
        live_tasks = [
            asyncio.create_task(app.state.hub.run(stop)),
            asyncio.create_task(
                app.state.hub.run_health(lambda: routes_health.health_summary(app.state.redis, settings), stop)
            ),
        ]
    log.info("history API ready (storage mode: %s)", app.state.mode)
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*live_tasks, return_exceptions=True)
        if app.state.hub is not None:
            await app.state.hub.bus.close()
        if app.state.redis is not None:
            await app.state.redis.aclose()
        await _close_pools(app)


def _where(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location if part not in ("query", "path")) or "request"


def _hint(given: object) -> str:
    # An unencoded '+' in a query string arrives as a space: "...T10:00:00 05:00".
    if isinstance(given, str) and re.search(r"\d \d\d:?\d\d$", given):
        return " - encode '+' as %2B, or give the time in UTC with 'Z'"
    return ""


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    """422 with one readable line per problem, plus the structured errors for programs."""
    assert isinstance(error, RequestValidationError)
    problems = [
        f"{_where(e['loc'])}: {e['msg']} (got {e.get('input')!r}){_hint(e.get('input'))}" for e in error.errors()
    ]
    structured = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": structured})


async def _unknown_symbol(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": f"no data stored for symbol {error}; see /symbols"})


async def _unknown_source(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(error)})


async def _stored_data_error(request: Request, error: Exception) -> JSONResponse:
    """422: the request is valid, but stored rows in its range overflow the aggregation. Not a 503
    (retrying never helps) and not a bare 500 (the server works: other symbols and ranges answer);
    the same request fails until the rows are deleted, a range without them works."""
    if isinstance(error, StoredDataError):
        detail = f"{error}; a start/end that leaves out the offending ticks or bars works"
    else:  # any other read path: asyncpg.DataError (class 22) raised by stored values
        detail = f"stored data cannot be processed: {error}"
    log.warning("%s: %s", request.url.path, detail)
    return JSONResponse(status_code=422, content={"detail": detail})


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable for %s: %s", request.url.path, error)
    return JSONResponse(status_code=503, content={"detail": "the database is unavailable; retry shortly"})


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application for ``settings`` (its lifespan connects on start-up)."""
    check_exposure(settings)
    app = FastAPI(
        title="tradebot history API",
        version="1.0",
        description="OHLCV history of US equities from ticks and stored bars; worker health.",
        lifespan=lifespan,
        docs_url=None,  # served with local assets by add_offline_docs
        redoc_url=None,
    )
    add_offline_docs(app)
    app.state.settings = settings
    # encoded /history windows of this process (api/history_cache.py); None: every response fresh
    app.state.history_cache = HistoryCache(settings.history_cache_mb << 20) if settings.history_cache_mb else None
    app.include_router(routes_history.router)
    app.include_router(routes_health.router)
    app.include_router(routes_account.router)
    app.include_router(routes_activity.router)
    for risk_router in (routes_portfolio.router, routes_risk.router, routes_control.router):
        app.include_router(risk_router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_udf.router)
    app.include_router(routes_ws.router)
    dashboard.mount(app)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    if settings.cors_origins:  # closed unless origins are named
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.include_router(routes_backtests.router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(UnknownSymbolError, _unknown_symbol)
    app.add_exception_handler(UnknownSourceError, _unknown_source)
    app.add_exception_handler(StoredDataError, _stored_data_error)
    app.add_exception_handler(asyncpg.DataError, _stored_data_error)
    for error_type in TRANSIENT_DB_ERRORS:
        app.add_exception_handler(error_type, _database_unavailable)
    return app


def port_taken(host: str, port: int) -> bool:
    """Whether another program listens on host:port (then uvicorn could only fail, again and again)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def main() -> None:
    """Serve the API on API_HOST:API_PORT until Ctrl-C; a taken port is a setting to change (exit 78)."""
    with bootstrap() as settings:
        if port_taken(settings.api_host, settings.api_port):
            raise SettingsError(
                f"{settings.api_host}:{settings.api_port} is in use by another program; "
                "set API_PORT to a free port (or stop that program)"
            )
        with infrastructure(settings) as ready:
            host, port, level = ready.api_host, ready.api_port, ready.log_level.lower()
            # /ws frames go out uncompressed: permessage-deflate compresses every frame once per
            # client (its state is per connection), the largest cost of the live fan-out
            if ready.api_workers == 1:
                uvicorn.run(create_app(ready), host=host, port=port, log_level=level, ws_per_message_deflate=False)
                return
            # Each worker process builds its own app (worker_app) from the environment: the URLs
            # resolved here (embedded servers included) travel in it.
            assert ready.redis_url
            assert ready.database_url
            os.environ.update(REDIS_URL=ready.redis_url, DATABASE_URL=ready.database_url)
            os.environ[API_PROCESS_ENV] = str(os.getpid())
            app_factory = "tradebot.api.worker:app"
            uvicorn.run(
                app_factory,
                factory=True,
                workers=ready.api_workers,
                host=host,
                port=port,
                log_level=level,
                ws_per_message_deflate=False,
            )


def worker_app() -> FastAPI:
    """The app of one of API_WORKERS uvicorn worker processes (see tradebot/api/worker.py)."""
    settings = load_settings()
    setup_logging(settings.log_level)
    assert settings.redis_url
    assert settings.database_url  # set by main before the workers start
    return create_app(
        ReadySettings.resolved(settings, redis_url=settings.redis_url, database_url=settings.database_url)
    )


if __name__ == "__main__":
    main()
