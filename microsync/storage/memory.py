"""An in-memory :class:`~microsync.storage.base.Store` for tests and simulations.

Transactions snapshot the tables (shallow copies: every stored value is immutable) and restore
them if the block raises, so a failed write leaves nothing behind, exactly like SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from microsync.blobs.chunks import ChunkId
from microsync.errors import StorageError
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.feed.store import AuthorStatus, FeedStatus, ForkEvidence, StoredEntry
from microsync.identity import DeviceCertificate, DeviceId, DeviceRevocation
from microsync.storage.dump import canonical_dump

__all__ = ["MemoryStore"]

FeedKey = tuple[GroupId, DeviceId]
EntryKey = tuple[GroupId, DeviceId, int]


@dataclass
class _Tables:
    meta: dict[str, bytes] = field(default_factory=dict)
    certificates: dict[DeviceId, DeviceCertificate] = field(default_factory=dict)
    revocations: dict[DeviceId, DeviceRevocation] = field(default_factory=dict)
    entries: dict[EntryKey, StoredEntry] = field(default_factory=dict)
    by_id: dict[EntryId, EntryKey] = field(default_factory=dict)
    feeds: dict[FeedKey, FeedStatus] = field(default_factory=dict)
    pending: dict[EntryKey, tuple[StoredEntry, ...]] = field(default_factory=dict)
    forks: dict[FeedKey, tuple[ForkEvidence, ...]] = field(default_factory=dict)

    def copy(self) -> _Tables:
        return _Tables(**{name: dict(value) for name, value in vars(self).items()})


class MemoryStore:
    """A profile that lives in memory only."""

    def __init__(self) -> None:
        self._t = _Tables()
        # vault chunks: outside the transactional tables, like SqliteStore's chunk files
        self._chunks: dict[tuple[GroupId, ChunkId], bytes] = {}
        self._depth = 0
        self._closed = False

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._check_open()
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        saved = self._t.copy()
        self._depth = 1
        try:
            yield
        except BaseException:
            self._t = saved
            raise
        finally:
            self._depth = 0

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the store is closed")

    # profile values and trust
    def get_meta(self, key: str) -> bytes | None:
        self._check_open()
        return self._t.meta.get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self._check_open()
        self._t.meta[key] = bytes(value)

    def certificate(self, device: DeviceId) -> DeviceCertificate | None:
        self._check_open()
        return self._t.certificates.get(device)

    def put_certificate(self, certificate: DeviceCertificate) -> None:
        self._check_open()
        self._t.certificates[certificate.device] = certificate

    def revocation(self, device: DeviceId) -> DeviceRevocation | None:
        self._check_open()
        return self._t.revocations.get(device)

    def put_revocation(self, revocation: DeviceRevocation) -> None:
        self._check_open()
        if revocation.device not in self._t.certificates:
            raise StorageError("no certificate for the revoked device")
        self._t.revocations[revocation.device] = revocation

    def author_status(self, device: DeviceId) -> AuthorStatus:
        self._check_open()
        if device in self._t.revocations:
            return AuthorStatus.REVOKED
        if device in self._t.certificates:
            return AuthorStatus.CERTIFIED
        return AuthorStatus.UNKNOWN

    # feeds
    def feed_status(self, group: GroupId, device: DeviceId) -> FeedStatus:
        self._check_open()
        status = self._t.feeds.get((group, device), FeedStatus())
        feed = (group, device)
        pending = sum(len(v) for (g, d, _), v in self._t.pending.items() if (g, d) == feed)
        return replace(status, pending=pending)

    def feeds(self, group: GroupId) -> dict[DeviceId, FeedStatus]:
        self._check_open()
        return {d: self.feed_status(g, d) for (g, d) in self._t.feeds if g == group}

    def entry_at(self, group: GroupId, device: DeviceId, seq: int) -> StoredEntry | None:
        self._check_open()
        return self._t.entries.get((group, device, seq))

    def entries(
        self, group: GroupId, device: DeviceId, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[StoredEntry]:
        self._check_open()
        head = self._t.feeds.get((group, device), FeedStatus()).head_seq
        stop = head if limit is None else min(head, after_seq + limit)
        for seq in range(after_seq + 1, stop + 1):
            stored = self._t.entries.get((group, device, seq))
            if stored is not None:  # no KeyError on a gap: insert_entry enforces no order
                yield stored

    def insert_entry(self, entry: Entry, body: bytes | None) -> None:
        self._check_open()
        h = entry.header
        key = (h.group, h.device, h.seq)
        if key in self._t.entries or entry.id in self._t.by_id:
            raise StorageError("entry already stored")
        self._t.entries[key] = StoredEntry(entry=entry, body=body)
        self._t.by_id[entry.id] = key
        old = self._t.feeds.get((h.group, h.device), FeedStatus())
        self._t.feeds[(h.group, h.device)] = replace(old, head_seq=h.seq, head_id=entry.id)

    def insert_entries(self, items: Sequence[tuple[Entry, bytes | None]]) -> None:
        self._check_open()
        keys = [(e.header.group, e.header.device, e.header.seq) for e, _ in items]
        ids = [e.id for e, _ in items]
        taken = any(k in self._t.entries for k in keys) or any(i in self._t.by_id for i in ids)
        if taken or len(set(keys)) < len(keys) or len(set(ids)) < len(ids):
            raise StorageError("entry already stored")
        for entry, body in items:
            self.insert_entry(entry, body)

    def delete_body(self, entry_id: EntryId) -> None:
        self._check_open()
        key = self._t.by_id.get(entry_id)
        if key is not None:
            self._t.entries[key] = replace(self._t.entries[key], body=None)

    def pending_at(self, group: GroupId, device: DeviceId, seq: int) -> list[StoredEntry]:
        self._check_open()
        return list(self._t.pending.get((group, device, seq), ()))

    def insert_pending(self, entry: Entry, body: bytes | None) -> None:
        self._check_open()
        h = entry.header
        key = (h.group, h.device, h.seq)
        if any(s.entry.id == entry.id for s in self._t.pending.get(key, ())):
            raise StorageError("entry already pending")
        self._t.pending[key] = (*self._t.pending.get(key, ()), StoredEntry(entry=entry, body=body))

    def delete_pending(self, group: GroupId, device: DeviceId, from_seq: int, to_seq: int) -> None:
        self._check_open()
        for key in [k for k in self._t.pending if k[:2] == (group, device)]:
            if from_seq <= key[2] <= to_seq:
                del self._t.pending[key]

    def record_fork(self, evidence: ForkEvidence) -> None:
        self._check_open()
        key = (evidence.group, evidence.device)
        self._t.forks[key] = (*self._t.forks.get(key, ()), evidence)
        old = self._t.feeds.get(key, FeedStatus())
        forked = evidence.seq if old.forked_at is None else min(old.forked_at, evidence.seq)
        self._t.feeds[key] = replace(old, forked_at=forked)

    def fork_evidence(self, group: GroupId, device: DeviceId) -> list[ForkEvidence]:
        self._check_open()
        return list(self._t.forks.get((group, device), ()))

    def dump(self) -> bytes:
        self._check_open()
        t = self._t
        return canonical_dump(
            {
                "meta": t.meta.items(),
                "certificates": ((c.to_bytes(),) for c in t.certificates.values()),
                "revocations": ((r.to_bytes(),) for r in t.revocations.values()),
                "entries": ((*k, s.entry.wire, s.body) for k, s in t.entries.items()),
                "feeds": ((*k, f.head_seq, f.head_id, f.forked_at) for k, f in t.feeds.items()),
                "pending": (
                    (*k, s.entry.wire, s.body) for k, group in t.pending.items() for s in group
                ),
                "forks": (
                    (e.group, e.device, e.seq, e.first, e.second)
                    for group in t.forks.values()
                    for e in group
                ),
            }
        )

    # vault chunks (microsync.blobs.store.ChunkStore)

    def put_chunk(
        self, group: GroupId, chunk: ChunkId, data: bytes, *, durable: bool = True
    ) -> None:
        self._check_open()
        if len(chunk) != 32:
            raise ValueError("a chunk id is 32 bytes")
        self._chunks[(group, chunk)] = bytes(data)

    def get_chunk(self, group: GroupId, chunk: ChunkId) -> bytes | None:
        self._check_open()
        return self._chunks.get((group, chunk))

    def has_chunk(self, group: GroupId, chunk: ChunkId) -> bool:
        self._check_open()
        return (group, chunk) in self._chunks

    def delete_chunks(self, group: GroupId, chunks: Iterable[ChunkId]) -> int:
        self._check_open()
        return sum(self._chunks.pop((group, c), None) is not None for c in chunks)

    def chunk_usage(self, group: GroupId) -> tuple[int, int]:
        self._check_open()
        held = [len(d) for (g, _), d in self._chunks.items() if g == group]
        return len(held), sum(held)

    def scrub(self) -> None:
        """Nothing to do: memory holds no deleted rows (``SqliteStore.scrub`` truncates its log)."""

    def close(self) -> None:
        self._closed = True
