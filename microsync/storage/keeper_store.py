"""The keeper's SQLite store: opaque items in mailboxes, crash-safe and purged for real.

Theory of operation
-------------------
One database file, ``keeper.sqlite3`` under the keeper's data directory, in WAL mode with
``synchronous=FULL`` (what :meth:`KeeperStore.put` returned survives ``kill -9`` and power loss)
and ``secure_delete=ON`` (a deleted payload's bytes are overwritten, not left in free pages).
After a delete or an expiry the WAL is checkpointed and truncated, so no copy of a purged item
stays in the log either.

Tables: ``mailboxes(id, next_cursor, items, bytes)`` and ``items(mailbox, cursor, item,
stored_at, size, payload)`` with ``(mailbox, item)`` unique: pushing an item id again returns
the cursor it already has (nothing is duplicated by a client that retries after a crash).
Cursors grow per mailbox and are never reused (an emptied mailbox keeps its row, ~80 bytes,
so a client resuming after cursor ``n`` never misses a new item numbered below it). Reads
page through metadata, then fetch payloads a bounded batch at a time
(:meth:`KeeperStore.payloads`): memory does not grow with a mailbox, however large it is.

Quotas: ``mailbox_quota`` bytes (and ``mailbox_items``) per mailbox, refused with
:class:`MailboxFull`; ``max_bytes`` for the whole file (``PRAGMA max_page_count``) and a
real full disk both surface as SQLite's ``SQLITE_FULL``, refused with :class:`KeeperFull`;
either way the transaction rolls back and nothing changes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from microsync.errors import StorageError

__all__ = [
    "DATABASE_NAME",
    "Cursors",
    "ItemRef",
    "KeeperFull",
    "KeeperStore",
    "MailboxFull",
    "Push",
    "Usage",
]

DATABASE_NAME: Final = "keeper.sqlite3"
KEEPER_ID_SIZE: Final = 16
PAGE: Final = 1024
"""The most metadata rows one page query returns."""
_LOOKUP: Final = 256
"""Item ids looked up per query (well under SQLite's bound on parameters)."""

Push = tuple[bytes, Sequence[tuple[bytes, bytes]], int]
"""``(mailbox, (item id, payload) pairs, now_ms)``: one PUSH for :meth:`KeeperStore.put_many`."""
Cursors = list[tuple[int, bool]]
"""Each pushed item's ``(cursor, duplicate)``."""

_BUSY: Final = "busy_timeout=10000"
"""A connection waits (up to 10 s) for another's lock, or a checkpoint for a reader."""

_SCHEMA: Final = """
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


class MailboxFull(StorageError):
    """The mailbox is at its quota."""


class KeeperFull(StorageError):
    """The keeper's disk, or its configured size cap, is full."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemRef:
    cursor: int
    item: bytes
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    mailboxes: int
    items: int
    bytes: int


class KeeperStore:
    """``KeeperStore(directory, mailbox_quota=..., max_bytes=...)``; every method commits."""

    def __init__(
        self,
        directory: Path,
        *,
        mailbox_quota: int = 1 << 30,
        mailbox_items: int = 1 << 20,
        max_bytes: int | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DATABASE_NAME
        self.mailbox_quota, self.mailbox_items = mailbox_quota, mailbox_items
        self._db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON", _BUSY):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('keeper', ?)", (os.urandom(KEEPER_ID_SIZE),)
        )
        self.keeper_id = bytes(
            self._db.execute("SELECT value FROM meta WHERE key = 'keeper'").fetchone()[0]
        )
        """This database's random id (a new database, even at the same place, has another)."""
        if max_bytes is not None:
            page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._db.execute(f"PRAGMA max_page_count={max(max_bytes // page_size, 16)}")

    def close(self) -> None:
        self._db.close()

    def put(
        self, mailbox: bytes, items: Sequence[tuple[bytes, bytes]], now_ms: int
    ) -> list[tuple[int, bool]]:
        """Store ``(item id, payload)`` pairs, all or none; each one's ``(cursor, duplicate)``
        once committed. :class:`MailboxFull` if the new ones exceed the quota."""
        try:
            with self._transaction():
                return self._put_batch(mailbox, items, now_ms)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode == sqlite3.SQLITE_FULL:
                raise KeeperFull("the keeper is full") from None
            raise

    def put_many(self, pushes: Sequence[Push]) -> list[Cursors | StorageError]:
        """Several pushes (``(mailbox, items, now_ms)``) in one transaction: one commit, one
        fsync for all. Each is still all or none: one refused (:class:`MailboxFull`) leaves
        the others stored; if the disk fills, each is retried in its own transaction."""
        results: list[Cursors | StorageError] = []
        try:
            with self._transaction():
                for mailbox, items, now_ms in pushes:
                    try:
                        results.append(self._put_batch(mailbox, items, now_ms))
                    except MailboxFull as error:  # raised before it wrote anything
                        results.append(error)
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_FULL:
                raise
            return [self._put_alone(*push) for push in pushes]
        return results

    def _put_alone(
        self, mailbox: bytes, items: Sequence[tuple[bytes, bytes]], now_ms: int
    ) -> Cursors | StorageError:
        try:
            return self.put(mailbox, items, now_ms)
        except StorageError as error:
            return error

    def _put_batch(
        self, mailbox: bytes, items: Sequence[tuple[bytes, bytes]], now_ms: int
    ) -> Cursors:
        """One push inside the open transaction: a lookup of the ids already held, one of
        the mailbox, one ``executemany`` of the new rows, one mailbox update."""
        held = self._held(mailbox, list({item for item, _ in items}))
        row = self._db.execute(
            "SELECT next_cursor, items, bytes FROM mailboxes WHERE id = ?", (mailbox,)
        ).fetchone()
        cursor, count, used = row if row is not None else (1, 0, 0)
        out: Cursors = []
        rows: list[tuple[bytes, int, bytes, int, int, bytes]] = []
        for item, payload in items:
            if item in held:
                out.append((held[item], True))
                continue
            held[item] = cursor
            rows.append((mailbox, cursor, item, now_ms, len(payload), payload))
            out.append((cursor, False))
            cursor, count, used = cursor + 1, count + 1, used + len(payload)
        if used > self.mailbox_quota or count > self.mailbox_items:
            raise MailboxFull("the mailbox is full")
        if rows:
            self._db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute(
                "INSERT OR REPLACE INTO mailboxes VALUES (?, ?, ?, ?)",
                (mailbox, cursor, count, used),
            )
        return out

    def _held(self, mailbox: bytes, items: list[bytes]) -> dict[bytes, int]:
        """The cursors of those of ``items`` already in ``mailbox``."""
        held: dict[bytes, int] = {}
        for start in range(0, len(items), _LOOKUP):
            chunk = items[start : start + _LOOKUP]
            marks = ", ".join("?" * len(chunk))
            held.update(
                (bytes(item), int(cursor))
                for item, cursor in self._db.execute(
                    f"SELECT item, cursor FROM items WHERE mailbox = ? AND item IN ({marks})",
                    (mailbox, *chunk),
                )
            )
        return held

    def page(
        self,
        mailbox: bytes,
        *,
        after: int = 0,
        before: int = 0,
        newest_first: bool = False,
        limit: int = PAGE,
        not_before_ms: int = 0,
    ) -> list[ItemRef]:
        """Up to ``limit`` items with ``after < cursor`` (and ``< before`` unless 0), stored at
        or after ``not_before_ms``, oldest first or newest first: metadata only."""
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            "SELECT cursor, item, size FROM items WHERE mailbox = ? AND cursor > ? "
            "AND (? = 0 OR cursor < ?) AND stored_at >= ? "
            f"ORDER BY cursor {order} LIMIT ?",
            (mailbox, after, before, before, not_before_ms, min(limit, PAGE)),
        ).fetchall()
        return [ItemRef(cursor=c, item=i, size=s) for c, i, s in rows]

    def payloads(self, mailbox: bytes, cursors: Sequence[int]) -> dict[int, bytes]:
        """The payloads at ``cursors`` still held (a caller bounds how many it asks for)."""
        marks = ", ".join("?" * len(cursors))
        rows = self._db.execute(
            f"SELECT cursor, payload FROM items WHERE mailbox = ? AND cursor IN ({marks})",
            (mailbox, *cursors),
        ).fetchall()
        return {int(cursor): bytes(payload) for cursor, payload in rows}

    def delete(self, mailbox: bytes, items: Sequence[bytes]) -> int:
        """Purge these items of ``mailbox`` (payload bytes overwritten); how many there were."""
        with self._transaction():
            gone = 0
            for item in items:
                row = self._db.execute(
                    "DELETE FROM items WHERE mailbox = ? AND item = ? RETURNING size",
                    (mailbox, item),
                ).fetchone()
                if row is not None:
                    gone += 1
                    self._shrink(mailbox, 1, int(row[0]))
        if gone:
            self._checkpoint()
        return gone

    def expire(self, older_than_ms: int) -> int:
        """Purge every item stored before ``older_than_ms``; how many went."""
        with self._transaction():
            rows = self._db.execute(
                "DELETE FROM items WHERE stored_at < ? RETURNING mailbox, size", (older_than_ms,)
            ).fetchall()
            for mailbox, size in rows:
                self._shrink(mailbox, 1, size)
        if rows:
            self._checkpoint()
        return len(rows)

    def usage(self, mailbox: bytes | None = None) -> Usage:
        """Items and bytes held: in ``mailbox``, or in all of them (``mailboxes`` counts
        the ones that hold something)."""
        where, args = ("WHERE id = ?", (mailbox,)) if mailbox is not None else ("", ())
        count, items, used = self._db.execute(
            f"SELECT COUNT(NULLIF(items, 0)), TOTAL(items), TOTAL(bytes) FROM mailboxes {where}",
            args,
        ).fetchone()
        return Usage(mailboxes=int(count), items=int(items), bytes=int(used))

    def _shrink(self, mailbox: bytes, items: int, size: int) -> None:
        self._db.execute(
            "UPDATE mailboxes SET items = items - ?, bytes = bytes - ? WHERE id = ?",
            (items, size, mailbox),
        )

    def _checkpoint(self) -> None:
        """Fold the WAL into the file and truncate it: purged bytes leave the log too."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if kind is None:
                self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:  # an error, or a COMMIT that failed (SQLITE_FULL)
                self._db.execute("ROLLBACK")
