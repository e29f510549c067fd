"""Vault chunks at the group's keepers (``docs/vault.md``, "Chunks at a keeper").

Theory of operation
-------------------
Each blob has a mailbox of its own at a keeper, derived from the blob's key (which only a
member who read its manifest holds)::

    secret  = KDF(VAULT_KEEPER_MAILBOX, blob key)         mailbox = Mailbox.derive(secret)

Its items are the blob's sealed chunks, each named by its chunk address, so the keeper sees
item ids keyed by the mailbox's naming key: no blob id, chunk id or address. One mailbox per
blob lets a fetch pull exactly that blob's items (a keeper reads by cursor, not by id) and a
removal purge them in one delete; no other blob's or epoch's mailbox is proved on the same
connection.

**Push** (:meth:`KeeperChunks.push`, on every pass of the device's keeper link): a blob of at
most the group's ``keeper_originals`` bytes (an admin setting: the ``SETTINGS`` op's ``"vo"``;
thumbnails travel anyway, inside the manifests, which are entries) is pushed in order by the
device that added it, and by every device that holds all of its chunks (it fetched them), so
a file fetched from its adder while the adder could not reach the keeper still gets there. A
device that is not the adder first asks whether the keeper already holds the whole blob: a
fetch from that keeper that saw a cursor at or past the blob's chunk count says so (the
keeper numbers a mailbox's items 1, 2, ... and never reuses a number), else the mailbox's
newest item is read (one chunk) and its cursor tells; only a blob the keeper lacks chunks of
is pushed (chunks it holds are answered ``duplicate``, never stored twice). How many chunks
each keeper acknowledged is kept in the profile, so an interrupted upload resumes at the first
chunk not acknowledged; the mailbox secret and the addresses are kept with it, so that once
the blob is removed (which purges its key here) the device still purges its items at the
keeper, on that pass or a later one, and then forgets them. (A member can squat a chunk's
name with junk, or inflate the count: then the blob is not served from the keeper, and
fetches go to peers; every fetch checks every chunk.)

**Fetch** (:meth:`KeeperChunks.fetch`, the fetch's :class:`~microsync.node.vault_fetch.
KeeperSource`): when no connected peer can serve, each keeper in turn is asked for the blob's
mailbox, from the cursor before which this device keeps every chunk (a fetch that keeps its
chunks saves it as it goes), else from the start, and every item naming a wanted chunk goes
through the fetch's own check (id, length, decryption): a keeper is as hostile as any peer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from websockets.exceptions import WebSocketException

from microsync import encoding
from microsync.blobs import BlobId, ChunkId, ChunkStore
from microsync.crypto import labels
from microsync.crypto.hashing import derive_key
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import DecodeError, MicrosyncError, NotAMember
from microsync.group.mailbox import Mailbox
from microsync.group.ops import Role
from microsync.group.settings import MAX_KEEPER_ORIGINALS, SettingsChange
from microsync.net.keeper_client import KeeperClient, Record

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica, GroupStore
    from microsync.node.vault_fetch import Download, Fetcher
    from microsync.node.vault_state import VaultFold

__all__ = ["KeeperChunks", "blob_mailbox"]

log = logging.getLogger("microsync.node")

KEEPER_ERRORS: Final = (OSError, ConnectionError, MicrosyncError, TimeoutError, WebSocketException)
"""What a keeper connection may fail with: logged, and tried again on the next pass."""
BLOBS_PER_CONNECTION: Final = 32
"""Blob mailboxes proved on one connection before another is opened (a keeper allows 64)."""
SAVE_EVERY: Final = 8
"""Chunks taken from a keeper between two saves of the pull cursor."""
CONNECT_TIMEOUT: Final = 5.0


def blob_mailbox(key: bytes) -> Mailbox:
    """The keeper mailbox of the blob whose key is ``key``."""
    return Mailbox.derive(derive_key(labels.VAULT_KEEPER_MAILBOX, key))


class KeeperChunks:
    """One group's vault chunks at its keepers, on this device (module doc)."""

    def __init__(self, replica: GroupReplica, fold: VaultFold, chunks: ChunkStore) -> None:
        self._replica, self._fold, self._chunks = replica, fold, chunks
        self._settled: dict[str, set[BlobId]] = {}  # url -> blobs it acknowledged in full

    def __repr__(self) -> str:
        return f"KeeperChunks({len(self._replica.state.keepers)} keepers)"

    @property
    def _store(self) -> GroupStore:
        return self._replica.store

    def _key(self, url: str, *rest: str) -> str:
        return "/".join(["vault/keeper", bytes(self._replica.id).hex(), url, *rest])

    # ------------------------------------------------------------------ the policy

    @property
    def originals(self) -> int:
        """Vault files up to this many bytes are pushed whole to the group's keepers."""
        return self._replica.state.keeper_originals

    def set_originals(self, size: int, *, now: int) -> None:
        """Append the ``SETTINGS`` op that sets :attr:`originals` (admins only)."""
        if not 0 <= size <= MAX_KEEPER_ORIGINALS:
            raise ValueError(f"a size of 0 to {MAX_KEEPER_ORIGINALS} bytes")
        state, me = self._replica.state, self._replica.me.device
        person = state.person_of(me)
        member = None if person is None else state.members.get(person)
        if member is None or member.role is not Role.ADMIN:
            raise NotAMember("only admins set what the group's keepers hold")
        self._replica.change_settings(SettingsChange(keeper_originals=size), now=now)

    # ------------------------------------------------------------------ pushing

    def acknowledged(self, blob: BlobId, url: str) -> int:
        """How many of ``blob``'s chunks the keeper at ``url`` acknowledged (in order)."""
        value = self._store.get_meta(self._key(url, bytes(blob).hex(), "done"))
        return int.from_bytes(value, "big") if value else 0

    def _wanted(self, url: str) -> Iterator[tuple[BlobId, tuple[ChunkId, ...], int]]:
        """Blobs within the policy, added here or held whole here, that the keeper may lack
        chunks of (the adder's first, then the others, each in blob order)."""
        refs, mine, gid = self._fold._index.refs, self._fold._mine, self._replica.id
        settled = self._settled.setdefault(url, set())
        for blob in [*sorted(mine - settled), *sorted(set(refs) - mine - settled)]:
            ref = refs.get(blob)
            if ref is None or ref.size > self.originals:
                continue
            addresses = self._fold.addresses(blob)
            done = self.acknowledged(blob, url)
            if done >= len(addresses):
                settled.add(blob)  # (memory only: spares the queries on every pass)
                continue
            if blob in mine or all(self._chunks.has_chunk(gid, a) for a in addresses):
                yield blob, addresses, done

    def _acknowledge_all(self, blob: BlobId, url: str, count: int) -> None:
        self._store.put_meta(self._key(url, bytes(blob).hex(), "done"), count.to_bytes(4, "big"))

    async def push(self, url: str) -> int:
        """Push what the policy wants at ``url``, purge what was removed since; how many
        chunks were acknowledged. A failure is logged and left for the next pass (what was
        acknowledged stays recorded)."""
        todo = [(b, a, d) for b, a, d in self._wanted(url)]
        gone = [b for b in self._pushed(url) if b not in self._fold._index.refs]
        count = 0
        try:
            for start in range(0, len(gone), BLOBS_PER_CONNECTION):
                await self._purge(url, gone[start : start + BLOBS_PER_CONNECTION])
            for start in range(0, len(todo), BLOBS_PER_CONNECTION):
                count += await self._push_some(url, todo[start : start + BLOBS_PER_CONNECTION])
        except KEEPER_ERRORS as exc:
            log.info("vault chunks at %s: %s", url, type(exc).__name__)
        return count

    async def _push_some(
        self, url: str, todo: list[tuple[BlobId, tuple[ChunkId, ...], int]]
    ) -> int:
        count = 0
        async with await KeeperClient.connect(url, timeout=CONNECT_TIMEOUT) as keeper:
            for blob, addresses, done in todo:
                count += await self._push_blob(keeper, url, blob, addresses, done)
        return count

    async def _push_blob(
        self,
        keeper: KeeperClient,
        url: str,
        blob: BlobId,
        addresses: tuple[ChunkId, ...],
        done: int,
    ) -> int:
        """Push ``blob``'s chunks from ``done`` on, recording each acknowledgement (another
        member's blob only if the keeper lacks some of it)."""
        secret = self._remember(url, blob, addresses)
        mailbox = Mailbox.derive(secret)
        theirs = blob not in self._fold._mine and done == 0
        if theirs and await _holds_all(keeper, mailbox, len(addresses)):
            self._acknowledge_all(blob, url, len(addresses))
            return 0
        key = self._key(url, bytes(blob).hex(), "done")
        acked = done

        def stored(record: Record, cursor: int) -> None:
            nonlocal acked
            acked += 1
            self._store.put_meta(key, acked.to_bytes(4, "big"))

        await keeper.push(mailbox, self._records(addresses[done:]), on_stored=stored)
        return acked - done

    def _records(self, addresses: tuple[ChunkId, ...]) -> Iterator[Record]:
        """The sealed chunks at ``addresses``, read one at a time (stops at one not held)."""
        gid = self._replica.id
        for address in addresses:
            data = self._chunks.get_chunk(gid, address)
            if data is None:
                return
            yield Record(name=bytes(address), data=data)

    def _remember(self, url: str, blob: BlobId, addresses: tuple[ChunkId, ...]) -> bytes:
        """Record, before the first chunk goes, what a later purge needs; the secret."""
        key = self._key(url, bytes(blob).hex())
        manifest = self._fold._index.manifests[blob]
        secret = derive_key(labels.VAULT_KEEPER_MAILBOX, manifest.key)
        if not self._store.get_meta(key):
            self._store.put_meta(key, encoding.encode([secret, b"".join(addresses)]))
            pushed = self._pushed(url)
            self._save_pushed(url, [*pushed, blob])
        return secret

    def _pushed(self, url: str) -> list[BlobId]:
        value = self._store.get_meta(self._key(url, "pushed"))
        if not value:
            return []
        try:
            return [
                BlobId(expect_bytes(b, "blob", 32))
                for b in expect_list(encoding.decode(value, max_size=len(value)), "pushed")
            ]
        except DecodeError:
            return []

    def _save_pushed(self, url: str, blobs: list[BlobId]) -> None:
        self._store.put_meta(self._key(url, "pushed"), encoding.encode([bytes(b) for b in blobs]))

    async def _purge(self, url: str, blobs: list[BlobId]) -> None:
        """Delete removed blobs' items at ``url``, then forget what was kept for them."""
        async with await KeeperClient.connect(url, timeout=CONNECT_TIMEOUT) as keeper:
            for blob in blobs:
                key = self._key(url, bytes(blob).hex())
                value = self._store.get_meta(key)
                if value:
                    secret, joined = expect_list(
                        encoding.decode(value, max_size=len(value)), "pushed blob"
                    )
                    names = expect_bytes(joined, "addresses", max_size=32 * 4096)
                    mailbox = Mailbox.derive(expect_bytes(secret, "secret", 32))
                    await keeper.delete(
                        mailbox, [names[i : i + 32] for i in range(0, len(names), 32)]
                    )
                self._store.put_meta(key, b"")
                self._store.put_meta(key + "/done", b"")
                self._save_pushed(url, [b for b in self._pushed(url) if b != blob])

    # ------------------------------------------------------------------ fetching

    async def fetch(self, job: Download, fetcher: Fetcher) -> None:
        """Hand ``fetcher`` every wanted chunk of ``job`` a keeper of the group holds."""
        if job.blob is None or job.blob not in self._fold._index.manifests:
            return
        mailbox = blob_mailbox(self._fold._index.manifests[job.blob].key)
        for url in self._replica.state.keepers:
            if not job.wanted:
                return
            try:
                async with await KeeperClient.connect(url, timeout=CONNECT_TIMEOUT) as keeper:
                    newest = await self._pull(keeper, mailbox, job, fetcher)
                count = len(self._fold.addresses(job.blob))
                if newest >= count and self.acknowledged(job.blob, url) < count:
                    self._acknowledge_all(job.blob, url, count)  # it holds them: none to push
            except KEEPER_ERRORS as exc:
                log.info("vault chunks from %s: %s", url, type(exc).__name__)

    async def _pull(
        self, keeper: KeeperClient, mailbox: Mailbox, job: Download, fetcher: Fetcher
    ) -> int:
        """Take ``job``'s wanted chunks from ``mailbox``; the highest cursor seen there."""
        newest = 0
        cursor_key = f"vault/keeper-cursor/{keeper.keeper_id.hex()}/{mailbox.id.hex()}"
        saved = self._store.get_meta(cursor_key)
        start = int.from_bytes(saved, "big") if saved and job.keep else 0
        for after in dict.fromkeys((start, 0)):  # a stale cursor (chunks evicted): again
            names = {mailbox.item_id(bytes(a)): a for a in job.wanted}
            taken: set[ChunkId] = set()  # every one must be held before the cursor moves
            items = keeper.pull(mailbox, after=after)
            try:
                async for item in items:
                    newest = max(newest, item.cursor)
                    address = names.get(item.item)
                    if address is not None and address in job.wanted:
                        await fetcher.take(job, address, item.data)
                        taken.add(address)
                    if item.cursor % SAVE_EVERY == 0 or not job.wanted:
                        await fetcher.settled(job)
                        if job.keep and not taken & job.wanted.keys():
                            self._store.put_meta(cursor_key, item.cursor.to_bytes(8, "big"))
                    if not job.wanted:
                        return newest
            finally:
                await items.aclose()
        return newest


async def _holds_all(keeper: KeeperClient, mailbox: Mailbox, count: int) -> bool:
    """Whether ``mailbox`` has held at least ``count`` items: its newest item's cursor (read,
    one item) is how many it was ever given."""
    async with contextlib.aclosing(keeper.pull_newest(mailbox, limit=1)) as items:
        async for item in items:
            return item.cursor >= count
    return False
