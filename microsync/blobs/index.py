"""The vault of one group as a pure fold of vault operations (no I/O).

Rules, checked by every replica from signed authorship (the person is the one whose device
certificate signed the entry):

* **An id binds its adder.** An ADD names the blob ``manifest.blob_id(id key, person)``: the
  id covers the adder, a commitment to the blob key, the sizes, the chunk ids, the name, type
  and thumbnail. Another member who announces the same manifest (even with an earlier
  timestamp, another thumbnail or another key) makes a different blob, his own; one id names
  one manifest of one person. Copies of it by that person only add entries to purge; the
  first by ``(hlc, entry id)`` gives the blob's time.
* **Only the adder removes.** A REMOVE counts only when its person added the blob, or when
  the caller says it was a moderator's (an admin's, at its place in its feed:
  ``moderator=True``); anyone else's is counted as :attr:`Refusal.NOT_THE_ADDER` and
  changes nothing. A REMOVE that arrives before its ADD waits as a tombstone.
* **A quota per person.** A person's present blobs, taken in ``(hlc, entry id)`` order, count
  while their number, bytes, chunks and thumbnail bytes stay within :class:`Quota`; the rest
  are kept out (:attr:`Refusal.OVER_QUOTA`) until removals make room. Only the manifests of
  blobs that count are kept in memory; one that comes within the quota later is listed in
  :attr:`VaultIndex.wanted` (where its entry is) for the caller to fold again.

The present set is a function of the set of operations, whatever their delivery order.
:meth:`VaultIndex.apply` reports what to purge (chunk addresses and manifest entry ids) when a
blob is removed; the caller deletes those from its disk.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from microsync.blobs.chunks import BlobId, ChunkId
from microsync.blobs.manifest import Manifest, VaultKind, VaultOp
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId

__all__ = ["DEFAULT_QUOTA", "BlobRef", "Locator", "Purge", "Quota", "Refusal", "VaultIndex"]

Locator = tuple[DeviceId, int]
"""Where an entry is stored: (device, seq)."""


class Refusal(enum.Enum):
    """Why a vault operation changed nothing (counted in :attr:`VaultIndex.refused`)."""

    NOT_THE_ADDER = "not_the_adder"  # a REMOVE of a blob another person added
    OVER_QUOTA = "over_quota"  # an ADD beyond its person's quota (kept out until room)
    UNREADABLE = "unreadable"  # a vault entry that does not decode (counted by the caller)


@dataclass(frozen=True, slots=True, kw_only=True)
class Quota:
    """What one person's present blobs may hold in a group's vault, on every device."""

    blobs: int = 4096
    bytes: int = 64 * 2**30  # plaintext: what an "all" device may be asked to store
    chunks: int = 2**18  # chunk ids kept in memory: 8 MiB
    thumbnail_bytes: int = 32 * 2**20

    def admits(self, blobs: int, size: int, chunks: int, thumbnails: int) -> bool:
        return (
            blobs <= self.blobs
            and size <= self.bytes
            and chunks <= self.chunks
            and thumbnails <= self.thumbnail_bytes
        )


DEFAULT_QUOTA: Final = Quota()


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A blob in a group's vault as this device sees it. ``bytes(ref)`` (= ``ref.attachment``)
    is what a post's ``attachments`` carry."""

    id: BlobId
    name: str
    mime: str
    size: int
    chunks: int
    author: PersonId
    added_at: int  # milliseconds since the epoch (the entry's HLC)
    entry: EntryId
    thumbnail: bytes | None = field(default=None, repr=False)

    def __bytes__(self) -> bytes:
        return bytes(self.id)

    @property
    def attachment(self) -> bytes:
        return bytes(self.id)


@dataclass(frozen=True, slots=True)
class Purge:
    """What a removal deletes from this device: chunks and the manifest entries' bodies.
    ``reread`` is set when the blob's manifest was not in memory (it was over its quota): the
    caller reads that entry to find the chunk addresses before deleting its body."""

    blob: BlobId
    chunks: tuple[ChunkId, ...]
    entries: tuple[EntryId, ...]
    reread: Locator | None = None


@dataclass(slots=True, eq=False, repr=False)
class _Add:
    """One blob announced and not removed; ``manifest`` only while it counts. (No field repr:
    ``ids_key`` and the manifest's blob key are secret.)"""

    blob: BlobId
    author: PersonId
    hlc: int
    entry: EntryId
    where: Locator | None
    size: int
    chunks: int
    thumbnail: int
    ids_key: bytes
    manifest: Manifest | None
    entries: list[EntryId]
    counted: bool = False

    @property
    def order(self) -> tuple[int, bytes, BlobId]:
        return (self.hlc, bytes(self.entry), self.blob)


@dataclass(slots=True)
class _Ledger:
    """One person's present blobs in ``(hlc, entry id)`` order; the first ``counted`` count
    (the longest prefix within the quota: sums only grow along it, so an insertion trims it
    from its end and a removal extends it, each in time proportional to what changes)."""

    order: list[tuple[int, bytes, BlobId]] = field(default_factory=list)
    counted: int = 0
    totals: tuple[int, int, int] = (0, 0, 0)  # bytes, chunks, thumbnail bytes of those


@dataclass(slots=True)
class VaultIndex:
    """Blobs present, their manifests, the removal tombstones and the refusals."""

    quota: Quota = DEFAULT_QUOTA
    refs: dict[BlobId, BlobRef] = field(default_factory=dict)
    manifests: dict[BlobId, Manifest] = field(default_factory=dict)
    removed: dict[BlobId, set[PersonId]] = field(default_factory=dict)  # blob -> removers
    gone: dict[BlobId, PersonId] = field(default_factory=dict)  # removed blobs -> adder
    moderated: set[BlobId] = field(default_factory=set)  # removed by an admin (moderation)
    wanted: dict[BlobId, Locator] = field(default_factory=dict)  # count, manifest not read
    refused: Counter[Refusal] = field(default_factory=Counter)
    _adds: dict[BlobId, _Add] = field(default_factory=dict)
    _ledgers: dict[PersonId, _Ledger] = field(default_factory=dict)

    def apply(
        self,
        *,
        entry: EntryId,
        person: PersonId,
        hlc: int,
        op: VaultOp,
        ids_key: bytes | None,
        where: Locator | None = None,
        moderator: bool = False,
    ) -> Purge | None:
        """Fold one operation (``ids_key``: the id key of the manifest's epoch, for an ADD;
        ``where``: the entry's place, to read it again if it comes within quota later;
        ``moderator``: a REMOVE written by an admin, which removes anyone's blob)."""
        if op.kind is VaultKind.REMOVE:
            assert op.blob is not None
            if moderator:
                self.moderated.add(op.blob)
            return self._remove(op.blob, person)
        assert op.manifest is not None and ids_key is not None
        return self._add(entry, person, hlc, op.manifest, ids_key, where)

    def note(self, refusal: Refusal) -> None:
        """Count a refusal the caller decided (an entry that does not decode)."""
        self.refused[refusal] += 1

    def room(self, person: PersonId, *, size: int, chunks: int, thumbnail: int) -> bool:
        """Would a blob of ``size`` bytes, ``chunks`` chunks and a ``thumbnail`` of that many
        bytes, added now (after every blob present) by ``person``, count within the quota?"""
        ledger = self._ledgers.get(person, _Ledger())
        held, chunks_held, thumbs = ledger.totals
        return ledger.counted == len(ledger.order) and self.quota.admits(
            ledger.counted + 1, held + size, chunks_held + chunks, thumbs + thumbnail
        )

    # ------------------------------------------------------------------ ADD

    def _add(
        self,
        entry: EntryId,
        person: PersonId,
        hlc: int,
        manifest: Manifest,
        ids_key: bytes,
        where: Locator | None,
    ) -> Purge | None:
        blob = manifest.blob_id(ids_key, person)
        if blob in self.gone or blob in self.moderated or person in self.removed.get(blob, ()):
            if blob not in self.gone:
                self._count_foreign_removes(blob, person)
                self.gone[blob] = person
            return Purge(blob, manifest.addresses(ids_key, person), (entry,))
        add = self._adds.get(blob)
        if add is None:
            self._count_foreign_removes(blob, person)
            add = _Add(
                blob=blob,
                author=person,
                hlc=hlc,
                entry=entry,
                where=where,
                size=manifest.size,
                chunks=len(manifest.ids),
                thumbnail=len(manifest.thumbnail or b""),
                ids_key=ids_key,
                manifest=manifest,
                entries=[entry],
            )
            self._adds[blob] = add
            self._enter(add)
            return None
        if entry not in add.entries:
            add.entries.append(entry)  # a copy by the same person: one more body to purge
        if add.manifest is None:
            add.manifest = manifest  # read again (it counts now), or an earlier copy
        if (hlc, bytes(entry)) < (add.hlc, bytes(add.entry)):
            self._leave(add)
            add.hlc, add.entry, add.where = hlc, entry, where
            self._enter(add)
        elif add.counted:
            self._show(add)
        else:
            add.manifest = None
        return None

    def _count_foreign_removes(self, blob: BlobId, adder: PersonId) -> None:
        others = self.removed.get(blob, set()) - {adder}
        if others and blob not in self.moderated:
            self.refused[Refusal.NOT_THE_ADDER] += len(others)

    # ------------------------------------------------------------------ REMOVE

    def _remove(self, blob: BlobId, person: PersonId) -> Purge | None:
        removers = self.removed.setdefault(blob, set())
        if person in removers:
            return None  # the same removal again
        removers.add(person)
        add = self._adds.get(blob)
        if add is None:
            if self.gone.get(blob, person) != person:
                self.refused[Refusal.NOT_THE_ADDER] += 1
            return None  # a tombstone: applied when (if) the blob's ADD arrives
        if add.author != person and blob not in self.moderated:
            self.refused[Refusal.NOT_THE_ADDER] += 1
            return None
        manifest = add.manifest
        del self._adds[blob]
        self._leave(add)
        self._forget(blob)
        self.gone[blob] = add.author
        if manifest is None:
            return Purge(blob, (), tuple(add.entries), add.where)
        return Purge(blob, manifest.addresses(add.ids_key, add.author), tuple(add.entries))

    def _forget(self, blob: BlobId) -> None:
        self.refs.pop(blob, None)
        self.manifests.pop(blob, None)
        self.wanted.pop(blob, None)

    # ------------------------------------------------------------------ the quota

    def _enter(self, add: _Add) -> None:
        """Place ``add`` in its person's order; it counts if the prefix up to it still fits
        (later blobs are trimmed off the end of the prefix until it does)."""
        ledger = self._ledgers.setdefault(add.author, _Ledger())
        position = bisect.bisect_left(ledger.order, add.order)
        ledger.order.insert(position, add.order)
        if position > ledger.counted:
            self._hide(add)
            self.refused[Refusal.OVER_QUOTA] += 1
            return
        self._count(ledger, add)
        while ledger.counted and not self.quota.admits(ledger.counted, *ledger.totals):
            last = self._adds[ledger.order[ledger.counted - 1][2]]
            self._uncount(ledger, last)
            self._hide(last)
            self.refused[Refusal.OVER_QUOTA] += 1

    def _leave(self, add: _Add) -> None:
        """Take ``add`` out of its person's order; blobs after the prefix join it while the
        quota allows."""
        ledger = self._ledgers[add.author]
        position = bisect.bisect_left(ledger.order, add.order)
        del ledger.order[position]
        if add.counted:
            self._uncount(ledger, add)
        while ledger.counted < len(ledger.order):
            after = self._adds[ledger.order[ledger.counted][2]]
            size, chunks, thumbs = ledger.totals
            fits = self.quota.admits(
                ledger.counted + 1,
                size + after.size,
                chunks + after.chunks,
                thumbs + after.thumbnail,
            )
            if not fits:
                break
            self._count(ledger, after)

    def _count(self, ledger: _Ledger, add: _Add) -> None:
        size, chunks, thumbs = ledger.totals
        ledger.counted += 1
        ledger.totals = (size + add.size, chunks + add.chunks, thumbs + add.thumbnail)
        add.counted = True
        self._show(add)

    def _uncount(self, ledger: _Ledger, add: _Add) -> None:
        size, chunks, thumbs = ledger.totals
        ledger.counted -= 1
        ledger.totals = (size - add.size, chunks - add.chunks, thumbs - add.thumbnail)
        add.counted = False

    def _hide(self, add: _Add) -> None:
        """``add`` does not count: its manifest is not kept, and it is not shown."""
        add.manifest = None
        self._forget(add.blob)

    def _show(self, add: _Add) -> None:
        """``add`` counts: shown, or wanted (read again) if its manifest is not in memory."""
        if add.manifest is None:
            if add.where is not None:
                self.wanted[add.blob] = add.where
            return
        self.wanted.pop(add.blob, None)
        self.manifests[add.blob] = add.manifest
        self.refs[add.blob] = BlobRef(
            id=add.blob,
            name=add.manifest.name,
            mime=add.manifest.mime,
            size=add.size,
            chunks=add.chunks,
            author=add.author,
            added_at=add.hlc,
            entry=add.entry,
            thumbnail=add.manifest.thumbnail,
        )
