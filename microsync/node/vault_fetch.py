"""Fetching a vault blob's chunks from the connected peers (``docs/vault.md``).

A :class:`Download` is one fetch's chunks still wanted. :meth:`Fetcher.download` asks each
connected peer sharing the group for up to :data:`WINDOW` chunks no other peer was asked for,
takes each chunk a peer sends (:meth:`Fetcher.chunk_received`), checks it against its keyed id
and length and decrypts it on a worker thread BEFORE it is kept or written, and asks
elsewhere for what a peer lacks or sent wrong. It gives up with :class:`PeerUnreachable` when
no connected peer holds a missing chunk for ``timeout`` seconds without progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from microsync.blobs import BlobDecryptor, BlobId, ChunkId, ChunkStore, chunk_length
from microsync.errors import DecryptionError, PeerUnreachable
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.protocol.messages import MAX_CHUNK_HOPS

__all__ = [
    "KEEPER",
    "WINDOW",
    "ChunkPeers",
    "Download",
    "Fetcher",
    "KeeperSource",
    "resume",
    "write_held",
]

Progress = Callable[[int, int], None]

WINDOW: Final = 4
"""Chunks asked of one peer at a time (4 MiB in flight per peer at the default chunk size:
above the bandwidth-delay product of a LAN or a relay path, and a small share of memory)."""


@dataclass(slots=True, eq=False)
class Download:
    """One fetch's chunks still wanted, and what each peer was asked or lacks."""

    decryptor: BlobDecryptor
    addresses: tuple[ChunkId, ...]  # where each chunk is stored and asked for
    wanted: dict[ChunkId, int]  # chunk address -> index
    sink: tuple[int, set[int]] | None  # (file descriptor, indices written) to decrypt into
    keep: bool  # keep the sealed chunks in the chunk store (the policy)
    blob: BlobId | None = None  # the blob (a keeper holds its chunks under it)
    asked: dict[DeviceId, set[ChunkId]] = field(default_factory=dict)
    lacking: dict[ChunkId, set[DeviceId]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: int = 0  # plaintext bytes received in this fetch
    progressed: bool = False
    checking: dict[ChunkId, asyncio.Future[int | None]] = field(default_factory=dict)
    error: BaseException | None = None  # a local failure (disk...) while writing a chunk
    on_progress: Callable[[int], None] | None = None  # bytes arrived so far, after each chunk


KEEPER: Final = DeviceId(bytes(32))
"""The group's keepers, as the source of a chunk (no device has this id)."""


class KeeperSource(Protocol):
    """Where a fetch turns when no connected peer can serve it: the group's keepers."""

    async def __call__(self, job: Download, fetcher: Fetcher) -> None:
        """Hand every wanted chunk a keeper holds to ``fetcher.take`` (errors: none)."""
        ...


class ChunkPeers(Protocol):
    """The device's network part, as a fetch sees it."""

    def chunk_peers(
        self, group: GroupId
    ) -> Mapping[DeviceId, Callable[[Sequence[bytes], int], None]]:
        """Live connections sharing ``group``: peer device -> ``request(chunk ids, hops)``
        (``hops``: how many more devices may pass the request on)."""
        ...


class Fetcher:
    """The fetches of one group's vault in progress (module doc). ``chunks``: the profile's
    chunk store; ``net``: the device's network part, ``None`` while offline."""

    def __init__(
        self,
        group: GroupId,
        chunks: Callable[[], ChunkStore],
        net: Callable[[], ChunkPeers | None],
        keepers: KeeperSource | None = None,
    ) -> None:
        self._gid = group
        self._chunks = chunks
        self._net = net
        self._keepers = keepers
        self._downloads: list[Download] = []

    def __repr__(self) -> str:
        return f"Fetcher({len(self._downloads)} downloads)"

    async def download(self, job: Download, progress: Progress | None, timeout: float) -> None:
        decryptor = job.decryptor
        held = decryptor.size - sum(
            chunk_length(decryptor.size, decryptor.chunk_size, i) for i in job.wanted.values()
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if progress is not None:
            job.on_progress = lambda arrived: progress(held + arrived, decryptor.size)
        self._downloads.append(job)
        keepers = self._keepers
        try:
            while job.wanted:
                if job.error is not None:
                    raise job.error
                asked = self._ask(job)
                if asked != "ok" and keepers is not None:  # no peer can serve: the keepers
                    source, keepers = keepers, None  # once per fetch
                    await source(job, self)
                    await self.settled(job)
                    deadline = loop.time() + timeout
                    continue
                if asked == "nobody" or loop.time() > deadline:
                    left = len(job.wanted)
                    raise PeerUnreachable(
                        f"no connected peer holds the {left} missing chunks"
                        + ("" if self._net() else " (this device is offline)")
                        + ("" if self._keepers is None else ", nor does a keeper")
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(job.wake.wait(), 0.2)
                job.wake.clear()
                if job.progressed:
                    job.progressed = False
                    deadline = loop.time() + timeout
        finally:
            self._downloads.remove(job)
            if job.checking:  # never leave a worker writing into a file about to be closed
                await asyncio.wait(list(job.checking.values()))

    def _ask(self, job: Download) -> str:
        """Ask each connected peer for up to ``WINDOW`` chunks no other peer was asked for.
        Returns ``"nobody"`` when the device is offline, or peers are connected and every one
        lacks every chunk left; ``"alone"`` when no peer is connected (one may connect)."""
        net = self._net()
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
                request(pick, MAX_CHUNK_HOPS)  # a peer that lacks one may ask its own peers
                mine.update(pick)
                flying.update(pick)
        if (
            peers
            and not flying
            and all(set(peers) <= job.lacking.get(c, set()) for c in job.wanted)
        ):
            return "nobody"
        return "ok" if peers else "alone"

    async def take(self, job: Download, chunk: ChunkId, data: bytes) -> None:
        """A chunk from a keeper: checked and written like a peer's, at most :data:`WINDOW`
        being checked at once (so a fast keeper never piles chunks up in memory)."""
        while len(job.checking) >= WINDOW:
            await asyncio.wait(list(job.checking.values()), return_when=asyncio.FIRST_COMPLETED)
        self.chunk_received(KEEPER, chunk, data)

    async def settled(self, job: Download) -> None:
        """Wait for the chunks being checked (their results are in ``job`` after)."""
        if job.checking:
            await asyncio.wait(list(job.checking.values()))

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

    def _check_and_write(self, job: Download, index: int, data: bytes) -> int | None:
        """(worker thread) Verify and open chunk ``index``, keep and write it: its plaintext
        length, or ``None`` if it is not the chunk the manifest names."""
        try:
            plain = job.decryptor.open(index, data)
        except DecryptionError:
            return None
        if job.keep:
            self._chunks().put_chunk(self._gid, job.addresses[index], data, durable=False)
        if job.sink is not None:
            os.pwrite(job.sink[0], plain, index * job.decryptor.chunk_size)
        return len(plain)

    def _checked(
        self, job: Download, chunk: ChunkId, peer: DeviceId, future: asyncio.Future[int | None]
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
        if job.on_progress is not None:
            job.on_progress(job.arrived)

    def chunks_missing(self, peer: DeviceId, chunks: Sequence[ChunkId]) -> None:
        """``peer`` does not hold these chunks."""
        for job in self._downloads:
            for chunk in chunks:
                job.asked.get(peer, set()).discard(chunk)
                if chunk in job.wanted:
                    job.lacking.setdefault(chunk, set()).add(peer)
            job.wake.set()


def write_held(
    chunks: ChunkStore,
    group: GroupId,
    decryptor: BlobDecryptor,
    addresses: Sequence[ChunkId],
    fd: int,
    written: set[int],
) -> None:
    """Decrypt into ``fd`` every chunk not written yet, from the chunk store (a chunk that
    does not open is deleted, so it is fetched again next time)."""
    for index, chunk in enumerate(addresses):
        if index in written:
            continue
        sealed = chunks.get_chunk(group, chunk)
        try:
            if sealed is None:
                raise DecryptionError()
            os.pwrite(fd, decryptor.open(index, sealed), index * decryptor.chunk_size)
        except DecryptionError:
            chunks.delete_chunks(group, [chunk])  # fetched again next time
            raise


def resume(decryptor: BlobDecryptor, fd: int, missing: set[int]) -> set[int]:
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
