"""The SQLite schema as numbered, append-only migrations.

Theory of operation
-------------------
``MIGRATIONS[i]`` is the SQL script that takes a database from schema version ``i`` to
``i + 1``; the version a database is at lives in ``PRAGMA user_version`` (0 for a new file).
:func:`migrate` applies the missing scripts in order, each in its own transaction together
with the new ``user_version``, so a crash leaves the database at one version or the next,
never in between. A database newer than :data:`SCHEMA_VERSION` is refused: this code cannot
know what the newer schema means.

Invariants: released migrations are never edited or reordered, only appended to. The schema
stores and indexes; it holds no business rules (no triggers, no checks of feed rules). Its
constraints only guard integrity: unique keys and the references between tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from microsync.errors import StorageError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

_V1: Final = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE certificates (
    device BLOB PRIMARY KEY,
    record BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE revocations (
    device BLOB PRIMARY KEY REFERENCES certificates (device),
    record BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE feeds (
    group_id BLOB NOT NULL,
    device BLOB NOT NULL,
    head_seq INTEGER NOT NULL,
    head_id BLOB,
    forked_at INTEGER,
    PRIMARY KEY (group_id, device)
) WITHOUT ROWID;

CREATE TABLE entries (
    group_id BLOB NOT NULL,
    device BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    wire BLOB NOT NULL,
    PRIMARY KEY (group_id, device, seq)
) WITHOUT ROWID;

-- A row exists while the body is kept; purging a body deletes its row.
CREATE TABLE bodies (
    id BLOB PRIMARY KEY REFERENCES entries (id),
    body BLOB NOT NULL
);

-- A rowid table: pending_at() returns entries in arrival order (rowid order).
CREATE TABLE pending (
    group_id BLOB NOT NULL,
    device BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    wire BLOB NOT NULL,
    body BLOB,
    PRIMARY KEY (group_id, device, seq, id)
);

CREATE TABLE forks (
    group_id BLOB NOT NULL,
    device BLOB NOT NULL,
    seq INTEGER NOT NULL,
    first BLOB NOT NULL,
    second BLOB NOT NULL
);
CREATE INDEX forks_by_feed ON forks (group_id, device);
"""

# Version 2: an entry's body moves into its row of ``entries`` (``NULL`` once purged), so
# storing an entry is one statement and two B-trees (the key and the id index) instead of
# two statements and four (``bodies`` was a rowid table with an index on its id). A purge sets
# the column to ``NULL``; with ``secure_delete`` the old cell is overwritten, as a deleted row
# of ``bodies`` was.
_V2: Final = """
ALTER TABLE entries ADD COLUMN body BLOB;
UPDATE entries SET body = (SELECT b.body FROM bodies AS b WHERE b.id = entries.id);
DROP TABLE bodies;
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2)
"""Append-only: ``MIGRATIONS[i]`` upgrades schema version ``i`` to ``i + 1``."""

SCHEMA_VERSION: Final = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    """The schema version recorded in the database (0 for a new one)."""
    row = db.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> None:
    """Bring ``db`` (opened with ``isolation_level=None``) up to ``len(migrations)``.

    Raises :class:`StorageError` if the database is newer than that; ``sqlite3.Error`` from a
    failing script propagates after that script's transaction was rolled back (the database
    stays at the version before it).
    """
    current = schema_version(db)
    if current > len(migrations):
        raise StorageError(
            f"the profile database has schema version {current}, newer than the "
            f"{len(migrations)} this version of microsync knows; upgrade microsync to open it"
        )
    for version in range(current + 1, len(migrations) + 1):
        _apply(db, version, migrations[version - 1])


def _apply(db: sqlite3.Connection, version: int, script: str) -> None:
    try:
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
