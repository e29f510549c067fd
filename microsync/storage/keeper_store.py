"""The keeper's SQLite store: opaque items in mailboxes, crash-safe and purged for real.

Theory of operation
-------------------
One database file, ``keeper.sqlite3`` under the keeper's data directory, in WAL mode with
``synchronous=FULL`` (what :meth:`KeeperStore.put` returned survives ``kill -9`` and power loss)
and ``secure_delete=ON`` (a deleted payload's bytes are overwritten, not left in free pages).
After a delete or an expiry the WAL is checkpointed and truncated, so no copy of a purged item
stays in the log either.

Tables (schema and migrations: :mod:`microsync.storage.keeper_schema`): ``mailboxes(n, id,
next_cursor, items, bytes, last_ms)`` and ``items(key, item, stored_at, size, payload)``, each
item keyed by its mailbox's number and its cursor (``n << 32 | cursor``), with one index on
the item id: pushing an item id again returns the cursor it already has (nothing is
duplicated by a client that retries after a crash). One push is four statements whatever its
size (:meth:`KeeperStore.put`); several pushes share one transaction
(:meth:`KeeperStore.put_many`, which the keeper's writer thread uses to commit in groups).
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
from microsync.storage.keeper_schema import CURSOR_BITS, migrate_keeper

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
_CURSORS: Final = (1 << CURSOR_BITS) - 1
"""The last cursor a mailbox can give (then it is full: cursors are never reused)."""
_NUMBERS_CACHED: Final = 4096
"""Mailbox numbers a store remembers (they never change; forgotten all at once when full)."""


def _range(n: int) -> tuple[int, int]:
    """The keys of mailbox number ``n``'s items lie strictly between these two."""
    return n << CURSOR_BITS, (n + 1) << CURSOR_BITS


_BUSY: Final = "busy_timeout=10000"
"""A connection waits (up to 10 s) for another's lock, or a checkpoint for a reader."""


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
        migrate_keeper(self._db)
        self._numbers: dict[bytes, int] = {}
        # a purge's checkpoint was kept from truncating the WAL; at open, a run killed before
        # it was tried again may have left one there: the first delete or expiry checkpoints
        self._unpurged = True
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

    def _number(self, mailbox: bytes) -> int | None:
        """The mailbox's number (it never changes once given), or ``None`` if it has none."""
        n = self._numbers.get(mailbox)
        if n is None:
            row = self._db.execute("SELECT n FROM mailboxes WHERE id = ?", (mailbox,)).fetchone()
            if row is None:
                return None
            if len(self._numbers) >= _NUMBERS_CACHED:
                self._numbers.clear()
            n = self._numbers[mailbox] = int(row[0])
        return n

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
        """One push inside the open transaction: a lookup of the mailbox, one of the ids it
        already holds, one ``executemany`` of the new rows, one update of the mailbox."""
        row = self._db.execute(
            "SELECT n, next_cursor, items, bytes, last_ms FROM mailboxes WHERE id = ?",
            (mailbox,),
        ).fetchone()
        n, cursor, count, used, last_ms = row if row is not None else (None, 1, 0, 0, 0)
        held = {} if n is None else self._held(n, list({item for item, _ in items}))
        stored_at = max(now_ms, last_ms)  # never decreasing along the cursors: see expire()
        out: Cursors = []
        rows: list[tuple[int, bytes, int, int, bytes]] = []
        for item, payload in items:
            if item in held:
                out.append((held[item], True))
                continue
            held[item] = cursor
            rows.append((cursor, item, stored_at, len(payload), payload))
            out.append((cursor, False))
            cursor, count, used = cursor + 1, count + 1, used + len(payload)
        if used > self.mailbox_quota or count > self.mailbox_items or cursor > _CURSORS:
            raise MailboxFull("the mailbox is full")
        if not rows:
            return out
        if n is None:
            n = self._db.execute(
                "INSERT INTO mailboxes VALUES (NULL, ?, ?, ?, ?, ?) RETURNING n",
                (mailbox, cursor, count, used, stored_at),
            ).fetchone()[0]
        else:
            self._db.execute(
                "UPDATE mailboxes SET next_cursor = ?, items = ?, bytes = ?, last_ms = ? "
                "WHERE n = ?",
                (cursor, count, used, stored_at, n),
            )
        base = n << CURSOR_BITS
        self._db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?)",
            [(base + c, item, at, size, payload) for c, item, at, size, payload in rows],
        )
        return out

    def _held(self, n: int, items: list[bytes]) -> dict[bytes, int]:
        """The cursors of those of ``items`` already in mailbox number ``n``."""
        low, high = _range(n)
        held: dict[bytes, int] = {}
        for start in range(0, len(items), _LOOKUP):
            chunk = items[start : start + _LOOKUP]
            marks = ", ".join("?" * len(chunk))
            held.update(
                (bytes(item), int(key) - low)
                for item, key in self._db.execute(
                    f"SELECT item, key FROM items WHERE item IN ({marks}) AND key > ? AND key < ?",
                    (*chunk, low, high),
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
        n = self._number(mailbox)
        if n is None:
            return []
        low, high = _range(n)
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            "SELECT key, item, size FROM items WHERE key > ? AND key < ? AND stored_at >= ? "
            f"ORDER BY key {order} LIMIT ?",
            (
                low + min(max(after, 0), _CURSORS),
                low + min(max(before, 0), _CURSORS + 1) if before else high,
                not_before_ms,
                min(limit, PAGE),
            ),
        ).fetchall()
        return [ItemRef(cursor=k - low, item=i, size=s) for k, i, s in rows]

    def payloads(self, mailbox: bytes, cursors: Sequence[int]) -> dict[int, bytes]:
        """The payloads at ``cursors`` still held (a caller bounds how many it asks for)."""
        n = self._number(mailbox)
        low, _ = _range(n or 0)
        keys = [low + c for c in cursors if 0 < c <= _CURSORS]
        if n is None or not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        rows = self._db.execute(
            f"SELECT key, payload FROM items WHERE key IN ({marks})", keys
        ).fetchall()
        return {int(key) - low: bytes(payload) for key, payload in rows}

    def delete(self, mailbox: bytes, items: Sequence[bytes]) -> int:
        """Purge these items of ``mailbox`` (payload bytes overwritten); how many there were."""
        n = self._number(mailbox)
        if n is None:
            return 0
        low, high = _range(n)
        wanted = list(dict.fromkeys(items))
        with self._transaction():
            sizes: list[int] = []
            for start in range(0, len(wanted), _LOOKUP):
                chunk = wanted[start : start + _LOOKUP]
                marks = ", ".join("?" * len(chunk))
                sizes += (
                    int(size)
                    for (size,) in self._db.execute(
                        f"DELETE FROM items WHERE item IN ({marks}) AND key > ? AND key < ? "
                        "RETURNING size",
                        (*chunk, low, high),
                    ).fetchall()
                )
            self._shrink(n, len(sizes), sum(sizes))
        if sizes or self._unpurged:
            self._checkpoint()
        return len(sizes)

    def expire(self, older_than_ms: int) -> int:
        """Purge every item stored before ``older_than_ms``; how many went. What expired is
        a prefix of each mailbox (``stored_at`` never decreases along its cursors): found
        and deleted by key range, no age index needed."""
        gone = 0
        with self._transaction():
            numbers = self._db.execute("SELECT n FROM mailboxes WHERE items > 0").fetchall()
            for (n,) in numbers:
                low, high = _range(n)
                kept = self._db.execute(
                    "SELECT key FROM items WHERE key > ? AND key < ? AND stored_at >= ? "
                    "ORDER BY key LIMIT 1",
                    (low, high, older_than_ms),
                ).fetchone()
                sizes = self._db.execute(
                    "DELETE FROM items WHERE key > ? AND key < ? RETURNING size",
                    (low, high if kept is None else kept[0]),
                ).fetchall()
                self._shrink(n, len(sizes), sum(int(size) for (size,) in sizes))
                gone += len(sizes)
        if gone or self._unpurged:
            self._checkpoint()
        return gone

    def usage(self, mailbox: bytes | None = None) -> Usage:
        """Items and bytes held: in ``mailbox``, or in all of them (``mailboxes`` counts
        the ones that hold something)."""
        where, args = ("WHERE id = ?", (mailbox,)) if mailbox is not None else ("", ())
        count, items, used = self._db.execute(
            f"SELECT COUNT(NULLIF(items, 0)), TOTAL(items), TOTAL(bytes) FROM mailboxes {where}",
            args,
        ).fetchone()
        return Usage(mailboxes=int(count), items=int(items), bytes=int(used))

    def _shrink(self, n: int, items: int, size: int) -> None:
        if items:
            self._db.execute(
                "UPDATE mailboxes SET items = items - ?, bytes = bytes - ? WHERE n = ?",
                (items, size, n),
            )

    def _checkpoint(self) -> None:
        """Fold the WAL into the file and truncate it: purged bytes leave the log too. A
        reader still on an older snapshot past the busy timeout keeps it from finishing
        (``busy`` in its answer): tried again, and else at the next delete or expiry."""
        for _ in range(3):
            busy, _log, _done = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self._unpurged = bool(busy)
            if not busy:
                return

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
