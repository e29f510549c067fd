"""``Group.vault``: encrypted files shared with a group, stored in chunks and fetched lazily.

Theory of operation (``docs/vault.md`` has the format)
------------------------------------------------------
:meth:`Vault.add` streams a file through :class:`~microsync.blobs.BlobEncryptor` (memory: at
most two chunks plus one read), keeps each sealed chunk in the profile's chunk store as it is
made, then appends the manifest as an encrypted feed entry of type
:data:`~microsync.blobs.VAULT_TYPE`. The vault's state is the
:class:`~microsync.blobs.VaultIndex` fold of those entries, refreshed from the store whenever it
is read and after every sync batch (:meth:`Vault.refresh`); a removal purges the blob's chunks
and its manifest body on every device that applies it.

:meth:`Vault.fetch` gets the chunks this device lacks from every connected peer sharing the
group (a window of chunks per peer, several peers at once), checks each against its keyed id
and length and decrypts it BEFORE using it, writes the plaintext into ``.<dest>.part`` at its
offset, and keeps the sealed chunk unless the policy says not to; chunks already held are
decrypted from the store. ``.part`` is renamed onto ``dest`` only once every chunk has opened:
a bad chunk never reaches ``dest``. An interrupted fetch resumes from the chunks kept and from
the ``.part`` file (each chunk in it re-sealed and checked against its id).

Per-device storage policy (a profile setting, per group). Manifests, and so thumbnails, are
feed entries every member holds. ``"all"``: :meth:`Vault.prefetch` gets every chunk, and
fetched chunks are kept (this device serves them to others); ``"thumbnails"`` (default): only
what :meth:`Vault.fetch` asks for, kept the same way; ``"on_demand"``: fetched chunks are not
kept at all (the written file is this device's only copy: the least disk). Chunks a device
added are always kept: it may be the only holder. Under ``"all"``, a started device fetches in
the background whenever the vault gains a blob or the policy is set (and :meth:`Vault.prefetch`
does it on demand, for example after a restart).

Authorship: a blob's id and its chunks' addresses are scoped to the person who added it
(:mod:`microsync.blobs.index`), so another member's announcement, copy or removal never
changes, hides, or purges it; :attr:`Vault.refused` counts what was ignored. Each person's
blobs count within a :class:`~microsync.blobs.Quota` on every device, and :meth:`Vault.add`
refuses (:class:`~microsync.errors.VaultQuotaExceeded`) an add beyond it.

Events (``group.events()``): ``"vault_added"`` and ``"vault_removed"``, with the
:class:`~microsync.blobs.BlobRef` as ``detail``, for changes that arrive after the vault was
first read in this process.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast

from microsync.blobs import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MIN_CHUNK_SIZE,
    VAULT_TYPE,
    BlobDecryptor,
    BlobEncryptor,
    BlobId,
    BlobRef,
    ChunkId,
    ChunkStore,
    Manifest,
    Purge,
    Quota,
    Refusal,
    VaultIndex,
    VaultKind,
    VaultOp,
    chunk_address,
    chunk_count,
    chunk_length,
    id_key,
    key_commitment,
)
from microsync.blobs.index import DEFAULT_QUOTA
from microsync.blobs.manifest import MAX_MIME, MAX_NAME, MAX_THUMBNAIL
from microsync.errors import (
    DecodeError,
    DecryptionError,
    NotAMember,
    PeerUnreachable,
    VaultQuotaExceeded,
)
from microsync.feed import GroupId, StoredEntry
from microsync.identity import DeviceId, PersonId
from microsync.node.events import VaultAdded, VaultRemoved

if TYPE_CHECKING:
    from microsync.group.replica import GroupStore
    from microsync.node import Group

__all__ = ["POLICIES", "Policy", "Progress", "Vault", "VaultUsage"]

Policy = Literal["all", "thumbnails", "on_demand"]
POLICIES: Final = ("all", "thumbnails", "on_demand")
Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``."""

WINDOW: Final = 4
"""Chunks asked of one peer at a time (4 MiB in flight per peer at the default chunk size:
above the bandwidth-delay product of a LAN or a relay path, and a small share of memory)."""


@dataclass(frozen=True, slots=True)
class VaultUsage:
    """How much of the group's vault this device holds."""

    blobs: int  # blobs in the vault
    total_bytes: int  # their plaintext size
    complete: int  # blobs whose every chunk is here
    chunks_held: int
    bytes_held: int  # sealed chunk bytes on this device's disk


@dataclass(slots=True, eq=False)
class _Download:
    """One fetch's chunks still wanted, and what each peer was asked or lacks."""

    decryptor: BlobDecryptor
    addresses: tuple[ChunkId, ...]  # where each chunk is stored and asked for
    wanted: dict[ChunkId, int]  # chunk address -> index
    sink: tuple[int, set[int]] | None  # (file descriptor, indices written) to decrypt into
    keep: bool  # keep the sealed chunks in the chunk store (the policy)
    asked: dict[DeviceId, set[ChunkId]] = field(default_factory=dict)
    lacking: dict[ChunkId, set[DeviceId]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0  # plaintext bytes received in this fetch
    progressed: bool = False
    checking: dict[ChunkId, asyncio.Future[int | None]] = field(default_factory=dict)
    error: BaseException | None = None  # a local failure (disk...) while writing a chunk


class Vault:
    """The vault of one group on this device (``group.vault``)."""

    def __init__(self, group: Group, *, quota: Quota = DEFAULT_QUOTA) -> None:
        """``quota``: what each person's blobs may hold (the same on every device: the
        default, unless a test builds a vault with a smaller one)."""
        self._group = group
        self._index = VaultIndex(quota=quota)
        self._seen: dict[DeviceId, int] = {}
        self._locked: dict[tuple[DeviceId, int], StoredEntry] = {}
        self._mine: set[BlobId] = set()
        self._downloads: list[_Download] = []
        self._id_keys: dict[BlobId, bytes] = {}  # blob -> the id key its manifest names
        self._addresses: dict[BlobId, tuple[ChunkId, ...]] = {}  # cache of blob -> addresses
        self._loaded = False  # the first refresh folds history quietly (no events)

    # ------------------------------------------------------------------ plumbing

    @property
    def _gid(self) -> GroupId:
        return self._group.id

    @property
    def _store(self) -> GroupStore:
        return self._group._replica.store

    @property
    def _chunks(self) -> ChunkStore:
        store = self._store
        if not isinstance(store, ChunkStore):
            raise TypeError("this profile's store keeps no vault chunks")
        return store

    def _ids_key(self, epoch: int, body: bytes | None) -> bytes | None:
        """The id key of ``epoch`` (the key whose ref the body names, when there are two)."""
        ref = None if body is None else body[:16]
        found = None
        for (number, _), key in sorted(self._group._replica.epoch_keys().items()):
            content = key.content
            if number != epoch or content is None:
                continue
            found = id_key(content.secret_bytes())
            if key.ref == ref:
                return found
        return found

    # ------------------------------------------------------------------ the fold

    def refresh(self) -> None:
        """Fold vault entries stored since the last call; purge what removals delete."""
        store = self._store
        fresh: list[StoredEntry] = []
        for device, status in store.feeds(self._gid).items():
            after = self._seen.get(device, 0)
            if status.head_seq <= after:
                continue
            for stored in store.entries(self._gid, device, after):
                self._seen[device] = stored.entry.header.seq
                if stored.entry.header.type == VAULT_TYPE:
                    fresh.append(stored)
        retry = list(self._locked.values())
        self._locked.clear()
        before = dict(self._index.refs)
        purges = [p for s in retry + fresh if (p := self._fold(s)) is not None]
        purges += self._reread_wanted()
        if purges:
            self._purge(purges)
        if before.keys() != self._index.refs.keys():
            for gone in [b for b in self._addresses if b not in self._index.refs]:
                del self._addresses[gone]  # removed or crowded out: not kept in memory
        if self._loaded:
            self._announce_changes(before)
        self._loaded = True

    def _reread_wanted(self) -> builtins.list[Purge]:
        """Fold again the entries of blobs that came within their person's quota (their
        manifests were not kept in memory while they were beyond it)."""
        purges = []
        for blob, (device, seq) in builtins.list(self._index.wanted.items()):
            stored = self._store.entry_at(self._gid, device, seq)
            if stored is not None and (purge := self._fold(stored)) is not None:
                purges.append(purge)
            self._index.wanted.pop(blob, None)  # read once: an unreadable one stays hidden
        return purges

    def _announce_changes(self, before: dict[BlobId, BlobRef]) -> None:
        """Events for blobs added or removed since ``before``; under ``"all"``, fetch."""
        after = self._index.refs
        for blob, ref in after.items():
            if blob not in before:
                self._group._emit(VaultAdded(person=ref.author, ref=ref))
        for blob, ref in before.items():
            if blob not in after:
                self._group._emit(VaultRemoved(person=ref.author, ref=ref))
        if set(after) - set(before) and self.policy == "all":
            self._prefetch_soon()

    def _prefetch_soon(self) -> None:
        net = self._group._device._net
        if net is not None:
            net.prefetch_soon(self._gid)

    def _fold(self, stored: StoredEntry) -> Purge | None:
        h = stored.entry.header
        replica = self._group._replica
        certificate = self._store.certificate(h.device)
        counts = replica.state.counts(h.device, h.seq)
        if not counts or certificate is None or stored.body is None:
            return None
        try:
            op = VaultOp.from_bytes(replica.decrypt(stored))
        except DecryptionError:
            self._locked[(h.device, h.seq)] = stored  # no key yet: retried on refresh
            return None
        except DecodeError:
            self._index.note(Refusal.UNREADABLE)  # a member wrote garbage: it never counts
            return None
        ids_key = None
        if op.kind is VaultKind.ADD:
            assert op.manifest is not None
            ids_key = self._ids_key(op.manifest.epoch, stored.body)
            if ids_key is None:
                return None
            blob = op.manifest.blob_id(ids_key, certificate.person)
            self._id_keys[blob] = ids_key
            if h.device == replica.me.device:
                self._mine.add(blob)  # added here: its chunks are kept whatever the policy
        return self._index.apply(
            entry=stored.entry.id,
            person=certificate.person,
            hlc=h.hlc,
            op=op,
            ids_key=ids_key,
            where=(h.device, h.seq),
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
            op = VaultOp.from_bytes(self._group._replica.decrypt(stored))
        except (DecryptionError, DecodeError):
            return purge
        ids_key = None if op.manifest is None else self._ids_key(op.manifest.epoch, stored.body)
        if op.manifest is None or ids_key is None:
            return purge
        chunks = op.manifest.addresses(ids_key, certificate.person)
        return Purge(purge.blob, chunks, purge.entries)

    # ------------------------------------------------------------------ reading

    def list(self) -> list[BlobRef]:
        """The blobs in the group's vault, newest first."""
        self.refresh()
        refs = self._index.refs.values()
        return sorted(refs, key=lambda r: (r.added_at, r.entry), reverse=True)

    def get(self, ref: BlobRef | bytes | str) -> BlobRef:
        """A blob by ref, id, attachment bytes or hex id prefix (``KeyError`` if unknown)."""
        self.refresh()
        refs = self._index.refs
        if isinstance(ref, BlobRef):
            ref = bytes(ref.id)
        if isinstance(ref, str):
            found = [r for b, r in refs.items() if bytes(b).hex().startswith(ref.lower())]
            if len(found) != 1 or not ref:
                raise KeyError(f"no single blob with an id starting {ref!r}")
            return found[0]
        blob = refs.get(BlobId(bytes(ref)))
        if blob is None:
            raise KeyError(f"no blob {bytes(ref)[:4].hex()} in this vault")
        return blob

    def chunks(self, ref: BlobRef | bytes | str) -> tuple[ChunkId, ...]:
        """The addresses a blob's chunks are stored and asked for at, in order (scoped to
        its adder: see :func:`~microsync.blobs.chunk_address`)."""
        blob = self.get(ref)
        found = self._addresses.get(blob.id)
        if found is None:
            manifest = self._index.manifests[blob.id]
            found = manifest.addresses(self._id_keys[blob.id], blob.author)
            self._addresses[blob.id] = found
        return found

    def missing(self, ref: BlobRef | bytes | str) -> builtins.list[ChunkId]:
        """Chunks of a blob this device does not hold (their addresses)."""
        chunks = self._chunks
        return [c for c in self.chunks(ref) if not chunks.has_chunk(self._gid, c)]

    @property
    def refused(self) -> Mapping[Refusal, int]:
        """How many vault operations this device ignored, by reason: removals by someone
        other than the adder, adds beyond their person's quota, entries that do not decode."""
        self.refresh()
        return dict(self._index.refused)

    def usage(self) -> VaultUsage:
        """Blobs, their size, and what this device holds of them."""
        refs = self.list()
        count, held = self._chunks.chunk_usage(self._gid)
        complete = sum(1 for r in refs if not self.missing(r))
        total = sum(r.size for r in refs)
        return VaultUsage(len(refs), total, complete, count, held)

    @property
    def _policy_key(self) -> str:
        return f"vault/{bytes(self._gid).hex()}/policy"

    @property
    def policy(self) -> Policy:
        """This device's storage policy for the group (``"thumbnails"`` unless set)."""
        value = self._store.get_meta(self._policy_key)
        text = value.decode() if value else "thumbnails"
        return cast(Policy, text) if text in POLICIES else "thumbnails"

    @policy.setter
    def policy(self, value: Policy) -> None:
        if value not in POLICIES:
            raise ValueError(f"policy is one of {POLICIES}")
        self._store.put_meta(self._policy_key, value.encode())
        if value == "all":
            self._prefetch_soon()

    # ------------------------------------------------------------------ writing

    async def add(
        self,
        source: str | os.PathLike[str] | bytes,
        name: str | None = None,
        mime: str | None = None,
        progress: Progress | None = None,
        *,
        thumbnail: bytes | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> BlobRef:
        """Encrypt a file (a path, streamed) or bytes into the vault and announce it to the
        group; returns its :class:`~microsync.blobs.BlobRef` (``bytes(ref)`` is the
        attachment a post carries). ``progress(done, total)`` after every chunk."""
        replica = self._group._replica
        if not replica.is_member:
            raise NotAMember("this device is not a member of the group")
        if isinstance(source, bytes):
            label, total = name or "blob", len(source)
            pieces = _slices(source, chunk_size)
        else:
            path = Path(source)
            label, total = name or path.name, path.stat().st_size
            pieces = _read(path, chunk_size)
        mime = mime or _guess_mime(label)
        _check_limits(label, mime, thumbnail, total, chunk_size)  # before any chunk is written
        person = self._group._person()
        self._check_quota(person, total, chunk_count(total, chunk_size), thumbnail)
        epoch = replica.ensure_writable(now=self._group._now())
        content = epoch.content
        assert content is not None
        ids_key = id_key(content.secret_bytes())
        encryptor = BlobEncryptor(replica.me.rng(32), ids_key, chunk_size)
        commitment = key_commitment(encryptor.key)
        stored: builtins.list[ChunkId] = []
        try:
            for piece in pieces:
                for sealed in encryptor.update(piece):
                    stored.append(chunk_address(ids_key, person, commitment, sealed.id))
                    self._chunks.put_chunk(self._gid, stored[-1], sealed.data)
                    if progress is not None:
                        progress(min(encryptor.size, (sealed.index + 1) * chunk_size), total)
                await asyncio.sleep(0)  # let sync and other tasks run between chunks
            last = encryptor.finish()
            stored.append(chunk_address(ids_key, person, commitment, last.id))
            self._chunks.put_chunk(self._gid, stored[-1], last.data)
            manifest = Manifest(
                key=encryptor.key,
                chunk_size=chunk_size,
                size=encryptor.size,
                epoch=epoch.number,
                ids=tuple(encryptor.ids),
                name=label,
                mime=mime,
                thumbnail=thumbnail,
            )
            ref = self._announce(manifest, manifest.blob_id(ids_key, person))
        except BaseException:
            self._chunks.delete_chunks(self._gid, stored)  # nothing names them
            raise
        if progress is not None:
            progress(encryptor.size, total)
        return ref

    def _check_quota(
        self, person: PersonId, size: int, chunks: int, thumbnail: bytes | None
    ) -> None:
        """:class:`VaultQuotaExceeded` unless such a blob fits ``person``'s quota now."""
        self.refresh()
        if not self._index.room(person, size=size, chunks=chunks, thumbnail=len(thumbnail or b"")):
            raise self._over_quota()

    def _over_quota(self) -> VaultQuotaExceeded:
        quota = self._index.quota
        return VaultQuotaExceeded(
            f"a person's blobs in a vault hold at most {quota.blobs} files, {quota.bytes} "
            f"bytes, {quota.chunks} chunks and {quota.thumbnail_bytes} thumbnail bytes"
        )

    def _announce(self, manifest: Manifest, blob: BlobId) -> BlobRef:
        replica = self._group._replica
        data = VaultOp(kind=VaultKind.ADD, manifest=manifest).to_bytes()
        VaultOp.from_bytes(data)  # every limit checked before anything is written
        replica.append_content(VAULT_TYPE, data, now=self._group._now())
        self.refresh()
        ref = self._index.refs.get(blob)
        if ref is None:  # blobs of this person synced during the add took the room
            raise self._over_quota()
        return ref

    async def remove(self, ref: BlobRef | bytes | str) -> None:
        """Delete a blob for everyone (only the person who added it may): every device that
        applies this purges the blob's chunks and manifest from its disk."""
        blob = self.get(ref)
        if blob.author != self._group._person():
            raise NotAMember("only the person who added a blob removes it")
        op = VaultOp(kind=VaultKind.REMOVE, blob=blob.id)
        self._group._replica.append_content(VAULT_TYPE, op.to_bytes(), now=self._group._now())
        self.refresh()

    # ------------------------------------------------------------------ fetching

    async def fetch(
        self,
        ref: BlobRef | bytes | str,
        dest: str | os.PathLike[str],
        progress: Progress | None = None,
        *,
        timeout: float = 30.0,
    ) -> Path:
        """Write the blob's plaintext to ``dest``: chunks this device lacks come from the
        connected peers that hold them, each verified and decrypted before it is written into
        ``.<dest name>.part``, which is renamed onto ``dest`` only once every chunk has opened.
        An interrupted fetch leaves the ``.part`` file; the next fetch to the same ``dest``
        checks what it holds (re-sealing each chunk and comparing its id) and gets only the
        rest. :class:`PeerUnreachable` when no connected peer holds a missing chunk for
        ``timeout`` seconds; :class:`DecryptionError` if a chunk held here does not open."""
        blob = self.get(ref)
        decryptor = self._decryptor(blob.id)
        addresses = self.chunks(blob)
        keep = self.policy != "on_demand" or blob.id in self._mine
        missing = set(self.missing(blob))
        target = Path(dest)
        temp = target.with_name(f".{target.name}.part")
        fd = os.open(temp, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lacking = {i for i, a in enumerate(addresses) if a in missing}
            written = _resume(decryptor, fd, lacking)
            wanted = {a: i for i, a in enumerate(addresses) if i in lacking - written}
            if wanted:
                job = _Download(decryptor, addresses, wanted, (fd, written), keep)
                await self._download(job, progress, timeout)
            self._write_held(decryptor, addresses, fd, written)
            os.ftruncate(fd, decryptor.size)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(temp, target)
        except DecryptionError:
            temp.unlink(missing_ok=True)  # a bad chunk here: never keep what it touched
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        if progress is not None:
            progress(blob.size, blob.size)
        return target

    def evict(self, ref: BlobRef | bytes | str) -> int:
        """Drop this device's copy of a blob's chunks (not of a blob it added: it may be the
        only holder); the blob stays in the vault and can be fetched again. Returns how many
        chunks were deleted."""
        blob = self.get(ref)
        if blob.id in self._mine:
            return 0
        return self._chunks.delete_chunks(self._gid, self.chunks(blob))

    async def prefetch(self, *, timeout: float = 30.0) -> int:
        """Under the ``"all"`` policy, fetch every chunk this device lacks into its store;
        returns how many blobs were completed (0 under the other policies). A blob no
        connected peer can serve is skipped (another member's unfetchable announcement
        never holds up the rest); :class:`PeerUnreachable` if some were and none completed."""
        if self.policy != "all":
            return 0
        done, skipped = 0, None
        for blob in self.list():
            try:
                missing = set(self.missing(blob))
            except KeyError:
                continue  # removed (or crowded out by its person's quota) meanwhile
            if missing:
                addresses = self.chunks(blob)
                wanted = {a: i for i, a in enumerate(addresses) if a in missing}
                job = _Download(self._decryptor(blob.id), addresses, wanted, None, True)
                try:
                    await self._download(job, None, timeout)
                except PeerUnreachable as error:
                    skipped = error
                    continue
                done += 1
        if skipped is not None and not done:
            raise skipped
        return done

    def _decryptor(self, blob: BlobId) -> BlobDecryptor:
        manifest = self._index.manifests[blob]
        ids_key = self._id_keys[blob]
        return BlobDecryptor(
            manifest.key, ids_key, manifest.chunk_size, manifest.size, manifest.ids
        )

    def _write_held(
        self,
        decryptor: BlobDecryptor,
        addresses: Sequence[ChunkId],
        fd: int,
        written: set[int],
    ) -> None:
        """Decrypt into ``fd`` every chunk not written yet, from the chunk store."""
        chunks = self._chunks
        for index, chunk in enumerate(addresses):
            if index in written:
                continue
            sealed = chunks.get_chunk(self._gid, chunk)
            try:
                if sealed is None:
                    raise DecryptionError()
                os.pwrite(fd, decryptor.open(index, sealed), index * decryptor.chunk_size)
            except DecryptionError:
                chunks.delete_chunks(self._gid, [chunk])  # fetched again next time
                raise

    async def _download(self, job: _Download, progress: Progress | None, timeout: float) -> None:
        decryptor = job.decryptor
        held = decryptor.size - sum(
            chunk_length(decryptor.size, decryptor.chunk_size, i) for i in job.wanted.values()
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._downloads.append(job)
        try:
            while job.wanted:
                if job.error is not None:
                    raise job.error
                if self._ask(job) == "nobody" or loop.time() > deadline:
                    left = len(job.wanted)
                    raise PeerUnreachable(
                        f"no connected peer holds the {left} missing chunks"
                        + ("" if self._group._device._net else " (this device is offline)")
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.wake.wait(), 0.2)
                job.wake.clear()
                if job.progressed:
                    job.progressed = False
                    deadline = loop.time() + timeout
                    if progress is not None:
                        progress(held + job.arrived, decryptor.size)
        finally:
            self._downloads.remove(job)
            if job.checking:  # never leave a worker writing into a file about to be closed
                await asyncio.wait(list(job.checking.values()))

    def _ask(self, job: _Download) -> str:
        """Ask each connected peer for up to ``WINDOW`` chunks no other peer was asked for.
        Returns ``"nobody"`` when the device is offline, or peers are connected and every one
        lacks every chunk left."""
        net = self._group._device._net
        if net is None:
            return "nobody"  # offline: no peer will ever answer (start() the device first)
        peers = net.chunk_peers(self._gid)
        for peer in [p for p in job.asked if p not in peers]:
            del job.asked[peer]  # gone: what it was asked is asked again elsewhere
        flying = {c for asked in job.asked.values() for c in asked} | set(job.checking)
        for peer, request in peers.items():
            mine = job.asked.setdefault(peer, set())
            room = WINDOW - len(mine)
            lacking = job.lacking
            pick = [c for c in job.wanted if c not in flying and peer not in lacking.get(c, ())][
                : max(0, room)
            ]
            if pick:
                request(pick)
                mine.update(pick)
                flying.update(pick)
        if (
            peers
            and not flying
            and all(set(peers) <= job.lacking.get(c, set()) for c in job.wanted)
        ):
            return "nobody"
        return "ok"

    def chunk_received(self, peer: DeviceId, chunk: ChunkId, data: bytes) -> None:
        """A chunk ``peer`` sent (the device's sync host calls this). It is checked, decrypted
        and written on a worker thread (BLAKE3 and the file writes release the GIL, so the
        event loop keeps receiving meanwhile); :meth:`_checked` takes the result."""
        if not self._downloads:
            return  # nothing asked for (a fetch that ended meanwhile)
        loop = asyncio.get_running_loop()
        for job in self._downloads:
            job.asked.get(peer, set()).discard(chunk)
            index = job.wanted.get(chunk)
            if index is None or chunk in job.checking:
                continue
            future = loop.run_in_executor(None, self._check_and_write, job, index, data)
            job.checking[chunk] = future
            future.add_done_callback(functools.partial(self._checked, job, chunk, peer))

    def _check_and_write(self, job: _Download, index: int, data: bytes) -> int | None:
        """(worker thread) Verify and open chunk ``index``, keep and write it: its plaintext
        length, or ``None`` if it is not the chunk the manifest names."""
        try:
            plain = job.decryptor.open(index, data)
        except DecryptionError:
            return None
        if job.keep:
            self._chunks.put_chunk(self._gid, job.addresses[index], data, durable=False)
        if job.sink is not None:
            os.pwrite(job.sink[0], plain, index * job.decryptor.chunk_size)
        return len(plain)

    def _checked(
        self, job: _Download, chunk: ChunkId, peer: DeviceId, future: asyncio.Future[int | None]
    ) -> None:
        del job.checking[chunk]
        job.wake.set()
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            job.error = job.error or error
            return
        length = future.result()
        if length is None:
            job.lacking.setdefault(chunk, set()).add(peer)  # a bad copy: ask elsewhere
            return
        index = job.wanted.pop(chunk)
        if job.sink is not None:
            job.sink[1].add(index)
        job.arrived += length
        job.progressed = True

    def chunks_missing(self, peer: DeviceId, chunks: Sequence[ChunkId]) -> None:
        """``peer`` does not hold these chunks."""
        for job in self._downloads:
            for chunk in chunks:
                job.asked.get(peer, set()).discard(chunk)
                if chunk in job.wanted:
                    job.lacking.setdefault(chunk, set()).add(peer)
            job.wake.set()

    def serve(self, peer: DeviceId, chunk: ChunkId) -> bytes | None:
        """A chunk for ``peer`` (a member the session checked), if this device holds it."""
        return self._chunks.get_chunk(self._gid, chunk)


def _resume(decryptor: BlobDecryptor, fd: int, missing: set[int]) -> set[int]:
    """Indices of missing chunks a partly written file already holds, correct."""
    if os.fstat(fd).st_size == 0:
        return set()
    found = set()
    for index in range(len(decryptor.ids)):
        if index in missing:
            length = chunk_length(decryptor.size, decryptor.chunk_size, index)
            plain = os.pread(fd, length, index * decryptor.chunk_size)
            if decryptor.matches(index, plain):
                found.add(index)
    return found


def _slices(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def _read(path: Path, size: int) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while piece := file.read(size):
            yield piece


def _check_limits(
    name: str, mime: str, thumbnail: bytes | None, size: int, chunk_size: int
) -> None:
    if len(name) > MAX_NAME or len(mime) > MAX_MIME:
        raise ValueError(f"a name or media type is at most {MAX_NAME} characters")
    if thumbnail is not None and len(thumbnail) > MAX_THUMBNAIL:
        raise ValueError(f"a thumbnail is at most {MAX_THUMBNAIL} bytes")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
    if chunk_count(size, chunk_size) > MAX_CHUNKS:
        raise ValueError(f"a file is at most {MAX_CHUNKS} chunks ({MAX_CHUNKS * chunk_size} bytes)")


def _guess_mime(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"
