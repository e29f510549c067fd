"""The keeper database's schema, as numbered migrations (``PRAGMA user_version``).

Theory of operation
-------------------
Version 1 (the keeper's first store, ``user_version`` 0 on disk) kept ``items`` as a rowid
table with three indexes, each repeating the 32-byte mailbox id: ``(mailbox, cursor)``,
``(mailbox, item)`` and ``stored_at``. Version 2 numbers each mailbox (``mailboxes.n``) and
keys each item by ``n << 32 | cursor`` as its rowid: one b-tree for the rows, in mailbox and
cursor order, and one index, ``items(item)``, for dropping duplicates (its entries end in the
rowid, so a lookup is confined to one mailbox's range). Retention needs no age index:
``stored_at`` never decreases along a mailbox's cursors (a store writes the larger of now and
the mailbox's ``last_ms``), so what expired is a prefix of each mailbox.

:func:`migrate_keeper` applies what is missing with :func:`~microsync.storage.migrations.migrate`:
each step in one transaction with its ``user_version``, so a crash leaves the database at one
version or the next. Version 2 copies version 1's rows over (the running maximum of
``stored_at`` per mailbox makes the order hold for old rows too) and drops the old tables.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from microsync.errors import StorageError
from microsync.storage.migrations import migrate, schema_version

__all__ = ["CURSOR_BITS", "KEEPER_MIGRATIONS", "KEEPER_SCHEMA_VERSION", "migrate_keeper"]

CURSOR_BITS: Final = 32
"""An item's rowid is ``mailbox number << CURSOR_BITS | cursor``."""

_V1: Final = """
CREATE TABLE IF NOT EXISTS mailboxes (
    id BLOB PRIMARY KEY,
    next_cursor INTEGER NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    mailbox BLOB NOT NULL,
    cursor INTEGER NOT NULL,
    item BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (mailbox, cursor),
    UNIQUE (mailbox, item)
);
CREATE INDEX IF NOT EXISTS items_by_age ON items (stored_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""

_V2: Final = f"""
ALTER TABLE mailboxes RENAME TO mailboxes_v1;
ALTER TABLE items RENAME TO items_v1;
CREATE TABLE mailboxes (
    n INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    next_cursor INTEGER NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    last_ms INTEGER NOT NULL
);
CREATE TABLE items (
    key INTEGER PRIMARY KEY,
    item BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX items_by_id ON items (item);
INSERT INTO mailboxes (id, next_cursor, items, bytes, last_ms)
    SELECT id, next_cursor, items, bytes,
        COALESCE((SELECT MAX(stored_at) FROM items_v1 WHERE mailbox = mailboxes_v1.id), 0)
    FROM mailboxes_v1 ORDER BY id;
INSERT INTO items (key, item, stored_at, size, payload)
    SELECT (m.n << {CURSOR_BITS}) | i.cursor, i.item,
        MAX(i.stored_at) OVER (PARTITION BY i.mailbox ORDER BY i.cursor), i.size, i.payload
    FROM items_v1 AS i JOIN mailboxes AS m ON m.id = i.mailbox ORDER BY 1;
DROP TABLE items_v1;
DROP TABLE mailboxes_v1;
"""

KEEPER_MIGRATIONS: Final = (_V1, _V2)
KEEPER_SCHEMA_VERSION: Final = len(KEEPER_MIGRATIONS)


def migrate_keeper(db: sqlite3.Connection) -> None:
    """Bring the keeper database ``db`` (``isolation_level=None``) to the current schema;
    :class:`StorageError` if it is newer than this code knows."""
    current = schema_version(db)
    if current > KEEPER_SCHEMA_VERSION:
        raise StorageError(
            f"the keeper database has schema version {current}, newer than the "
            f"{KEEPER_SCHEMA_VERSION} this version of microsync knows; upgrade microsync"
        )
    migrate(db, KEEPER_MIGRATIONS)
