"""A profile directory on disk: private to its owner, locked by one store, its database
opened in WAL mode and migrated (used by :class:`~microsync.storage.sqlite.SqliteStore`).

Privacy on disk: the profile holds the device's secret keys, so like ``~/.ssh`` it is for its
owner only. The directory (and every directory in it) is created ``0700`` and every file
``0600`` (SQLite gives ``-wal`` and ``-shm`` the database file's mode). A profile found readable
or writable by others is fixed by :func:`make_private`, with a warning on the
``microsync.storage`` logger naming what was fixed; one that cannot be fixed (another user's)
is refused with a :class:`~microsync.errors.StorageError`.

:func:`lock_profile` takes an exclusive, non-blocking ``flock`` on ``profile.lock``: a second
holder, in this process (flock belongs to an open file description) or another one, gets
:class:`~microsync.errors.ProfileInUse`. The kernel drops the lock when the holder closes the
descriptor or dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
from contextlib import suppress
from pathlib import Path
from typing import Final

from microsync.errors import ProfileInUse, StorageError
from microsync.storage.migrations import migrate

__all__ = [
    "BUSY_TIMEOUT",
    "LOCK_NAME",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "connect",
    "create_private",
    "lock_profile",
    "make_private",
    "private_opener",
]

log = logging.getLogger("microsync.storage.sqlite")

PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600
LOCK_NAME: Final = "profile.lock"
BUSY_TIMEOUT: Final = 0.1  # seconds; only tools outside microsync can contend (see the lock)


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=)`` that creates the file for its owner only."""
    return os.open(path, flags, PRIVATE_FILE)


def create_private(path: Path) -> None:
    """Create ``path`` empty and ``0600`` if it does not exist (SQLite then keeps that mode,
    also for its ``-wal`` and ``-shm`` files)."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE))


def make_private(directory: Path) -> None:
    """Take every permission for others off the profile ``directory`` and all in it, warning
    about each fix; StorageError if that is not possible."""
    fixed: list[str] = []
    try:
        for root, dirs, files in os.walk(directory):
            for name, private in [(".", PRIVATE_DIR)] + [(f, PRIVATE_FILE) for f in files]:
                target = os.path.normpath(os.path.join(root, name))
                if _restrict(target, private):
                    fixed.append(target)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    except OSError as error:
        raise StorageError(
            f"the profile {directory} can be read by others and cannot be made private: "
            f"{error.strerror or error}"
        ) from error
    if fixed:
        shown = ", ".join(fixed[:3]) + (f" and {len(fixed) - 3} more" if len(fixed) > 3 else "")
        log.warning(
            "the profile %s could be read by other users of this machine; made it private "
            "to you (%s)",
            directory,
            shown,
        )


def _restrict(target: str, private: int) -> bool:
    """Clear the group and other bits of a regular file or directory; did it have any?"""
    mode = os.lstat(target).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or not stat.S_IMODE(mode) & 0o077:
        return False
    os.chmod(target, stat.S_IMODE(mode) & private)
    return True


def lock_profile(directory: Path) -> int:
    """Hold ``profile.lock`` exclusively, or raise ProfileInUse."""
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise StorageError(f"cannot open the profile lock {path}: {error}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ProfileInUse(f"the profile {directory} is already open") from None
    except OSError as error:
        os.close(fd)
        raise StorageError(f"cannot lock the profile {directory}: {error}") from error
    return fd


def connect(path: Path, synchronous: str, max_pages: int | None) -> sqlite3.Connection:
    """Open, configure and migrate the database, or raise StorageError."""
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
        _configure(db, synchronous, max_pages)
    except BaseException as error:
        if db is not None:
            db.close()
        if isinstance(error, sqlite3.Error):
            raise StorageError(f"cannot open the profile database {path}: {error}") from error
        raise
    return db


def _configure(db: sqlite3.Connection, synchronous: str, max_pages: int | None) -> None:
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StorageError(f"the profile database refused WAL mode (got {mode!r})")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    # deleted rows are overwritten with zeros, so a purged body leaves no bytes in the file
    db.execute("PRAGMA secure_delete = ON")
    migrate(db)
    if max_pages is not None:
        db.execute(f"PRAGMA max_page_count = {int(max_pages)}")
