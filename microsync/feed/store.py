"""The storage port the feed layer needs (implemented by ``microsync.storage`` adapters).

The feed layer holds every rule; an adapter only stores and finds. Every adapter must pass the
shared contract suite in ``tests/test_storage_contract.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.identity import DeviceId

__all__ = ["AuthorStatus", "FeedStatus", "FeedStore", "ForkEvidence", "StoredEntry"]


class AuthorStatus(enum.Enum):
    """What the store knows about a device key."""

    UNKNOWN = "unknown"
    CERTIFIED = "certified"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedStatus:
    """The state of one (group, device) feed. ``head_seq`` is 0 for an empty feed."""

    head_seq: int = 0
    head_id: EntryId | None = None
    forked_at: int | None = None
    pending: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkEvidence:
    """Two validly signed entries of one device at one ``seq``: proof of a fork."""

    group: GroupId
    device: DeviceId
    seq: int
    first: bytes
    second: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEntry:
    """An entry with its body, or ``None`` where the body was never received or was purged."""

    entry: Entry
    body: bytes | None


class FeedStore(Protocol):
    """Reads and writes the feed layer performs. Writes happen inside :meth:`transaction`."""

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all. Re-entrant: an inner block joins
        the outer transaction."""
        ...

    def author_status(self, device: DeviceId) -> AuthorStatus: ...

    def feed_status(self, group: GroupId, device: DeviceId) -> FeedStatus: ...

    def entry_at(self, group: GroupId, device: DeviceId, seq: int) -> StoredEntry | None: ...

    def entries(
        self, group: GroupId, device: DeviceId, after_seq: int = 0, limit: int | None = None
    ) -> Iterator[StoredEntry]:
        """Entries of one feed in ``seq`` order, starting after ``after_seq``."""
        ...

    def feeds(self, group: GroupId) -> dict[DeviceId, FeedStatus]: ...

    def insert_entry(self, entry: Entry, body: bytes | None) -> None:
        """Store ``entry`` (and its body) and make it the feed's head."""
        ...

    def insert_entries(self, items: Sequence[tuple[Entry, bytes | None]]) -> None:
        """:meth:`insert_entry` of each item, in order, at once (a batch of appends). If any
        position or id is taken (in the store or twice in ``items``), none is stored."""
        ...

    def delete_body(self, entry_id: EntryId) -> None: ...

    def pending_at(self, group: GroupId, device: DeviceId, seq: int) -> list[StoredEntry]: ...

    def insert_pending(self, entry: Entry, body: bytes | None) -> None: ...

    def delete_pending(self, group: GroupId, device: DeviceId, from_seq: int, to_seq: int) -> None:
        """Drop pending entries with ``from_seq <= seq <= to_seq``."""
        ...

    def record_fork(self, evidence: ForkEvidence) -> None:
        """Keep the evidence and mark the feed forked at ``evidence.seq`` (the lowest wins)."""
        ...

    def fork_evidence(self, group: GroupId, device: DeviceId) -> list[ForkEvidence]: ...
