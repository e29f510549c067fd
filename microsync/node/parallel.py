"""Using both cores for the receive path's signature checks.

:func:`verify_in_threads` is a :data:`~microsync.crypto.batch.BatchVerify`: it hands a batch's
signatures to helper threads (one per core this process may run on, less the caller's) in
chunks of :data:`CHUNK`, and returns at once. Its answers are read lazily: reading one whose
chunk is not checked yet makes the reader check the next chunk nobody has taken (or, when all
are taken, wait for its own), so the caller places what is checked while the helpers check
the rest, and checks chunks itself when it would otherwise wait. PyNaCl releases the GIL inside
libsodium, so the chunks run at once: one plain loop per chunk, since a pool fed one signature
at a time measured *slower* than one thread (the hand-off cost more than it saved).

The helpers (started with ``_thread``, whose start does not wait for the new thread to run) stop
when every chunk is taken (at most one chunk after the last answer is read),
so nothing outlives a batch; an exception in one is raised to the reader of an answer in its
chunk. A device hands it to its groups (``LocalMember.verify``); the feed layer calls it once
per batch it stores.
"""

from __future__ import annotations

import _thread
import os
import threading
from collections.abc import Sequence
from typing import Final, overload

from microsync.crypto.batch import PARALLEL_AT, Signed, verify_many
from microsync.crypto.keys import KEY_SIZE
from microsync.crypto.labels import Label

__all__ = ["CHUNK", "WORKERS", "Verdicts", "verify_in_threads"]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


WORKERS: Final = _cores()
"""Threads that check a batch at once, the caller's included: one per core."""
CHUNK: Final = 16
"""Signatures checked per turn (about 0.8 ms): small enough that the caller rarely waits,
large enough that taking a turn costs little against it."""


def verify_in_threads(
    label: Label, items: Sequence[Signed], *, workers: int = WORKERS
) -> Sequence[bool]:
    """:func:`~microsync.crypto.batch.verify_many`'s answers, checked by ``workers - 1``
    helper threads and by whoever reads them (:class:`Verdicts`); a batch too small to share
    (under ``PARALLEL_AT`` signatures, or one worker) is checked right away."""
    if any(len(key) != KEY_SIZE for key, _, _ in items):
        raise ValueError(f"an Ed25519 public key must be {KEY_SIZE} bytes")
    if workers <= 1 or len(items) < PARALLEL_AT:
        return verify_many(label, items)
    return Verdicts(label, items, helpers=workers - 1)


class Verdicts(Sequence[bool]):
    """The answers for ``items``, checked chunk by chunk by ``helpers`` threads started here
    and by the readers of answers not known yet (module doc)."""

    def __init__(self, label: Label, items: Sequence[Signed], *, helpers: int) -> None:
        self._label = label
        self._items = items
        count = -(-len(items) // CHUNK)
        self._answers: list[list[bool] | None] = [None] * count
        self._done = [threading.Event() for _ in range(count)]
        self._failures: dict[int, BaseException] = {}
        self._lock = threading.Lock()
        self._next = 0  # the first chunk nobody has taken
        self._stopped = [threading.Event() for _ in range(min(helpers, count))]
        for stopped in self._stopped:
            # not threading.Thread: its start() waits until the new thread runs, which on a
            # busy machine cost milliseconds per batch; this one returns at once
            _thread.start_new_thread(self._help, (stopped,))

    def __repr__(self) -> str:
        known = sum(1 for done in self._done if done.is_set())
        return f"Verdicts({len(self._items)} signatures, {known}/{len(self._done)} chunks)"

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> bool: ...

    @overload
    def __getitem__(self, index: slice) -> list[bool]: ...

    def __getitem__(self, index: int | slice) -> bool | list[bool]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("verdict index out of range")
        chunk = index // CHUNK
        done = self._done[chunk]
        while not done.is_set():
            other = self._take()
            if other is None:
                done.wait()
                break
            self._check(other)
        answers = self._answers[chunk]
        if answers is None:
            raise self._failures[chunk]
        return answers[index % CHUNK]

    def join(self) -> None:
        """Check what nobody has taken yet, then wait until every helper has stopped (every
        answer is known then)."""
        while (chunk := self._take()) is not None:
            self._check(chunk)
        for stopped in self._stopped:
            stopped.wait()

    @property
    def running(self) -> int:
        """Helper threads not stopped yet."""
        return sum(1 for stopped in self._stopped if not stopped.is_set())

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self._done):
                return None
            self._next += 1
            return self._next - 1

    def _check(self, chunk: int) -> None:
        try:
            start = chunk * CHUNK
            self._answers[chunk] = verify_many(self._label, self._items[start : start + CHUNK])
        except BaseException as error:  # raised to whoever reads an answer of this chunk
            self._failures[chunk] = error
        finally:
            self._done[chunk].set()

    def _help(self, stopped: threading.Event) -> None:
        try:
            while (chunk := self._take()) is not None:
                self._check(chunk)
        finally:
            stopped.set()
