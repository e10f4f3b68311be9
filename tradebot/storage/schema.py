"""Numbered SQL migrations, applied once each, safely by several processes at once.

Files live in ``migrations/`` (both modes), ``migrations/timescale/`` (only when the
``timescaledb`` extension is present) and ``migrations/postgresql/`` (only without it: the kept
series that stand in for the continuous aggregates). Versioned files (``0001_name.sql``) apply in
number order across the folders and are recorded in ``schema_migrations``. Repeatable files (``R_name.sql``)
apply after them whenever their rendered text changes, which is how policies follow the settings.
A file whose first line is ``-- tradebot:no-transaction`` runs statement by statement outside a
transaction block (TimescaleDB refuses some DDL inside one); every other file runs in one
transaction together with its bookkeeping row. A session advisory lock serialises runners, so a
second process waits and then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tradebot.storage.timescale import Mode, TimescaleOptions

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
NO_TRANSACTION_MARKER = "-- tradebot:no-transaction"
MIGRATION_LOCK_KEY = 7_466_133_871_060_291  # arbitrary, constant: "the tradebot schema"
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(RuntimeError):
    """A migration cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: versioned (``0001``) or repeatable (``R_policies``)."""

    version: str
    path: Path

    @property
    def repeatable(self) -> bool:
        return self.version.startswith("R_")

    @property
    def transactional(self) -> bool:
        return not self.path.read_text().startswith(NO_TRANSACTION_MARKER)

    def statements(self, values: dict[str, str | None]) -> list[str]:
        """The rendered statements, the first headed by the file name and how it runs (for review)."""
        statements = split_statements(self.render(values))
        how = "in one transaction" if self.transactional else "statement by statement, outside a transaction"
        if statements:
            statements[0] = f"-- {self.path.relative_to(MIGRATIONS_DIR)} ({how})\n{statements[0]}"
        return statements

    def render(self, values: dict[str, str | None]) -> str:
        """The file with each ``{{name}}`` replaced by a SQL literal."""

        def literal(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise MigrationError(f"{self.path.name}: no value for {{{{{name}}}}}")
            value = values[name]
            return "NULL" if value is None else "'" + value.replace("'", "''") + "'"

        return _PLACEHOLDER.sub(literal, self.path.read_text())


def load_migrations(mode: Mode) -> list[Migration]:
    """The migrations of ``mode``: versioned in number order, then repeatable ones by name."""
    found = [Migration(_version(path), path) for path in MIGRATIONS_DIR.glob("*.sql")]
    folder = MIGRATIONS_DIR / ("timescale" if mode == "timescaledb" else "postgresql")
    found += [Migration(_version(path), path) for path in folder.glob("*.sql")]
    return sorted(found, key=lambda m: (m.repeatable, m.version))


def _version(path: Path) -> str:
    return path.stem if path.stem.startswith("R_") else path.stem.split("_", 1)[0]


def split_statements(sql: str) -> list[str]:
    """Statements of a file, split at semicolons that end a line outside ``$$`` bodies."""
    statements, current, in_body = [], [], False
    for line in sql.splitlines():
        current.append(line)
        if line.count("$$") % 2:
            in_body = not in_body
        if not in_body and line.rstrip().endswith(";") and not line.lstrip().startswith("--"):
            statements.append("\n".join(current).strip())
            current = []
    statements.append("\n".join(current).strip())
    return [s for s in statements if any(not ln.strip().startswith("--") for ln in s.splitlines() if ln.strip())]


def checksum(text: str) -> str:
    """Fingerprint of a file's (rendered) text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_ddl(mode: Mode, options: TimescaleOptions | None = None) -> list[str]:
    """Every statement a fresh database of ``mode`` would run, for review (needs no database)."""
    values = (options or TimescaleOptions()).template_values()
    statements = ["CREATE EXTENSION IF NOT EXISTS timescaledb;"] if mode == "timescaledb" else []
    for migration in load_migrations(mode):
        statements += migration.statements(values)
    return statements


def migrate(dsn: str, *, dry_run: bool = False, options: TimescaleOptions | None = None) -> list[str]:
    """Apply pending migrations (or, with ``dry_run``, only list them); returns their statements.

    For synchronous callers (the CLI, the supervisor); async code awaits :func:`apply_migrations`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: the expected case
        return asyncio.run(apply_migrations(dsn, dry_run=dry_run, options=options))
    raise RuntimeError("migrate() is for synchronous callers; in async code use await apply_migrations(...)")


async def apply_migrations(dsn: str, *, dry_run: bool = False, options: TimescaleOptions | None = None) -> list[str]:
    """Apply pending migrations (or, with ``dry_run``, only list them); returns their statements."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "tradebot-migrate"})
    conn.add_log_listener(_log_notice)  # a long migration's progress (RAISE NOTICE)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _migrate_locked(conn, dry_run, options or TimescaleOptions())
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


def _log_notice(conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
    if message.severity in ("NOTICE", "INFO", "WARNING") and not message.message.endswith("skipping"):
        log.info("migration: %s", message.message)


async def _migrate_locked(conn: asyncpg.Connection, dry_run: bool, options: TimescaleOptions) -> list[str]:
    statements: list[str] = []
    mode = await _prepare_timescale(conn, dry_run, statements)
    if mode == "timescaledb":
        await check_retention(conn, options)
    if not dry_run:
        await conn.execute(_BOOKKEEPING)
    applied = await _applied(conn)
    values = options.template_values()
    for migration in load_migrations(mode):
        text = migration.render(values)
        digest = checksum(text if migration.repeatable else migration.path.read_text())
        if not _is_pending(migration, applied.get(migration.version), digest):
            continue
        pending = migration.statements(values)
        statements += pending
        if not dry_run:
            await _apply(conn, migration, pending, digest)
    return statements


def _is_pending(migration: Migration, applied_digest: str | None, digest: str) -> bool:
    """Never applied, or (repeatable only) its rendered text changed since."""
    if applied_digest is None:
        return True
    if migration.repeatable:
        return applied_digest != digest
    if applied_digest != digest:
        log.warning(
            "%s changed after it was applied; it is not re-run: put changes in a new numbered file", migration.path.name
        )
    return False


async def _prepare_timescale(conn: asyncpg.Connection, dry_run: bool, statements: list[str]) -> Mode:
    """Create the timescaledb extension when the server offers it; the mode that results."""
    installed = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if not installed:
        available = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        if not available:
            return "postgresql"
        preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
        if "timescaledb" not in [name.strip() for name in preloaded.split(",")]:
            # CREATE EXTENSION would end the server's session with a FATAL error (it must be preloaded)
            log.warning(
                "timescaledb is installed but not in shared_preload_libraries; using plain PostgreSQL "
                "(to use TimescaleDB set shared_preload_libraries = 'timescaledb' and restart the server)"
            )
            return "postgresql"
        statements.append("CREATE EXTENSION IF NOT EXISTS timescaledb;")
        if dry_run:
            return "timescaledb"
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except asyncpg.PostgresError as error:  # e.g. no privilege
            log.warning("timescaledb is available but could not be created (%s); using plain PostgreSQL", error)
            statements.pop()
            return "postgresql"
    # The Apache-2 build lacks compression and continuous aggregates: the plain path serves there.
    if await conn.fetchval("SELECT current_setting('timescaledb.license', true)") == "apache":
        log.warning(
            "timescaledb runs under the Apache license (no compression or continuous aggregates); "
            "using the plain-PostgreSQL schema"
        )
        return "postgresql"
    return "timescaledb"


async def check_retention(conn: asyncpg.Connection, options: TimescaleOptions) -> None:
    """Refuse a raw-tick retention that would cut into the 1-minute aggregate's refresh window."""
    if options.tick_retention is None:
        return
    try:
        longer = await conn.fetchval(
            "SELECT $1::text::interval > $2::text::interval", options.tick_retention, options.refresh_1m_start_offset
        )
    except asyncpg.PostgresError as error:
        raise MigrationError(f"TICK_RETENTION {options.tick_retention!r} is not an interval: {error}") from None
    if not longer:
        raise MigrationError(
            f"TICK_RETENTION ({options.tick_retention}) must be longer than the 1-minute aggregate's refresh "
            f"window ({options.refresh_1m_start_offset}), or dropped ticks would erase aggregated minutes"
        )


async def _applied(conn: asyncpg.Connection) -> dict[str, str]:
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def _apply(conn: asyncpg.Connection, migration: Migration, statements: list[str], digest: str) -> None:
    log.info("applying migration %s", migration.path.name)
    record = (
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3) "
        "ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()"
    )
    if migration.transactional:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(record, migration.version, migration.path.name, digest)
        return
    for statement in statements:  # each in its own implicit transaction; re-runnable by design
        await conn.execute(statement)
    await conn.execute(record, migration.version, migration.path.name, digest)
