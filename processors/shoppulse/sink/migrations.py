"""Ordered SQL migrations from ``clickhouse/``: each applied once, recorded, checksummed.

A migration is ``clickhouse/NNNN_description.sql``: statements separated by semicolons,
with unqualified table names (they land in the configured database, so the same files
apply unchanged to any ClickHouse server). ClickHouse DDL is not transactional, so a
migration is recorded only after all its statements succeeded, and statements should be
idempotent (``IF NOT EXISTS``) so that a migration interrupted halfway can simply run again.
An applied file must never change: its checksum is compared on every run."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from shoppulse.sql_text import split_statements

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ACCESS_STATEMENT = re.compile(
    r"^(?:\s|--[^\n]*\n)*(?:(?:CREATE|ALTER|DROP)\s+(?:USER|ROLE|SETTINGS\s+PROFILE|PROFILE|ROW\s+POLICY|POLICY|QUOTA)"
    r"|GRANT|REVOKE)\b", re.I)
READER_ROLE = "grafana_reader"


class MigrationError(RuntimeError):
    """The migrations folder or the database's migration history is inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def statements(self) -> list[str]:
        return split_statements(self.path.read_text())


def discover(folder: Path) -> list[Migration]:
    """The migrations in ``folder``, in order; a badly named or duplicate file is an error."""
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} does not exist: set SHOPPULSE_MIGRATIONS_DIR")
    migrations: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path} is not named NNNN_description.sql (lower case, four-digit version)")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(f"{path.name} and {migrations[version].path.name} share version {version:04d}")
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations[version] = Migration(version, path.name, path, checksum)
    return [migrations[v] for v in sorted(migrations)]


def ensure_history_table(client: Client) -> None:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version UInt32, name String, checksum String, statements UInt32,"
        " applied_at DateTime64(3, 'UTC')"
        ") ENGINE = MergeTree ORDER BY version"
    )


def applied_history(client: Client) -> dict[int, tuple[str, str]]:
    rows = client.query(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version").result_rows
    return {int(version): (name, checksum) for version, name, checksum in rows}


def pending(migrations: list[Migration], history: dict[int, tuple[str, str]]) -> list[Migration]:
    """The migrations still to apply, after checking that history and files agree."""
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in history.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {name} is recorded as applied but its file is missing from the migrations folder: "
                "restore it (applied migrations are never deleted)")
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.name} was changed after it was applied (checksum {checksum[:12]}… in the database, "
                f"{migration.checksum[:12]}… on disk): restore the file and add a new migration for the change")
    return [m for m in migrations if m.version not in history]


def migrate(connect: Callable[[str | None], Client], database: str, folder: Path) -> list[Migration]:
    """Apply every pending migration in order; returns those applied now.

    ``connect(database)`` returns a clickhouse-connect client for that database
    (``None``: the server's default database)."""
    migrations = discover(folder)
    admin = connect("default")
    try:
        admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    finally:
        admin.close()
    client = connect(database)
    try:
        ensure_history_table(client)
        todo = pending(migrations, applied_history(client))
        for migration in todo:
            apply_one(client, migration)
        return todo
    finally:
        client.close()


def is_access_statement(statement: str) -> bool:
    """Users, roles, profiles, quotas, policies and grants: access management, not schema."""
    return bool(_ACCESS_STATEMENT.match(statement))


def has_access_storage(client: Client) -> bool:
    """Whether the server can store users and roles (a real server; the embedded engine cannot)."""
    rows = client.query("SELECT count() FROM system.user_directories "
                        "WHERE type IN ('local_directory', 'replicated', 'memory')").result_rows
    return bool(rows[0][0])


def apply_one(client: Client, migration: Migration) -> None:
    started = time.perf_counter()
    statements = migration.statements
    access = None
    for index, statement in enumerate(statements, 1):
        if is_access_statement(statement):
            access = has_access_storage(client) if access is None else access
            if not access:
                log.info("access statement skipped: the server has no writable access storage",
                         extra={"migration": migration.name, "statement": index})
                continue
        try:
            client.command(statement)
        except Exception as exc:
            raise MigrationError(f"{migration.name}, statement {index} of {len(statements)} failed: {exc}") from exc
    client.insert(MIGRATIONS_TABLE,
                  [[migration.version, migration.name, migration.checksum, len(statements), datetime.now(UTC)]],
                  column_names=["version", "name", "checksum", "statements", "applied_at"])
    log.info("migration applied", extra={"migration": migration.name, "statements": len(statements),
                                         "seconds": round(time.perf_counter() - started, 3)})


def ensure_reader_user(client: Client, user: str, password: str) -> bool:
    """Create (or re-key) Grafana's read-only user with the ``grafana_reader`` role; False when the
    server keeps no users (the embedded engine: its endpoint enforces the reader itself)."""
    if not has_access_storage(client):
        return False
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", user):
        raise MigrationError(f"CLICKHOUSE_GRAFANA_USER={user!r} is not a plain user name (letters, digits, _)")
    client.command(f"CREATE USER IF NOT EXISTS `{user}` IDENTIFIED WITH sha256_password BY %(password)s",
                   parameters={"password": password})
    client.command(f"ALTER USER `{user}` IDENTIFIED WITH sha256_password BY %(password)s",
                   parameters={"password": password})
    client.command(f"GRANT {READER_ROLE} TO `{user}`")
    client.command(f"ALTER USER `{user}` DEFAULT ROLE {READER_ROLE} SETTINGS PROFILE '{READER_ROLE}'")
    return True
