"""The batch path of :func:`~microsync.feed.ingest.ingest_many`: a batch's signatures asked
for at once (:func:`verify_ahead`, answers read as they are needed) and its plain appends
stored with one statement (:class:`PlainAppends`). Every rule stays in
:mod:`microsync.feed.ingest` and :mod:`microsync.feed.validate`: these only decide what can
skip the one-entry-at-a-time path because that path would do exactly this with it."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from microsync.crypto import labels
from microsync.crypto.batch import PARALLEL_AT, BatchVerify
from microsync.errors import MicrosyncError
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.feed.store import AuthorStatus, FeedStore
from microsync.identity import DeviceId

__all__ = ["Answers", "PlainAppends", "verify_ahead"]


def verify_ahead(
    store: FeedStore,
    checked: Sequence[tuple[Entry, bytes | None] | MicrosyncError],
    verify: BatchVerify,
    verified: Container[EntryId] = frozenset(),
) -> Answers:
    """The signatures of a batch that the placing will check, handed at once to
    ``verify``: those of certified authors' entries
    past their feed's head, each distinct entry once. An entry the rules refuse before its
    signature is checked (a wrong ``prev``, a forked feed) may be checked here for nothing:
    at most one check per item received, what a valid entry costs anyway. ``verify`` may
    answer lazily (checking the rest while the caller places what is answered)."""
    wanted: dict[EntryId, Entry] = {}
    known: set[EntryId] = set()
    for item in checked:
        if isinstance(item, MicrosyncError):
            continue
        entry = item[0]
        h = entry.header
        if entry.id in verified:
            known.add(entry.id)
            continue
        if entry.id in wanted or store.author_status(h.device) is not AuthorStatus.CERTIFIED:
            continue
        if h.seq > store.feed_status(h.group, h.device).head_seq:
            wanted[entry.id] = entry
    if len(wanted) < PARALLEL_AT:
        return Answers(known, {}, ())  # the others checked one by one as they are placed
    signed = [(e.header.device, e.header_bytes, e.signature) for e in wanted.values()]
    answers = verify(labels.ENTRY_SIGNATURE, signed)
    return Answers(known, {entry_id: i for i, entry_id in enumerate(wanted)}, answers)


@dataclass(frozen=True, slots=True)
class Answers:
    """What :func:`verify_ahead` found out or asked: ``True`` for an entry checked before,
    else its answer (read only when asked for), or ``None`` if it was not asked."""

    known: set[EntryId]
    index: dict[EntryId, int]
    answers: Sequence[bool]

    def get(self, entry_id: EntryId) -> bool | None:
        if entry_id in self.known:
            return True
        at = self.index.get(entry_id)
        return None if at is None else self.answers[at]

    def settle(self) -> None:
        """Wait for every answer (so no helper of ``verify`` outlives the batch)."""
        join = getattr(self.answers, "join", None)
        if join is not None:
            join()


class PlainAppends:
    """The plain appends of a batch, stored with one :meth:`FeedStore.insert_entries`.

    An entry is *plain* when the one-entry path would store it as its feed's next entry and
    unblock nothing: its signature checked already (``verdict`` true), its author certified,
    its ``seq`` and ``prev`` the next after its feed's head (as this run moved it), the feed
    not forked and with nothing pending. Every other entry goes through the one-entry path,
    after :meth:`flush` (so it sees every earlier entry of the batch stored)."""

    __slots__ = ("_heads", "_run", "_store")

    def __init__(self, store: FeedStore) -> None:
        self._store = store
        self._run: list[tuple[Entry, bytes | None]] = []
        self._heads: dict[tuple[GroupId, DeviceId], tuple[int, EntryId | None]] = {}

    def take(self, entry: Entry, body: bytes | None, verdict: bool | None) -> bool:
        """Keep ``entry`` for the next flush if it is plain (class doc); ``False`` if not."""
        if verdict is not True:
            return False
        h = entry.header
        key = (h.group, h.device)
        head = self._heads.get(key)
        if head is None:
            feed = self._store.feed_status(h.group, h.device)
            if feed.pending or feed.forked_at is not None:
                return False
            head = (feed.head_seq, feed.head_id)
        if h.seq != head[0] + 1 or h.prev != head[1]:
            return False
        if self._store.author_status(h.device) is not AuthorStatus.CERTIFIED:
            return False
        self._run.append((entry, body))
        self._heads[key] = (h.seq, entry.id)
        return True

    def flush(self) -> None:
        """Store the kept entries; what the store says of their feeds is current again."""
        if self._run:
            self._store.insert_entries(self._run)
        self._run, self._heads = [], {}
