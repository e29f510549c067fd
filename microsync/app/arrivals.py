"""When app entries dated in the future reached this device: an append-only log in the profile.

The :class:`~microsync.app.timeline.Timeline` shows such an entry at no more than
``MAX_DRIFT_MS`` after its arrival and expires it by it (``docs/security.md``, "Timestamps"),
so the arrival must survive restarts. It is kept in profile values (``meta``) under one group
prefix ``base``::

    base + "/n"     the number of chunks written since the last compaction (CBOR int)
    base + "/0"     the compacted records
    base + "/<i>"   chunk i (1 .. n): the records of one batch of arrivals

each chunk the canonical CBOR list ``[[entry id, arrival ms], ...]``. Recording a batch writes
only that batch (a member who sends a far-future entry at a time costs one small write each,
never a rewrite of every record); :func:`load` merges the chunks, the earliest arrival of an
entry winning, and folds them back into chunk 0 once there are more than :data:`MAX_CHUNKS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from microsync import encoding
from microsync.encoding import expect_bytes, expect_int, expect_list
from microsync.feed.entry import EntryId
from microsync.group.replica import GroupStore as Store

__all__ = ["MAX_CHUNKS", "append", "load"]

MAX_CHUNKS: Final = 32
"""Chunks :func:`load` reads before it compacts them into one."""
_MAX_BYTES: Final = 2**26


def load(store: Store, base: str) -> dict[EntryId, int]:
    """Every recorded arrival (the earliest, for an entry recorded twice)."""
    count = _count(store, base)
    merged: dict[EntryId, int] = {}
    for i in range(count + 1):
        for entry_id, at in _chunk(store.get_meta(f"{base}/{i}")).items():
            merged[entry_id] = min(at, merged.get(entry_id, at))
    if count > MAX_CHUNKS:
        with store.transaction():
            store.put_meta(f"{base}/0", _encode(merged))
            for i in range(1, count + 1):
                store.put_meta(f"{base}/{i}", b"")
            store.put_meta(f"{base}/n", encoding.encode(0))
    return merged


def append(store: Store, base: str, fresh: Mapping[EntryId, int]) -> None:
    """Record one batch of arrivals."""
    if not fresh:
        return
    with store.transaction():
        count = _count(store, base) + 1
        store.put_meta(f"{base}/{count}", _encode(fresh))
        store.put_meta(f"{base}/n", encoding.encode(count))


def _count(store: Store, base: str) -> int:
    data = store.get_meta(f"{base}/n")
    return 0 if not data else expect_int(encoding.decode(data, max_size=16), "chunks")


def _encode(records: Mapping[EntryId, int]) -> bytes:
    return encoding.encode([[bytes(i), at] for i, at in sorted(records.items())])


def _chunk(data: bytes | None) -> dict[EntryId, int]:
    out: dict[EntryId, int] = {}
    if not data:
        return out
    for item in expect_list(encoding.decode(data, max_size=_MAX_BYTES), "arrivals"):
        entry_id, at = expect_list(item, "arrival", 2)
        out[EntryId(expect_bytes(entry_id, "entry", 32))] = expect_int(at, "arrived at")
    return out
