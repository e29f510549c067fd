"""The keeper's writer: every write to its store on one thread, pushes committed in groups.

Theory of operation
-------------------
A :class:`KeeperWriter` owns a :class:`~microsync.storage.keeper_store.KeeperStore` of its
own (its own SQLite connection) on a thread of its own, so the event loop never waits for a
commit's fsync: reads (pages, payloads, usage) go on on the loop's connection meanwhile (WAL:
readers see the last commit and do not block the writer).

Group commit: :meth:`KeeperWriter.put` queues a push and awaits it. The thread takes the first
push queued and every other push queued behind it by then, and stores them all in one
transaction (:meth:`KeeperStore.put_many`): one commit, one fsync, however many connections
the pushes came from. No push waits for a timer: while one group commits, the next one
gathers. Each awaiting caller is answered only once the transaction holding its items has
committed (``synchronous=FULL``), so what a caller acknowledges survives ``kill -9``; a push
refused (full mailbox, full keeper) leaves the others of its group stored. Deletes and expiry
(:meth:`KeeperWriter.run`) run on the same thread, in queue order, each in its own transaction.
:meth:`KeeperWriter.close` lets the queue drain, then closes the thread's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from microsync.errors import StorageError
from microsync.storage.keeper_store import Cursors, KeeperStore

__all__ = ["KeeperWriter"]

T = TypeVar("T")

MAX_GROUP = 256
"""The most pushes one transaction takes (a bound on what one commit holds)."""


@dataclass(frozen=True, slots=True)
class _Put:
    mailbox: bytes
    items: Sequence[tuple[bytes, bytes]]
    now_ms: int
    done: asyncio.Future[Cursors]


@dataclass(frozen=True, slots=True)
class _Run:
    work: Callable[[KeeperStore], Any]
    done: asyncio.Future[Any]


_STOP = object()


class KeeperWriter:
    """``writer = await KeeperWriter.open(lambda: KeeperStore(...))``; ``await writer.put(...)``;
    ``await writer.close()``."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Put | _Run | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        """Transactions the writer has committed pushes in (for tests and benchmarks)."""

    @classmethod
    async def open(cls, open_store: Callable[[], KeeperStore]) -> KeeperWriter:
        """Start the thread, which opens its store with ``open_store()`` (its errors raise
        here)."""
        writer = cls()
        loop = asyncio.get_running_loop()
        writer._loop = loop
        opened: asyncio.Future[None] = loop.create_future()
        writer._thread = threading.Thread(
            target=writer._main, args=(open_store, opened), name="keeper-writer", daemon=True
        )
        writer._thread.start()
        try:
            await opened
        except BaseException:  # it did not open, or the caller gave up: let the thread end
            writer._jobs.put(_STOP)
            writer._thread = None
            raise
        return writer

    async def put(
        self, mailbox: bytes, items: Sequence[tuple[bytes, bytes]], now_ms: int
    ) -> Cursors:
        """Store one push (as :meth:`KeeperStore.put`), committed with whatever else is
        queued; its ``(cursor, duplicate)`` pairs once that commit is on disk."""
        done: asyncio.Future[Cursors] = self._future()
        self._jobs.put(_Put(mailbox, items, now_ms, done))
        return await done

    async def run(self, work: Callable[[KeeperStore], T]) -> T:
        """``work(store)`` on the writer's thread, after everything queued before it."""
        done: asyncio.Future[T] = self._future()
        self._jobs.put(_Run(work, done))
        return await done

    async def close(self) -> None:
        """Finish what is queued, close the store, end the thread. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(thread.join)

    def _future(self) -> asyncio.Future[Any]:
        if self._thread is None or self._loop is None:
            raise RuntimeError("the keeper's writer is closed")
        return self._loop.create_future()

    # --- the thread ------------------------------------------------------------------------

    def _main(self, open_store: Callable[[], KeeperStore], opened: asyncio.Future[None]) -> None:
        try:
            store = open_store()
        except BaseException as error:
            self._answer(opened, error=error)
            return
        self._answer(opened, None)
        try:
            self._serve(store)
        finally:
            store.close()

    def _serve(self, store: KeeperStore) -> None:
        job = self._jobs.get()
        while job is not _STOP:
            if isinstance(job, _Run):
                self._perform(job, store)
                job = self._jobs.get()
                continue
            assert isinstance(job, _Put)
            group = [job]
            job = None
            while len(group) < MAX_GROUP:
                with contextlib.suppress(queue.Empty):
                    job = self._jobs.get_nowait()
                if not isinstance(job, _Put):
                    break
                group.append(job)
                job = None
            self._commit(group, store)
            if job is None:
                job = self._jobs.get()

    def _commit(self, group: list[_Put], store: KeeperStore) -> None:
        try:
            results = store.put_many([(p.mailbox, p.items, p.now_ms) for p in group])
        except BaseException as error:  # the database itself failed: every push in it fails
            for put in group:
                self._answer(put.done, error=error)
            return
        self.commits += 1
        for put, result in zip(group, results, strict=True):
            if isinstance(result, StorageError):
                self._answer(put.done, error=result)
            else:
                self._answer(put.done, result)

    def _perform(self, job: _Run, store: KeeperStore) -> None:
        try:
            result = job.work(store)
        except BaseException as error:
            self._answer(job.done, error=error)
        else:
            self._answer(job.done, result)

    def _answer(
        self,
        done: asyncio.Future[Any],
        result: object = None,
        *,
        error: BaseException | None = None,
    ) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, done, result, error)


def _settle(done: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if done.cancelled():  # the caller went away; what it asked for is done (or refused)
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
