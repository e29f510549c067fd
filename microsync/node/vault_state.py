"""The fold of one group's vault entries into a :class:`~microsync.blobs.VaultIndex`.

Vault entries are opened through the group's one content fold
(:meth:`~microsync.group.replica.GroupReplica.content_fold`): an entry no key opens yet, or
whose device's stretch does not count yet, waits there and is tried again on every update.
:meth:`VaultFold.received` folds only what a sync batch stored (handed in with bodies);
:meth:`VaultFold.refresh` reads each feed from the last entry seen (the first call folds the
history). A removal purges the blob's manifest bodies and chunks on this device.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence

from microsync.blobs import (
    VAULT_TYPE,
    BlobId,
    BlobRef,
    ChunkId,
    ChunkStore,
    Purge,
    Quota,
    VaultIndex,
    VaultKind,
    VaultOp,
    id_key,
)
from microsync.errors import DecodeError, DecryptionError
from microsync.feed import EntryId, GroupId, StoredEntry
from microsync.group.fold import ContentFold, Folded
from microsync.group.replica import GroupReplica, GroupStore
from microsync.group.state import Window
from microsync.identity import DeviceId

__all__ = ["VaultFold"]


class VaultFold:
    """The vault index of one group on this device, kept up to date (module doc)."""

    def __init__(self, replica: GroupReplica, quota: Quota) -> None:
        self._replica = replica
        self._index = VaultIndex(quota=quota)
        self._seen: dict[DeviceId, int] = {}
        self._bodies: dict[EntryId, bytes | None] = {}  # bodies of entries being folded
        self._mine: set[BlobId] = set()
        self._id_keys: dict[BlobId, bytes] = {}  # blob -> the id key its manifest names
        self._addresses: dict[BlobId, tuple[ChunkId, ...]] = {}  # cache of blob -> addresses
        self._loaded = False  # the first refresh folds history quietly (no events)
        self._where: dict[ChunkId, tuple[BlobId, int]] = {}  # address -> (blob, index)
        self._where_of: frozenset[BlobId] = frozenset()  # the blobs ``_where`` maps
        self._admins: dict[DeviceId, tuple[Window, ...]] = {}  # the admin stretches folded with
        self._folded_any = False  # whether a vault entry was ever folded (or locked) here

    def __repr__(self) -> str:
        return f"VaultFold({len(self._index.refs)} blobs)"

    @property
    def _gid(self) -> GroupId:
        return self._replica.id

    @property
    def _store(self) -> GroupStore:
        return self._replica.store

    @property
    def _chunks(self) -> ChunkStore:
        return chunk_store(self._store)

    def _ids_key(self, epoch: int, body: bytes | None) -> bytes | None:
        """The id key of ``epoch`` (the key whose ref the body names, when there are two)."""
        ref = None if body is None else body[:16]
        found = None
        for (number, _), key in sorted(self._replica.epoch_keys().items()):
            content = key.content
            if number != epoch or content is None:
                continue
            found = id_key(content.secret_bytes())
            if key.ref == ref:
                return found
        return found

    def addresses(self, blob: BlobId) -> tuple[ChunkId, ...]:
        """Where a present blob's chunks are stored and asked for, in order (cached)."""
        found = self._addresses.get(blob)
        if found is None:
            manifest = self._index.manifests[blob]
            found = manifest.addresses(self._id_keys[blob], self._index.refs[blob].author)
            self._addresses[blob] = found
        return found

    def locate(self, address: ChunkId) -> tuple[BlobId, int] | None:
        """The present blob with a chunk at ``address``, and the chunk's index."""
        blobs = frozenset(self._index.refs)
        if blobs != self._where_of:  # the vault changed: map its addresses again
            self._where = {a: (b, i) for b in blobs for i, a in enumerate(self.addresses(b))}
            self._where_of = blobs
        return self._where.get(address)

    # ------------------------------------------------------------------ the fold

    @functools.cached_property
    def _opener(self) -> ContentFold[VaultOp]:
        """The content fold of vault entries (:mod:`microsync.group.fold`): what no key opens
        yet, or what does not count yet, waits in it and is tried again on every refresh."""
        return self._replica.content_fold(VaultOp.from_bytes)

    def refresh(self) -> dict[BlobId, BlobRef] | None:
        """Fold vault entries stored since the last call; purge what removals delete.
        Returns the blobs before, if anything was folded after the first call."""
        shown = self._restart_if_admins_moved()
        store = self._store
        fresh: list[StoredEntry] = []
        for device, status in store.feeds(self._gid).items():
            if status.head_seq > self._seen.get(device, 0):
                fresh += self._scan(device)
        before = self._update(fresh)
        return before if shown is None else shown

    def _restart_if_admins_moved(self) -> dict[BlobId, BlobRef] | None:
        """A promotion or demotion seen after vault entries were folded changes which
        removals count (an admin's removes anyone's blob): fold the vault again from the
        store. Returns the blobs shown before, if it starts again."""
        admins = dict(self._replica.state.admin_windows)
        moved, self._admins = admins != self._admins, admins
        if not moved or not self._loaded or not self._folded_any:
            return None  # no vault entry folded yet: the stretches decided nothing to redo
        shown = dict(self._index.refs)
        self._index = VaultIndex(quota=self._index.quota)
        self._seen, self._bodies = {}, {}
        self.__dict__.pop("_opener", None)  # a fresh content fold (cached property)
        return shown

    def received(self, accepted: Sequence[StoredEntry]) -> dict[BlobId, BlobRef] | None:
        """Fold what a sync batch stored (``accepted``, with bodies, in feed order): only those
        entries, with no scan of the feeds (the first call folds the history: removals in it
        purge their chunks whether or not the vault is ever read, and what came before the
        batch is folded quietly, so the batch itself is news even then)."""
        if self._loaded and dict(self._replica.state.admin_windows) != self._admins:
            return self.refresh()  # a promotion or demotion seen late: fold again
        if not self._loaded:
            self._load_before(accepted)
        fresh: list[StoredEntry] = []
        for device, run in _by_device(accepted).items():
            if run[0].entry.header.seq == self._seen.get(device, 0) + 1:
                self._seen[device] = run[-1].entry.header.seq
                fresh += [s for s in run if s.entry.header.type == VAULT_TYPE]
            else:  # entries before them not folded yet (written here, say): read the feed
                fresh += self._scan(device)
        return self._update(fresh)

    def _load_before(self, accepted: Sequence[StoredEntry]) -> None:
        """The first fold: the history stored before ``accepted``, quietly (it is no news)."""
        self._admins = dict(self._replica.state.admin_windows)
        first = {d: run[0].entry.header.seq for d, run in _by_device(accepted).items()}
        history: list[StoredEntry] = []
        for device in self._store.feeds(self._gid):
            history += self._scan(device, before=first.get(device))
        self._update(history)

    def _scan(self, device: DeviceId, before: int | None = None) -> builtins.list[StoredEntry]:
        """The vault entries of ``device``'s feed after the last one seen (and before the
        seq ``before``, if given)."""
        found = []
        for stored in self._store.entries(self._gid, device, self._seen.get(device, 0)):
            if before is not None and stored.entry.header.seq >= before:
                break
            self._seen[device] = stored.entry.header.seq
            if stored.entry.header.type == VAULT_TYPE:
                found.append(stored)
        return found

    def _update(self, fresh: Sequence[StoredEntry]) -> dict[BlobId, BlobRef] | None:
        """Fold ``fresh`` and what waited; purge, forget and announce what changed."""
        fold = self._opener
        self._folded_any |= bool(fresh)
        for stored in fresh:
            self._bodies[stored.entry.id] = stored.body
        retry = builtins.list(fold.locked.values())
        entries = [*retry, *(s.entry for s in fresh)]
        if not entries and not self._index.wanted and self._loaded:
            return None
        before = dict(self._index.refs)
        purges = [p for f in fold.fold(entries, self._bodies) if (p := self._apply(f))]
        self._bodies = {i: b for i, b in self._bodies.items() if i in fold.locked}
        purges += self._reread_wanted()
        if purges:
            self._purge(purges)
        if before.keys() != self._index.refs.keys():
            for gone in [b for b in self._addresses if b not in self._index.refs]:
                del self._addresses[gone]  # removed or crowded out: not kept in memory
        loaded, self._loaded = self._loaded, True
        return before if loaded else None

    def _reread_wanted(self) -> builtins.list[Purge]:
        """Fold again the entries of blobs that came within their person's quota (their
        manifests were not kept in memory while they were beyond it)."""
        purges = []
        for blob, (device, seq) in builtins.list(self._index.wanted.items()):
            stored = self._store.entry_at(self._gid, device, seq)
            if stored is not None:
                folded = self._opener.fold([stored.entry], {stored.entry.id: stored.body})
                purges += [p for f in folded if (p := self._apply(f)) is not None]
            self._index.wanted.pop(blob, None)  # read once: an unreadable one stays hidden
        return purges

    def _apply(self, folded: Folded[VaultOp]) -> Purge | None:
        """Apply one opened vault operation to the index (a purged body applies nothing)."""
        op, person, entry = folded.value, folded.person, folded.entry
        if op is None or person is None:
            return None
        h = entry.header
        ids_key = None
        if op.kind is VaultKind.ADD:
            assert op.manifest is not None
            ids_key = self._ids_key(op.manifest.epoch, folded.body)
            if ids_key is None:
                return None
            blob = op.manifest.blob_id(ids_key, person)
            self._id_keys[blob] = ids_key
            if h.device == self._replica.me.device:
                self._mine.add(blob)  # added here: its chunks are kept whatever the policy
        return self._index.apply(
            entry=entry.id,
            person=person,
            hlc=h.hlc,
            op=op,
            ids_key=ids_key,
            where=(h.device, h.seq),
            moderator=op.kind is VaultKind.REMOVE
            and self._replica.state.moderates(h.device, h.seq),
        )

    def _purge(self, purges: Sequence[Purge]) -> None:
        store = self._store
        purges = [self._with_chunks(p) for p in purges]
        with store.transaction():
            for purge in purges:
                for entry in purge.entries:
                    store.delete_body(entry)
        for purge in purges:
            self._addresses.pop(purge.blob, None)
            self._chunks.delete_chunks(self._gid, purge.chunks)
        scrub = getattr(store, "scrub", None)
        if scrub is not None:
            scrub()

    def _with_chunks(self, purge: Purge) -> Purge:
        """``purge`` with its chunk addresses, reading its manifest entry if it was not in
        memory (a blob beyond its person's quota when it was removed)."""
        if purge.reread is None:
            return purge
        stored = self._store.entry_at(self._gid, *purge.reread)
        certificate = self._store.certificate(purge.reread[0])
        if stored is None or stored.body is None or certificate is None:
            return purge
        try:
            op = VaultOp.from_bytes(self._replica.decrypt(stored))
        except (DecryptionError, DecodeError):
            return purge
        ids_key = None if op.manifest is None else self._ids_key(op.manifest.epoch, stored.body)
        if op.manifest is None or ids_key is None:
            return purge
        chunks = op.manifest.addresses(ids_key, certificate.person)
        return Purge(purge.blob, chunks, purge.entries)


def _by_device(entries: Sequence[StoredEntry]) -> dict[DeviceId, builtins.list[StoredEntry]]:
    """``entries`` by device, each run in the order given."""
    runs: dict[DeviceId, builtins.list[StoredEntry]] = {}
    for stored in entries:
        runs.setdefault(stored.entry.header.device, []).append(stored)
    return runs


def chunk_store(store: GroupStore) -> ChunkStore:
    """``store`` as the chunk store the vault needs (a profile on disk is one)."""
    if not isinstance(store, ChunkStore):
        raise TypeError("this profile's store keeps no vault chunks")
    return store
