"""SQLite state of one engine instance: services, domains and API keys.

Each thread gets its own connection; the database runs in WAL mode so that
readers never block the writer, and every write is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

__all__ = ["ApiKeyRecord", "DomainRecord", "ServiceRecord", "Store"]

# Each entry upgrades the schema by one version; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        port INTEGER NOT NULL,
        container_id TEXT,
        host_port INTEGER,
        options TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE domains (
        domain TEXT PRIMARY KEY,
        service TEXT NOT NULL REFERENCES services(name) ON DELETE CASCADE,
        proxy_headers TEXT NOT NULL DEFAULT '{}',
        certificate TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX domains_service ON domains(service);
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL,
        ip TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
)


@attrs.frozen
class ServiceRecord:
    """A deployed service as stored."""

    name: str
    image: str
    port: int
    container_id: str | None
    host_port: int | None
    options: dict[str, Any]
    updated_at: float


@attrs.frozen
class DomainRecord:
    """A domain routed to a service."""

    domain: str
    service: str
    proxy_headers: dict[str, str]
    certificate: str | None


@attrs.frozen
class ApiKeyRecord:
    """An API key as stored: only its hash, never the key itself."""

    key_id: str
    key_hash: str
    ip: str
    created_at: float
    expires_at: float
    revoked_at: float | None

    def is_active(self, now: float | None = None) -> bool:
        """Whether the key is neither revoked nor expired."""
        now = time.time() if now is None else now
        return self.revoked_at is None and self.expires_at > now


class Store:
    """The SQLite database of one instance.

    :param path: database file; its directory is created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._migrate()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
        return connection

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction, rolled back on error."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        """Number of migrations applied."""
        return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    # Services

    def save_service(
        self,
        name: str,
        image: str,
        port: int,
        container_id: str | None,
        host_port: int | None,
        options: dict[str, Any],
    ) -> None:
        """Insert or replace the record of service ``name``."""
        with self.transaction() as db:
            db.execute(
                """
                INSERT INTO services (name, image, port, container_id, host_port, options, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET
                    image = excluded.image, port = excluded.port,
                    container_id = excluded.container_id, host_port = excluded.host_port,
                    options = excluded.options, updated_at = excluded.updated_at
                """,
                (name, image, port, container_id, host_port, json.dumps(options), time.time()),
            )

    def get_service(self, name: str) -> ServiceRecord | None:
        """Return the record of service ``name``, or ``None``."""
        row = self._connection().execute("SELECT * FROM services WHERE name = ?", (name,)).fetchone()
        return _service(row) if row else None

    def list_services(self) -> list[ServiceRecord]:
        """Return every service record, sorted by name."""
        rows = self._connection().execute("SELECT * FROM services ORDER BY name").fetchall()
        return [_service(row) for row in rows]

    def delete_service(self, name: str) -> None:
        """Delete service ``name`` and, by cascade, its domains."""
        with self.transaction() as db:
            db.execute("DELETE FROM services WHERE name = ?", (name,))

    # Domains

    def add_domain(self, domain: str, service: str, proxy_headers: dict[str, str]) -> None:
        """Bind ``domain`` to ``service``, replacing its headers if already bound there.

        :raises ValueError: when ``domain`` is bound to another service.
        """
        with self.transaction() as db:
            row = db.execute("SELECT service FROM domains WHERE domain = ?", (domain,)).fetchone()
            if row and row["service"] != service:
                raise ValueError(f"domain {domain!r} is bound to service {row['service']!r}")
            db.execute(
                """
                INSERT INTO domains (domain, service, proxy_headers, created_at) VALUES (?, ?, ?, ?)
                ON CONFLICT(domain) DO UPDATE SET proxy_headers = excluded.proxy_headers
                """,
                (domain, service, json.dumps(proxy_headers), time.time()),
            )

    def set_certificate(self, domain: str, certificate: str | None) -> None:
        """Record the certificate name that serves ``domain``."""
        with self.transaction() as db:
            db.execute("UPDATE domains SET certificate = ? WHERE domain = ?", (certificate, domain))

    def remove_domain(self, domain: str) -> None:
        """Unbind ``domain``."""
        with self.transaction() as db:
            db.execute("DELETE FROM domains WHERE domain = ?", (domain,))

    def get_domain(self, domain: str) -> DomainRecord | None:
        """Return the record of ``domain``, or ``None``."""
        row = self._connection().execute("SELECT * FROM domains WHERE domain = ?", (domain,)).fetchone()
        return _domain(row) if row else None

    def domains_of(self, service: str) -> list[DomainRecord]:
        """Return the domains of ``service``, sorted."""
        rows = self._connection().execute(
            "SELECT * FROM domains WHERE service = ? ORDER BY domain", (service,)
        ).fetchall()
        return [_domain(row) for row in rows]

    # API keys

    def add_key(self, key_id: str, key_hash: str, ip: str, expires_at: float) -> ApiKeyRecord:
        """Store a new API key hash bound to ``ip``."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO api_keys (key_id, key_hash, ip, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, key_hash, ip, now, expires_at),
            )
        return ApiKeyRecord(key_id, key_hash, ip, now, expires_at, None)

    def get_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key ``key_id``, or ``None``."""
        row = self._connection().execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return ApiKeyRecord(**dict(row)) if row else None

    def active_keys(self) -> list[ApiKeyRecord]:
        """Return the keys that are neither revoked nor expired, newest first."""
        rows = self._connection().execute(
            "SELECT * FROM api_keys WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC",
            (time.time(),),
        ).fetchall()
        return [ApiKeyRecord(**dict(row)) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke ``key_id``; return whether an active key was revoked."""
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            return cursor.rowcount > 0


def _service(row: sqlite3.Row) -> ServiceRecord:
    values = dict(row)
    values["options"] = json.loads(values["options"])
    return ServiceRecord(**values)


def _domain(row: sqlite3.Row) -> DomainRecord:
    return DomainRecord(
        domain=row["domain"],
        service=row["service"],
        proxy_headers=json.loads(row["proxy_headers"]),
        certificate=row["certificate"],
    )
