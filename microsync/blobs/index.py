"""The vault of one group as a pure fold of vault operations (no I/O).

Rules, checked by every replica from signed authorship:

* an ADD names a blob by ``blob_id(manifest)`` under the id key of the manifest's epoch; the
  first ADD of an id (lowest ``(hlc, entry id)``) is the one kept;
* a REMOVE deletes a blob for everyone, and counts only when its person is the person who
  added the blob. A REMOVE that arrives before its ADD is kept as a tombstone, so the state is
  the same whatever the delivery order: a blob is present iff some ADD of it exists and no
  REMOVE by the adder's person does.

:meth:`VaultIndex.apply` reports what to purge (chunk ids and manifest entry ids) when a blob
is removed; the caller deletes those from its disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from microsync.blobs.chunks import BlobId, ChunkId
from microsync.blobs.manifest import Manifest, VaultKind, VaultOp
from microsync.feed.entry import EntryId
from microsync.identity import PersonId

__all__ = ["BlobRef", "Purge", "VaultIndex"]


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
    """What a removal deletes from this device: chunks and the manifest entries' bodies."""

    blob: BlobId
    chunks: tuple[ChunkId, ...]
    entries: tuple[EntryId, ...]


@dataclass(slots=True)
class VaultIndex:
    """Blobs present, their manifests, and the removal tombstones."""

    refs: dict[BlobId, BlobRef] = field(default_factory=dict)
    manifests: dict[BlobId, Manifest] = field(default_factory=dict)
    removed: dict[BlobId, set[PersonId]] = field(default_factory=dict)  # blob -> removers
    gone: dict[BlobId, PersonId] = field(default_factory=dict)  # removed blobs -> adder

    def apply(
        self, *, entry: EntryId, person: PersonId, hlc: int, op: VaultOp, ids_key: bytes | None
    ) -> Purge | None:
        """Fold one operation (``ids_key``: the id key of the manifest's epoch, for an ADD)."""
        if op.kind is VaultKind.REMOVE:
            assert op.blob is not None
            return self._remove(op.blob, person)
        assert op.manifest is not None and ids_key is not None
        manifest = op.manifest
        blob = manifest.blob_id(ids_key)
        ref = BlobRef(
            id=blob,
            name=manifest.name,
            mime=manifest.mime,
            size=manifest.size,
            chunks=len(manifest.ids),
            author=person,
            added_at=hlc,
            entry=entry,
            thumbnail=manifest.thumbnail,
        )
        if blob in self.gone:
            return Purge(blob, manifest.ids, (entry,))  # a late copy of a removed blob
        if person in self.removed.get(blob, ()):
            self.gone[blob] = person
            return Purge(blob, manifest.ids, (entry,))
        old = self.refs.get(blob)
        if old is None or (hlc, bytes(entry)) < (old.added_at, bytes(old.entry)):
            self.refs[blob] = ref
            self.manifests[blob] = manifest
        return None

    def _remove(self, blob: BlobId, person: PersonId) -> Purge | None:
        self.removed.setdefault(blob, set()).add(person)
        ref = self.refs.get(blob)
        if ref is None or ref.author != person:
            return None
        manifest = self.manifests.pop(blob)
        del self.refs[blob]
        self.gone[blob] = person
        return Purge(blob, manifest.ids, (ref.entry,))
