"""WAL checkpoints off the commit path (issue 19, the live p99).

SQLite's automatic checkpoint runs inside the commit that crosses ``wal_autocheckpoint`` pages
(1,000 by default): about one received live batch in 40 paid its fsyncs of the database file.
:class:`Checkpointer` turns the automatic checkpoint off (``wal_autocheckpoint = 0`` on the
store's connection) and runs ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own, in
a thread of its own, after commits: a passive checkpoint never blocks the writer, and SQLite
releases the GIL while it copies pages and syncs the database file. Durability is unchanged: a
commit is durable when its WAL frames are (``synchronous``); a checkpoint only copies committed
frames into the database file.

The WAL stays bounded: the writer restarts the log from its start once a checkpoint has copied
every frame, ``journal_size_limit`` truncates the file then, and if the file still grows past
:data:`WAL_HARD_LIMIT` (a checkpoint that cannot keep up) the committing thread checkpoints
itself, as SQLite would have.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import suppress
from pathlib import Path
from typing import Final

__all__ = ["WAKE_BYTES", "WAKE_COMMITS", "WAL_HARD_LIMIT", "WAL_SIZE_LIMIT", "Checkpointer"]

WAL_SIZE_LIMIT: Final = 4 * 2**20
"""``journal_size_limit``: the WAL file is truncated to this when the log restarts."""
WAL_HARD_LIMIT: Final = 32 * 2**20
"""Past this size the committing thread checkpoints (the background one fell behind)."""
WAKE_COMMITS: Final = 32
"""The thread checkpoints after this many commits ...."""
WAKE_BYTES: Final = 2**20
"""... or once the WAL file grew this much since it was last woken, whichever comes first."""


class Checkpointer:
    """Checkpoints ``path``'s WAL in a background thread after commits on ``db`` (module doc).
    Start nothing until the first commit; :meth:`close` stops the thread."""

    def __init__(self, db: sqlite3.Connection, path: Path, *, busy_timeout: float) -> None:
        self._db = db
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._busy_timeout = busy_timeout
        self._wake = threading.Event()
        self.lock = threading.Lock()
        """Held while the thread checkpoints: hold it to checkpoint alone (``scrub``'s TRUNCATE
        would otherwise find the log busy and leave it as it is)."""
        self._stop = False
        self._thread: threading.Thread | None = None
        self._commits = 0  # since the thread was last woken
        self._mark = 0  # the WAL file's size then
        self.checkpoints = 0
        """Checkpoints the background thread ran (for tests and benchmarks)."""
        db.execute("PRAGMA wal_autocheckpoint = 0")
        db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")

    def __repr__(self) -> str:
        return f"Checkpointer({self.checkpoints} checkpoints)"

    def committed(self) -> None:
        """Called after each commit (one ``stat``): wake the thread (started on the first
        wake) every :data:`WAKE_COMMITS` commits or :data:`WAKE_BYTES` of WAL; checkpoint here
        if the WAL outgrew :data:`WAL_HARD_LIMIT`."""
        if self._stop:
            return
        self._commits += 1
        size = self._wal_size()
        if size < self._mark:
            self._mark = size  # the log restarted and was truncated
        if size > WAL_HARD_LIMIT:
            # Checked at every commit, and under the thread's lock: a passive checkpoint run
            # while the thread's own is in progress is refused as busy, so a loaded machine
            # whose thread never catches up would let the WAL grow commit after commit. Run
            # here, between two commits, the checkpoint copies every frame and the next write
            # restarts the log.
            with self.lock, suppress(sqlite3.Error):  # best effort: the next commit retries
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if self._commits < WAKE_COMMITS and size - self._mark < WAKE_BYTES:
            return
        self._commits, self._mark = 0, size
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="microsync-checkpoint", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=self._busy_timeout)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    with self.lock:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    continue  # busy or closing: the next commit wakes us again
                self.checkpoints += 1
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread and wait for it (idempotent); call before closing ``db``."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
