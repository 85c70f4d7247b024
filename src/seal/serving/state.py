"""What a self-adapting model has learned, in one SQLite file: tenants, documents, knowledge versions.

Every change is one transaction, so a process killed at any moment leaves the state as it was before
the change or after it. Documents move ``queued -> learning -> learned`` (or ``failed``); one that was
``learning`` when its process died is queued again on open. A version is a tenant's knowledge as it
was committed: the adapter file it is served from (with the file's SHA-256) and the documents in it.
API keys are stored as SHA-256 hashes (they are random 256-bit tokens, so a fast hash is enough).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    key_hash TEXT UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(id),
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    self_edit TEXT,
    error TEXT,
    created REAL NOT NULL,
    learned REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS documents_by_tenant ON documents(tenant, created);
CREATE TABLE IF NOT EXISTS versions (
    tenant TEXT NOT NULL REFERENCES tenants(id),
    number INTEGER NOT NULL,
    adapter TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    documents TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tenant, number)
);
"""

STATUSES = ("queued", "learning", "learned", "failed")
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Document:
    id: str
    tenant: str
    title: str
    status: str
    self_edit: str | None
    error: str | None
    created: float
    learned: float | None
    seconds: float | None

    def public(self) -> dict[str, Any]:
        """What a user sees of it (everything but the tenant)."""
        return {k: v for k, v in self.__dict__.items() if k != "tenant"}


@dataclass(frozen=True)
class Version:
    tenant: str
    number: int
    adapter: str
    sha256: str
    documents: tuple[str, ...]


class Forgotten(LookupError):
    """The document was deleted (forgotten) while it was being read."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class State:
    """The state file of a self-adapting model; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")  # a forgotten document's text is overwritten, not left behind
        self._db.executescript(SCHEMA)  # idempotent; executescript commits on its own
        with self._transaction() as db:
            db.execute("UPDATE documents SET status = 'queued' WHERE status = 'learning'")
            db.execute("INSERT OR IGNORE INTO tenants (id, key_hash, created) VALUES (?, NULL, ?)", (DEFAULT_TENANT, 0))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def backup(self, target: str | Path) -> None:
        """A consistent copy of the file at ``target`` (SQLite's online backup)."""
        with self._lock, closing(sqlite3.connect(target)) as copy:
            self._db.backup(copy)

    # tenants

    def create_tenant(self) -> tuple[str, str]:
        """A new tenant: ``(id, api key)``; only the key's hash is kept."""
        tenant, key = uuid.uuid4().hex[:12], "seal-" + secrets.token_urlsafe(32)
        with self._transaction() as db:
            db.execute("INSERT INTO tenants VALUES (?, ?, ?)", (tenant, hash_key(key), time.time()))
        return tenant, key

    def tenant_of_key(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM tenants WHERE key_hash = ?", (hash_key(key),)).fetchone()
        return row["id"] if row else None

    # documents

    def add_document(self, tenant: str, title: str, text: str, max_queued: int) -> Document | None:
        """Queue a document; None if the tenant already has ``max_queued`` waiting to be learned."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM tenants WHERE id = ?", (tenant,)).fetchone() is None:
                raise ValueError(f"no tenant {tenant!r}: make one with create_tenant()")
            waiting = db.execute(
                "SELECT COUNT(*) FROM documents WHERE tenant = ? AND status IN ('queued', 'learning')", (tenant,)
            ).fetchone()[0]
            if waiting >= max_queued:
                return None
            document_id = "doc-" + uuid.uuid4().hex[:16]
            db.execute(
                "INSERT INTO documents (id, tenant, title, text, status, created) VALUES (?, ?, ?, ?, 'queued', ?)",
                (document_id, tenant, title, text, time.time()),
            )
        return self.document(tenant, document_id)

    def document(self, tenant: str, document_id: str) -> Document | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM documents WHERE id = ? AND tenant = ?", (document_id, tenant)
            ).fetchone()
        return _document(row) if row else None

    def text(self, document_id: str) -> str:
        return self._field(document_id, "text")

    def title(self, document_id: str) -> str:
        return self._field(document_id, "title")

    def self_edit(self, document_id: str) -> str | None:
        return self._field(document_id, "self_edit")

    def _field(self, document_id: str, name: str) -> Any:
        with self._lock:
            row = self._db.execute(f"SELECT {name} FROM documents WHERE id = ?", (document_id,)).fetchone()
        if row is None:
            raise Forgotten(document_id)
        return row[name]

    def documents(self, tenant: str) -> list[Document]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM documents WHERE tenant = ? ORDER BY created, id", (tenant,))
            return [_document(row) for row in rows]

    def next_queued(self) -> Document | None:
        """The oldest queued document, now marked ``learning``."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM documents WHERE status = 'queued' ORDER BY created, id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE documents SET status = 'learning' WHERE id = ?", (row["id"],))
        return self.document(row["tenant"], row["id"])

    def set_self_edit(self, document_id: str, self_edit: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE documents SET self_edit = ? WHERE id = ?", (self_edit, document_id))

    def fail(self, document_id: str, error: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE documents SET status = 'failed', error = ? WHERE id = ?", (error, document_id))

    def delete_document(self, tenant: str, document_id: str) -> bool:
        """Forget a document: its row goes; the versions that hold it stay until the caller commits one
        without it. False if the tenant has no such document."""
        with self._transaction() as db:
            return db.execute("DELETE FROM documents WHERE id = ? AND tenant = ?", (document_id, tenant)).rowcount > 0

    # versions

    def commit_version(
        self, tenant: str, adapter: str, sha256: str, documents: list[str], learned: dict[str, float]
    ) -> Version | None:
        """Make a new version the tenant's knowledge, in one transaction with the documents it marks
        ``learned`` (id -> seconds spent learning it). None, and nothing changed, if one of ``documents``
        was deleted meanwhile: a version never holds a forgotten document."""
        with self._transaction() as db:
            present = {
                row["id"]
                for row in db.execute(
                    f"SELECT id FROM documents WHERE tenant = ? AND id IN ({','.join('?' * len(documents))})",
                    (tenant, *documents),
                )
            }
            if present != set(documents):
                return None
            number = db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE tenant = ?", (tenant,))
            number = number.fetchone()[0]
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                (tenant, number, adapter, sha256, json.dumps(documents), time.time()),
            )
            for document_id, seconds in learned.items():
                db.execute(
                    "UPDATE documents SET status = 'learned', learned = ?, seconds = ?, error = NULL WHERE id = ?",
                    (time.time(), seconds, document_id),
                )
        return Version(tenant, number, adapter, sha256, tuple(documents))

    def versions(self, tenant: str) -> list[Version]:
        """The tenant's versions, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM versions WHERE tenant = ? ORDER BY number DESC", (tenant,))
            return [_version(row) for row in rows]

    def adapters_in_use(self) -> set[str]:
        with self._lock:
            return {row["adapter"] for row in self._db.execute("SELECT adapter FROM versions WHERE adapter != ''")}

    def drop_versions(self, tenant: str, numbers: list[int]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM versions WHERE tenant = ? AND number = ?", [(tenant, n) for n in numbers])

    def counts(self) -> Iterator[tuple[str, int]]:
        """Documents by status, over all tenants (for metrics)."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM documents GROUP BY status").fetchall()
        found = {row["status"]: row["n"] for row in rows}
        return ((status, found.get(status, 0)) for status in STATUSES)


def _document(row: sqlite3.Row) -> Document:
    return Document(**{k: row[k] for k in Document.__dataclass_fields__})


def _version(row: sqlite3.Row) -> Version:
    return Version(row["tenant"], row["number"], row["adapter"], row["sha256"], tuple(json.loads(row["documents"])))
