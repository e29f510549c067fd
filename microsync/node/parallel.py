"""Using both cores for the receive path's signature checks.

:func:`verify_in_threads` is a :data:`~microsync.crypto.batch.BatchVerify`: it splits a batch
into one share per core this process may run on and checks each share with
:func:`~microsync.crypto.batch.verify_many` in its own thread, the calling thread taking the
first. PyNaCl releases the GIL inside libsodium, so the shares run at once: one plain loop per
thread over a whole share, since a pool fed one signature at a time measured *slower* than one
thread (the hand-off cost more than it saved). The helper threads are started and joined
inside the call, so nothing outlives it, and an exception in one is raised to the caller.
A device hands it to its groups (``LocalMember.verify``); the feed layer calls it once per
batch it stores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Final

from microsync.crypto.batch import PARALLEL_AT, Signed, verify_many
from microsync.crypto.labels import Label

__all__ = ["WORKERS", "verify_in_threads"]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


WORKERS: Final = _cores()
"""Threads a batch is shared between: one per core this process may run on."""


def verify_in_threads(
    label: Label, items: Sequence[Signed], *, workers: int = WORKERS
) -> list[bool]:
    """:func:`~microsync.crypto.batch.verify_many`, the batch shared by ``workers`` threads
    (shares of at least ``PARALLEL_AT // 2`` signatures)."""
    count = min(workers, len(items) // (PARALLEL_AT // 2))
    if count <= 1:
        return verify_many(label, items)
    step = -(-len(items) // count)
    shares = [items[i : i + step] for i in range(0, len(items), step)]
    answers: list[list[bool]] = [[] for _ in shares]
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            answers[index] = verify_many(label, shares[index])
        except BaseException as error:  # raised to the caller below, once all are joined
            failures.append(error)

    helpers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(shares))]
    for helper in helpers:
        helper.start()
    try:
        run(0)
    finally:
        for helper in helpers:
            helper.join()
    if failures:
        raise failures[0]
    return [answer for share in answers for answer in share]
