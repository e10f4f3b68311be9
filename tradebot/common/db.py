"""asyncpg pools and the few helpers every database user needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg import exceptions as pg_errors

# Worth retrying with backoff: the server is gone, restarting, or cannot take writes right now
# (disk full 53100, out of memory 53200 and the rest of class 53, read-only 25006, lock timeout
# 55P03, cancelled 57014), or a concurrent writer made this transaction lose a deadlock. None of
# these says anything about the rows at hand, so they never count as a failed delivery; a
# retried batch is safe because every write is idempotent.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    pg_errors.PostgresConnectionError,
    pg_errors.CannotConnectNowError,
    pg_errors.AdminShutdownError,
    pg_errors.CrashShutdownError,
    pg_errors.TooManyConnectionsError,
    pg_errors.TransactionRollbackError,
    pg_errors.InsufficientResourcesError,
    pg_errors.ReadOnlySQLTransactionError,
    pg_errors.LockNotAvailableError,
    pg_errors.QueryCanceledError,
    # What asyncpg raises when the server goes away in the middle of a COPY or a query.
    pg_errors.InterfaceError,
    pg_errors.InternalClientError,
)

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout_s: float = 60.0,
    application_name: str = "tradebot",
    reset_sessions: bool = True,
    session_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose sessions run in UTC, so nothing depends on the server's time zone setting.

    ``reset_sessions=False`` for a user that sets no session state (no SET, advisory lock, cursor
    or LISTEN outside a transaction): a released connection then skips asyncpg's reset query
    (``RESET ALL; CLOSE ALL; UNLISTEN *; ...``), a round trip per use; an open transaction is still
    rolled back. ``session_settings``: further settings of every session (e.g. {"jit": "off"})."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        server_settings={"timezone": "UTC", "application_name": application_name, **(session_settings or {})},
        reset=None if reset_sessions else _keep_session,
    )
    assert pool is not None  # create_pool only returns None when awaited without a loop
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool's reset that leaves the session as it is (asyncpg has already ended any transaction)."""


@asynccontextmanager
async def connection(executor: Executor) -> AsyncIterator[asyncpg.Connection]:
    """A connection from a pool (released afterwards) or the connection itself."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn:
            yield conn
    else:
        yield executor


async def is_reachable(executor: Executor, *, timeout_s: float = 2.0) -> bool:
    """True when the database answers a trivial query within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s), connection(executor) as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)
    except TRANSIENT_DB_ERRORS:
        return False


def with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database (tests and the benchmark use their own)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def recreate_database(dsn: str, database: str) -> str:
    """Drop and create ``database`` on the server of ``dsn``; returns its URL."""
    if not database.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {database!r}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return with_database(dsn, database)


async def drop_database(dsn: str, database: str) -> None:
    """Drop ``database`` on the server of ``dsn`` (connected sessions are terminated)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
