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
:class:`~microsync.blobs.BlobRef` as ``detail``, for changes after the vault was first read in
this process (``events()`` reads it), or that came in the sync batch that first folded it.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from microsync.blobs import (
    DEFAULT_CHUNK_SIZE,
    VAULT_TYPE,
    BlobDecryptor,
    BlobEncryptor,
    BlobId,
    BlobRef,
    ChunkId,
    ChunkStore,
    Manifest,
    Quota,
    Refusal,
    VaultIndex,
    VaultKind,
    VaultOp,
    chunk_address,
    chunk_count,
    id_key,
    key_commitment,
)
from microsync.blobs.index import DEFAULT_QUOTA
from microsync.errors import (
    DecryptionError,
    NotAMember,
    PeerUnreachable,
    VaultQuotaExceeded,
)
from microsync.feed import GroupId, StoredEntry
from microsync.identity import DeviceId, PersonId
from microsync.node.chunk_relay import ChunkRelay, Located
from microsync.node.events import VaultAdded, VaultRemoved
from microsync.node.keeper_chunks import KeeperChunks
from microsync.node.moderation import is_admin
from microsync.node.vault_fetch import Download, Fetcher, resume, write_held
from microsync.node.vault_files import check_limits, guess_mime, read_pieces, slices
from microsync.node.vault_state import VaultFold, chunk_store

if TYPE_CHECKING:
    from microsync.group.replica import GroupStore
    from microsync.node import Group

__all__ = ["POLICIES", "Policy", "Progress", "Vault", "VaultUsage"]

Policy = Literal["all", "thumbnails", "on_demand"]
POLICIES: Final = ("all", "thumbnails", "on_demand")
Progress = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``."""


@dataclass(frozen=True, slots=True)
class VaultUsage:
    """How much of the group's vault this device holds."""

    blobs: int  # blobs in the vault
    total_bytes: int  # their plaintext size
    complete: int  # blobs whose every chunk is here
    chunks_held: int
    bytes_held: int  # sealed chunk bytes on this device's disk


class Vault:
    """The vault of one group on this device (``group.vault``)."""

    def __init__(self, group: Group, *, quota: Quota = DEFAULT_QUOTA) -> None:
        """``quota``: what each person's blobs may hold (the same on every device: the
        default, unless a test builds a vault with a smaller one)."""
        self._group = group
        self._state = VaultFold(group._replica, quota)
        self._keeper = KeeperChunks(group._replica, self._state, self._chunks)
        self._fetcher = Fetcher(group.id, lambda: self._chunks, self._net, self._keeper.fetch)
        keep = lambda: self.policy != "on_demand"  # noqa: E731
        self._relay = ChunkRelay(group.id, self._locate, keep, lambda: self._chunks, self._net)

    # ------------------------------------------------------------------ plumbing

    @property
    def _gid(self) -> GroupId:
        return self._group.id

    @property
    def _store(self) -> GroupStore:
        return self._group._replica.store

    @property
    def _chunks(self) -> ChunkStore:
        return chunk_store(self._store)

    def refresh(self) -> None:
        """Fold vault entries stored since the last call; purge what removals delete."""
        before = self._state.refresh()
        if before is not None:
            self._announce_changes(before)

    def received(self, accepted: Sequence[StoredEntry]) -> None:
        """Fold what a sync batch stored (``accepted``, with bodies, in feed order): only those
        entries, with no scan of the feeds (the first call folds the history: removals in it
        purge their chunks whether or not the vault is ever read)."""
        before = self._state.received(accepted)
        if before is not None:
            self._announce_changes(before)

    @property
    def _index(self) -> VaultIndex:
        return self._state._index

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

    def _net(self) -> Any:
        """The device's network part (``None`` while offline)."""
        return self._group._device._net

    def _prefetch_soon(self) -> None:
        net = self._net()
        if net is not None:
            net.prefetch_soon(self._gid)

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
        return self._state.addresses(self.get(ref).id)

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
            pieces = slices(source, chunk_size)
        else:
            path = Path(source)
            label, total = name or path.name, path.stat().st_size
            pieces = read_pieces(path, chunk_size)
        mime = mime or guess_mime(label)
        check_limits(label, mime, thumbnail, total, chunk_size)  # before any chunk is written
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
        """Delete a blob for everyone (the person who added it, or an admin: moderation): every
        device that applies this purges the blob's chunks and manifest from its disk."""
        blob = self.get(ref)
        me = self._group._person()
        if blob.author != me and not is_admin(self._group._replica, me):
            raise NotAMember("only the person who added a blob, or an admin, removes it")
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
        keep = self.policy != "on_demand" or blob.id in self._state._mine
        missing = set(self.missing(blob))
        target = Path(dest)
        temp = target.with_name(f".{target.name}.part")
        fd = os.open(temp, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            lacking = {i for i, a in enumerate(addresses) if a in missing}
            written = resume(decryptor, fd, lacking)
            wanted = {a: i for i, a in enumerate(addresses) if i in lacking - written}
            if wanted:
                job = Download(decryptor, addresses, wanted, (fd, written), keep, blob.id)
                await self._fetcher.download(job, progress, timeout)
            write_held(self._chunks, self._gid, decryptor, addresses, fd, written)
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
        if blob.id in self._state._mine:
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
                job = Download(self._decryptor(blob.id), addresses, wanted, None, True, blob.id)
                try:
                    await self._fetcher.download(job, None, timeout)
                except PeerUnreachable as error:
                    skipped = error
                    continue
                done += 1
        if skipped is not None and not done:
            raise skipped
        return done

    def _decryptor(self, blob: BlobId) -> BlobDecryptor:
        manifest = self._index.manifests[blob]
        ids_key = self._state._id_keys[blob]
        return BlobDecryptor(
            manifest.key, ids_key, manifest.chunk_size, manifest.size, manifest.ids
        )

    def chunk_received(self, peer: DeviceId, chunk: ChunkId, data: bytes) -> None:
        """A chunk ``peer`` sent (the device's sync host calls this): checked, decrypted and
        written by the fetch that asked for it (:meth:`Fetcher.chunk_received`)."""
        self._fetcher.chunk_received(peer, chunk, data)
        self._relay.chunk_received(peer, chunk, data)

    def chunks_missing(self, peer: DeviceId, chunks: Sequence[ChunkId]) -> None:
        """``peer`` does not hold these chunks."""
        self._fetcher.chunks_missing(peer, chunks)
        self._relay.chunks_missing(peer, chunks)

    def relay(self, peer: DeviceId, chunk: ChunkId) -> bool:
        """Get a chunk this device lacks from its other peers for ``peer``
        (:class:`~microsync.node.chunk_relay.ChunkRelay`): ``True`` if it will answer later."""
        return self._relay.relay(peer, chunk)

    # ------------------------------------------------------------------ keepers

    @property
    def keeper_originals(self) -> int:
        """Files up to this many bytes go whole to the group's keepers (an admin setting;
        thumbnails always go, in the manifests)."""
        return self._keeper.originals

    async def set_keeper_originals(self, size: int) -> None:
        """Set :attr:`keeper_originals` for the whole group (admins only; 0: none)."""
        self._keeper.set_originals(size, now=self._group._now())

    def at_keeper(self, ref: BlobRef | bytes | str, url: str) -> int:
        """How many of a blob's chunks this device pushed to the keeper at ``url``."""
        return self._keeper.acknowledged(self.get(ref).id, url)

    async def keeper_push(self, url: str) -> int:
        """Push to ``url`` what the policy wants of the blobs added here, and purge removed
        ones (the device's keeper link calls this on every pass); chunks acknowledged."""
        self.refresh()
        return await self._keeper.push(url)

    def _locate(self, address: ChunkId) -> Located | None:
        self.refresh()
        found = self._state.locate(address)
        return None if found is None else (*found, self._decryptor(found[0]))

    def serve(self, peer: DeviceId, chunk: ChunkId) -> bytes | None:
        """A chunk for ``peer`` (a member the session checked), if this device holds it."""
        return self._chunks.get_chunk(self._gid, chunk)
