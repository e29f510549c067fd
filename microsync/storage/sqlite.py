"""The SQLite :class:`~microsync.storage.base.Store`: one database per device profile.

Theory of operation
-------------------
A profile directory holds ``profile.lock`` and ``profile.db`` (plus SQLite's ``-wal`` and
``-shm`` files). :meth:`SqliteStore.open` first takes an exclusive, non-blocking ``flock`` on
the lock file, so at most one store writes a profile: a second open, from this process (flock
belongs to an open file description) or another one, raises
:class:`~microsync.errors.ProfileInUse`. The kernel drops the lock when the holder closes it or
dies. Then the database is opened in WAL mode with foreign keys on and brought up to date by
:mod:`microsync.storage.migrations`.

Privacy on disk (``0700`` directories, ``0600`` files, fixed with a warning when found open
to others) and the lock are :mod:`microsync.storage.profile_dir`'s; vault chunks are files
beside the database (:mod:`microsync.storage.chunk_files`); every statement is in
:mod:`microsync.storage.sql`.

Transactions are explicit (the connection runs with ``isolation_level=None``): the outermost
:meth:`~SqliteStore.transaction` block issues ``BEGIN IMMEDIATE`` and ``COMMIT``, or
``ROLLBACK`` if it raises; inner blocks join it. A write outside any block runs in a
transaction of its own, so every call is atomic.

Every ``sqlite3`` failure becomes a :class:`~microsync.errors.StorageError`. Two kinds:

* a constraint violation (duplicate key, missing referenced row) undoes only the failed
  statement, exactly like :class:`~microsync.storage.memory.MemoryStore` raising before it
  writes. Invariant: in every write method, only the FIRST statement can violate a constraint.
* anything else (disk full, I/O error, corruption) rolls the whole transaction back at once
  and marks it aborted: until the outermost block exits, every call raises, and a block that
  exits normally raises instead of committing.

The adapter only stores and finds; its answers, errors and :meth:`~SqliteStore.dump` match
``MemoryStore`` exactly (``tests/test_storage_contract.py`` holds both to that).

Speed: known authors are cached (cleared when trust records change or a transaction rolls
back). Inside a transaction, feed status is cached too, and the ``feeds`` row of a feed that
``insert_entry`` moved is written once, not per entry:

* ``feed_status`` runs its SELECT once per feed per transaction; afterwards the adapter's own
  writes keep the cached answer up to date (``insert_entry`` moves the head, ``insert_pending``
  counts one more pending entry). ``delete_pending`` and ``record_fork`` drop the feed's
  cached answer, so the next ``feed_status`` asks the database again.
* ``insert_entry`` runs one statement (the entry's row holds its body), ``insert_entries`` one
  ``executemany`` for a batch; both mark the feed's head dirty. Dirty heads are written by one
  ``executemany`` upsert before any statement that reads ``feeds``, and at the latest just
  before ``COMMIT``, in the same transaction: the head is never committed without its entries,
  nor entries without their head. (``record_fork`` writes only ``forked_at``: it commutes.)
* Both caches are dropped when the outermost block ends, whether it commits, rolls back or was
  aborted by a storage error, so nothing cached outlives the transaction it was read in.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from microsync.errors import StorageError
from microsync.feed.entry import Entry, EntryId, GroupId, parse_entry
from microsync.feed.store import AuthorStatus, FeedStatus, ForkEvidence, StoredEntry
from microsync.identity import DeviceCertificate, DeviceId, DeviceRevocation
from microsync.storage import sql
from microsync.storage.checkpoint import Checkpointer
from microsync.storage.chunk_files import CHUNKS_DIR, ChunkFiles
from microsync.storage.dump import canonical_dump
from microsync.storage.profile_dir import (
    BUSY_TIMEOUT,
    LOCK_NAME,
    PRIVATE_DIR,
    PRIVATE_FILE,
    connect,
    create_private,
    lock_profile,
    make_private,
)
from microsync.storage.sqlite_chunks import ChunkMethods

__all__ = [  # the constants too: importable from here as before the split
    "BUSY_TIMEOUT",
    "CHUNKS_DIR",
    "DATABASE_NAME",
    "LOCK_NAME",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "SYNCHRONOUS_LEVELS",
    "SqliteStore",
]

DATABASE_NAME: Final = "profile.db"
SYNCHRONOUS_LEVELS: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_PAGE: Final = 256  # rows per query when iterating a feed
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1

Row = tuple[Any, ...]

P = ParamSpec("P")
R = TypeVar("R")
Method = Callable[Concatenate["SqliteStore", P], R]


def _atomic(method: Method[P, R]) -> Method[P, R]:
    """Run a write method in the current transaction, or in one of its own."""

    @functools.wraps(method)
    def run(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._depth:
            return method(self, *args, **kwargs)
        with self.transaction():
            return method(self, *args, **kwargs)

    return run


class SqliteStore(ChunkMethods):
    """A device profile stored in ``<directory>/profile.db``. Create with :meth:`open`."""

    def __init__(self, db: sqlite3.Connection, lock: int, directory: Path) -> None:
        """Take over an open, migrated connection and the held lock (use :meth:`open`)."""
        self._db = db
        self._lock = lock
        self.directory = directory
        self._depth = 0
        self._aborted = False
        self._closed = False
        self._authors: dict[bytes, AuthorStatus] = {}
        # Valid only inside the outermost transaction (see the module docstring).
        self._feeds: dict[tuple[bytes, bytes], FeedStatus] = {}
        self._dirty_heads: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}
        self._chunks = ChunkFiles(directory)
        self._synchronous: int = db.execute("PRAGMA synchronous").fetchone()[0]
        self._checkpoints = Checkpointer(db, directory / DATABASE_NAME, busy_timeout=BUSY_TIMEOUT)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        max_pages: int | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) the profile in ``directory``.

        ``synchronous`` is SQLite's durability level (``FULL``: a committed transaction
        survives power loss). ``max_pages`` is for tests: cap the database size (in pages) to
        provoke "database or disk is full". Raises :class:`ProfileInUse` if the profile is
        open elsewhere, :class:`StorageError` if it cannot be opened or is not a database.
        """
        if synchronous not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_LEVELS)}")
        path = Path(directory)
        try:
            path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the profile directory {path}: {error}") from error
        make_private(path)
        lock = lock_profile(path)
        try:
            create_private(path / DATABASE_NAME)
            db = connect(path / DATABASE_NAME, synchronous, max_pages)
        except BaseException:
            os.close(lock)
            raise
        return cls(db, lock, path)

    # transactions and error handling
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; inner blocks join the outer one."""
        self._check_usable()
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._execute_control("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        else:
            self._commit()
        finally:
            self._depth = 0
            self._aborted = False
            self._forget_feeds()  # the one place they go: an aborted block refuses reads

    @contextmanager
    def replaceable(self) -> Iterator[None]:
        """Transactions begun here hold copies of what peers hold (received entries): they
        commit without an fsync (WAL, ``synchronous=NORMAL``), which ``kill -9`` cannot undo; a
        power cut may roll back to an earlier consistent commit (the next sync fetches them
        again), and the next durable commit syncs them too (one WAL file). No-op inside one."""
        self._check_usable()
        if self._depth or self._synchronous < 2:
            yield
            return
        self._execute_control("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            if not self._closed:
                self._execute_control(f"PRAGMA synchronous = {self._synchronous}")

    def _commit(self) -> None:
        if self._closed:
            raise StorageError("the store was closed inside a transaction; nothing was committed")
        if self._aborted:
            raise StorageError("the transaction was rolled back after a storage error")
        try:
            self._write_heads()
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise StorageError(f"commit failed: {error}") from error
        self._checkpoints.committed()  # off this path (storage.checkpoint)

    def _forget_feeds(self) -> None:
        self._feeds.clear()
        self._dirty_heads.clear()

    def _write_heads(self) -> None:
        """Write the heads ``insert_entry`` moved (before reading ``feeds`` and at commit)."""
        if not self._dirty_heads:
            return
        rows = [(*feed, seq, head) for feed, (seq, head) in self._dirty_heads.items()]
        self._sql_many(sql.SET_HEAD, rows)
        self._dirty_heads.clear()  # only once written: a refused write is retried at commit

    def _rollback(self) -> None:
        self._authors.clear()
        if not self._closed and self._db.in_transaction:
            self._execute_control("ROLLBACK")

    def _execute_control(self, statement: str) -> None:
        try:
            self._db.execute(statement)
        except sqlite3.Error as error:
            raise StorageError(f"{statement} failed: {error}") from error

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError("the store is closed")
        if self._aborted:
            raise StorageError("the transaction was rolled back after a storage error")

    def _sql(self, statement: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement and fetch its rows; every failure becomes a StorageError."""
        self._check_usable()
        try:
            return self._db.execute(statement, params).fetchall()
        except sqlite3.IntegrityError as error:  # SQLite undid this statement only
            raise StorageError(f"constraint failed: {error}") from error
        except (OverflowError, UnicodeEncodeError) as error:  # refused before running
            raise StorageError(f"value cannot be stored: {error}") from error
        except sqlite3.Error as error:
            self._abort()
            raise StorageError(f"storage failed: {error}") from error

    def _sql_many(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement once per row, with the error handling of :meth:`_sql`."""
        self._check_usable()
        try:
            self._db.executemany(statement, rows)
        except sqlite3.IntegrityError as error:
            raise StorageError(f"constraint failed: {error}") from error
        except (OverflowError, UnicodeEncodeError) as error:
            raise StorageError(f"value cannot be stored: {error}") from error
        except sqlite3.Error as error:
            self._abort()
            raise StorageError(f"storage failed: {error}") from error

    def _abort(self) -> None:
        """After a failure mid-transaction: undo all of it now and refuse use until it ends."""
        if self._depth:
            self._aborted = True
            self._authors.clear()
            # The failure that got us here is what the caller hears about; if even ROLLBACK
            # fails, SQLite undoes the unfinished transaction when the database next opens.
            with suppress(sqlite3.Error):
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")

    # profile values and trust
    def get_meta(self, key: str) -> bytes | None:
        rows = self._sql("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @_atomic
    def put_meta(self, key: str, value: bytes) -> None:
        self._sql(sql.PUT_META, (key, bytes(value)))

    def certificate(self, device: DeviceId) -> DeviceCertificate | None:
        rows = self._sql("SELECT record FROM certificates WHERE device = ?", (device,))
        return DeviceCertificate.from_bytes(rows[0][0]) if rows else None

    @_atomic
    def put_certificate(self, certificate: DeviceCertificate) -> None:
        self._sql(sql.PUT_CERTIFICATE, (certificate.device, certificate.to_bytes()))
        self._authors.pop(certificate.device, None)

    def revocation(self, device: DeviceId) -> DeviceRevocation | None:
        rows = self._sql("SELECT record FROM revocations WHERE device = ?", (device,))
        return DeviceRevocation.from_bytes(rows[0][0]) if rows else None

    @_atomic
    def put_revocation(self, revocation: DeviceRevocation) -> None:
        self._sql(sql.PUT_REVOCATION, (revocation.device, revocation.to_bytes()))
        self._authors.pop(revocation.device, None)

    def author_status(self, device: DeviceId) -> AuthorStatus:
        self._check_usable()
        status = self._authors.get(device)
        if status is None:
            revoked, certified = self._sql(sql.AUTHOR_STATUS, (device,))[0]
            status = _author(revoked, certified)
            if status is not AuthorStatus.UNKNOWN:  # unknown ids cost nothing to invent
                self._authors[device] = status
        return status

    # feeds
    def feed_status(self, group: GroupId, device: DeviceId) -> FeedStatus:
        self._check_usable()
        key = (bytes(group), bytes(device))
        status = self._feeds.get(key)
        if status is None:
            self._write_heads()
            head_seq, head_id, forked_at, pending = self._sql(sql.FEED_STATUS, key)[0]
            status = FeedStatus(
                head_seq=head_seq or 0, head_id=head_id, forked_at=forked_at, pending=pending
            )
            if self._depth:
                self._feeds[key] = status
        return status

    def feeds(self, group: GroupId) -> dict[DeviceId, FeedStatus]:
        self._check_usable()
        self._write_heads()
        return {
            device: FeedStatus(head_seq=seq, head_id=head, forked_at=forked, pending=pending)
            for device, seq, head, forked, pending in self._sql(sql.FEEDS, (group,))
        }

    def entry_at(self, group: GroupId, device: DeviceId, seq: int) -> StoredEntry | None:
        if not _INT_MIN <= seq <= _INT_MAX:
            self._check_usable()
            return None
        rows = self._sql(sql.ENTRY_AT, (group, device, seq))
        return _stored(*rows[0]) if rows else None

    def entries(
        self, group: GroupId, device: DeviceId, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[StoredEntry]:
        """Entries of one feed in ``seq`` order, after ``after_seq``, up to the head and to
        ``after_seq + limit`` (read page by page as the caller iterates)."""
        head = self.feed_status(group, device).head_seq
        stop = head if limit is None else min(head, after_seq + limit)
        last = min(max(after_seq, _INT_MIN), _INT_MAX)
        while last < stop:
            rows = self._sql(sql.ENTRIES_PAGE, (group, device, last, stop, _PAGE))
            if not rows:
                return
            for _, wire, body in rows:
                yield _stored(wire, body)
            last = rows[-1][0]

    @_atomic
    def insert_entry(self, entry: Entry, body: bytes | None) -> None:
        h = entry.header
        self._sql(sql.INSERT_ENTRY, (h.group, h.device, h.seq, entry.id, entry.wire, body))
        self._moved(entry)

    def _moved(self, entry: Entry) -> None:
        """``entry`` was stored: it is its feed's head (cached, written before COMMIT)."""
        h = entry.header
        key = (bytes(h.group), bytes(h.device))
        self._dirty_heads[key] = (h.seq, entry.id)
        cached = self._feeds.get(key)
        if cached is not None:
            self._feeds[key] = FeedStatus(  # not dataclasses.replace: this is the hot path
                head_seq=h.seq, head_id=entry.id, forked_at=cached.forked_at, pending=cached.pending
            )

    @_atomic
    def insert_entries(self, items: Sequence[tuple[Entry, bytes | None]]) -> None:
        """One ``executemany`` in a savepoint: a taken position or id leaves none of it."""
        rows = [(e.header.group, e.header.device, e.header.seq, e.id, e.wire, b) for e, b in items]
        self._execute_control("SAVEPOINT entries")
        try:
            self._sql_many(sql.INSERT_ENTRY, rows)
        except StorageError:
            if not self._aborted:
                self._execute_control("ROLLBACK TO entries")
                self._execute_control("RELEASE entries")
            raise
        self._execute_control("RELEASE entries")
        for entry, _ in items:
            self._moved(entry)

    @_atomic
    def delete_body(self, entry_id: EntryId) -> None:
        self._sql(sql.DELETE_BODY, (entry_id,))

    def pending_at(self, group: GroupId, device: DeviceId, seq: int) -> list[StoredEntry]:
        if not _INT_MIN <= seq <= _INT_MAX:
            self._check_usable()
            return []
        return [_stored(*row) for row in self._sql(sql.PENDING_AT, (group, device, seq))]

    @_atomic
    def insert_pending(self, entry: Entry, body: bytes | None) -> None:
        h = entry.header
        self._sql(sql.INSERT_PENDING, (h.group, h.device, h.seq, entry.id, entry.wire, body))
        key = (bytes(h.group), bytes(h.device))
        cached = self._feeds.get(key)
        if cached is not None:
            self._feeds[key] = FeedStatus(
                head_seq=cached.head_seq,
                head_id=cached.head_id,
                forked_at=cached.forked_at,
                pending=cached.pending + 1,
            )

    @_atomic
    def delete_pending(self, group: GroupId, device: DeviceId, from_seq: int, to_seq: int) -> None:
        """Drop pending entries with ``from_seq <= seq <= to_seq``."""
        if from_seq > _INT_MAX or to_seq < _INT_MIN:
            return
        bounds = (max(from_seq, _INT_MIN), min(to_seq, _INT_MAX))
        self._feeds.pop((bytes(group), bytes(device)), None)
        self._sql(sql.DELETE_PENDING, (group, device, *bounds))

    @_atomic
    def record_fork(self, evidence: ForkEvidence) -> None:
        e = evidence
        self._feeds.pop((bytes(e.group), bytes(e.device)), None)
        self._sql(sql.INSERT_FORK, (e.group, e.device, e.seq, e.first, e.second))
        self._sql(sql.MARK_FORKED, (e.group, e.device, e.seq))

    def fork_evidence(self, group: GroupId, device: DeviceId) -> list[ForkEvidence]:
        return [
            ForkEvidence(group=g, device=d, seq=seq, first=first, second=second)
            for g, d, seq, first, second in self._sql(sql.FORKS, (group, device))
        ]

    def scrub(self) -> None:
        """Checkpoint and truncate the write-ahead log, so rows deleted earlier (purged bodies)
        survive in neither the database file (``secure_delete``) nor the log."""
        self._check_usable()
        try:
            with self._checkpoints.lock:  # not while the background one runs
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as error:
            raise StorageError(f"cannot checkpoint the profile database: {error}") from error

    # whole profile
    def dump(self) -> bytes:
        """The canonical dump (same bytes as a MemoryStore holding the same data)."""
        self._check_usable()
        self._write_heads()
        return canonical_dump({name: self._sql(query) for name, query in sql.DUMP.items()})

    def close(self) -> None:
        """Close the database and release the profile lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._authors.clear()
        self._forget_feeds()
        self._checkpoints.close()
        try:
            self._db.close()
        finally:
            os.close(self._lock)  # closing the descriptor releases the flock

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SqliteStore({str(self.directory)!r}, {state})"


def _author(revoked: int, certified: int) -> AuthorStatus:
    if revoked:
        return AuthorStatus.REVOKED
    return AuthorStatus.CERTIFIED if certified else AuthorStatus.UNKNOWN


def _stored(wire: bytes, body: bytes | None) -> StoredEntry:
    return StoredEntry(entry=parse_entry(wire), body=body)
