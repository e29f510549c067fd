"""Chunks a device gets from its own peers for a peer that asked (``docs/vault.md``).

Theory of operation
-------------------
In the usual star layout everyone joined through one inviter and is connected to it alone, so
the inviter is asked for chunks it may never have fetched. A fetch therefore asks with one hop
to spare (:data:`~microsync.protocol.messages.MAX_CHUNK_HOPS`); a device asked for a chunk it
lacks takes the request on (:meth:`ChunkRelay.relay`) and asks its own connected peers of the
group (never the asker) with no hop left, at most :data:`FANOUT` at a time, trying first the
peer that last served a chunk of the same blob. The first copy that passes the chunk's keyed id
and length check (:meth:`~microsync.blobs.BlobDecryptor.verify`) answers every peer waiting
for it; a copy that fails is the sender's failure and another peer is asked. When every peer
lacks it, or after :data:`RELAY_TIMEOUT` seconds, the waiters are told it is missing.

Bounds, all checked before anything is asked: a device relays only chunks of a blob its own
vault knows (else it could check nothing), at most :data:`MAX_RELAYED` chunks at once and
:data:`PER_PEER` for one asker; concurrent asks for one chunk share one relay. What arrives
is kept in this device's chunk store unless its policy is ``"on_demand"``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from microsync.blobs import BlobDecryptor, BlobId, ChunkId, ChunkStore
from microsync.errors import LocalProtocolError
from microsync.feed import GroupId
from microsync.identity import DeviceId

__all__ = ["FANOUT", "MAX_RELAYED", "PER_PEER", "RELAY_TIMEOUT", "ChunkRelay", "RelayNet"]

FANOUT: Final = 2
"""Peers asked for one relayed chunk at a time (more would fetch extra copies of it)."""
MAX_RELAYED: Final = 64
"""Chunks one group's relay gets for others at once."""
PER_PEER: Final = 16
"""Chunks one asker may have this device relay at once (a fetch asks 4 at a time)."""
RELAY_TIMEOUT: Final = 10.0
"""Seconds a relayed chunk may take before its waiters are told it is missing."""

Request = Callable[[Sequence[bytes], int], None]
Located = tuple[BlobId, int, BlobDecryptor]
"""A chunk's blob, its index in it, and the blob's decryptor (which checks it)."""


class RelayNet(Protocol):
    """The device's network part, as a relay sees it."""

    def chunk_peers(self, group: GroupId) -> Mapping[DeviceId, Request]:
        """Live connections sharing ``group``: peer device -> ``request(chunk ids, hops)``."""
        ...

    def chunk_answer(
        self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes | None
    ) -> None:
        """Answer ``peer``'s relayed ask for ``chunk``: its bytes, or missing (``None``)."""
        ...


@dataclass(slots=True, eq=False)
class _Relay:
    """One chunk being got for others."""

    blob: BlobId
    index: int
    decryptor: BlobDecryptor
    waiters: set[DeviceId]
    tried: set[DeviceId] = field(default_factory=set)  # asked (or unaskable) upstream peers
    flying: set[DeviceId] = field(default_factory=set)  # asked and not answered yet
    timer: asyncio.TimerHandle | None = None


class ChunkRelay:
    """The chunks one group's vault gets for its peers (module doc). ``locate``: a chunk's
    blob, index and decryptor, or ``None`` if this device knows no blob with it; ``keep``:
    whether the policy keeps fetched chunks; ``net``: ``None`` while offline."""

    def __init__(
        self,
        group: GroupId,
        locate: Callable[[ChunkId], Located | None],
        keep: Callable[[], bool],
        chunks: Callable[[], ChunkStore],
        net: Callable[[], RelayNet | None],
    ) -> None:
        self._gid = group
        self._locate, self._keep, self._chunks, self._net = locate, keep, chunks, net
        self._relays: dict[ChunkId, _Relay] = {}
        self._per_peer: Counter[DeviceId] = Counter()
        self._source: dict[BlobId, DeviceId] = {}  # who last served a chunk of each blob

    def __repr__(self) -> str:
        return f"ChunkRelay({len(self._relays)} chunks in flight)"

    @property
    def in_flight(self) -> int:
        """Chunks being got for others now."""
        return len(self._relays)

    def relay(self, asker: DeviceId, chunk: ChunkId) -> bool:
        """Take on ``asker``'s ask for a chunk this device lacks: ``True`` if it will be
        answered later (:meth:`RelayNet.chunk_answer`, exactly once), ``False`` to answer
        missing now (over a bound, a chunk of no blob known here, no other peer to ask)."""
        if self._per_peer[asker] >= PER_PEER:
            return False
        found = self._relays.get(chunk)
        if found is not None:  # another peer asked for it first: one relay serves both
            if asker not in found.waiters:
                found.waiters.add(asker)
                self._per_peer[asker] += 1
            return True
        located = self._locate(chunk)
        if located is None or len(self._relays) >= MAX_RELAYED:
            return False
        relay = _Relay(*located, waiters={asker})
        self._relays[chunk] = relay
        self._per_peer[asker] += 1
        if not self._ask(chunk, relay):
            self._finish(chunk, None, answer=False)
            return False
        relay.timer = asyncio.get_running_loop().call_later(
            RELAY_TIMEOUT, self._finish, chunk, None
        )
        return True

    def _ask(self, chunk: ChunkId, relay: _Relay) -> bool:
        """Ask more peers, up to :data:`FANOUT` in flight; ``False`` if none is left."""
        net = self._net()
        peers = {} if net is None else net.chunk_peers(self._gid)
        relay.flying &= set(peers)  # a peer gone will not answer
        for peer in self._order(peers, relay):
            if len(relay.flying) >= FANOUT:
                break
            relay.tried.add(peer)
            try:
                peers[peer]([chunk], 0)
            except LocalProtocolError:  # its session's window is full: try another
                continue
            relay.flying.add(peer)
        return bool(relay.flying)

    def _order(self, peers: Iterable[DeviceId], relay: _Relay) -> list[DeviceId]:
        """Peers not asked yet, the one that last served this blob first."""
        left = [p for p in peers if p not in relay.tried and p not in relay.waiters]
        source = self._source.get(relay.blob)
        return sorted(left, key=lambda p: p != source)

    def chunk_received(self, peer: DeviceId, chunk: ChunkId, data: bytes) -> None:
        """A chunk ``peer`` sent: checked, then handed to every waiter (or another peer is
        asked if it is not the chunk the manifest names)."""
        relay = self._relays.get(chunk)
        if relay is None or peer not in relay.flying:
            return
        relay.flying.discard(peer)
        if not relay.decryptor.verify(relay.index, data):
            self._retry(chunk, relay)  # a hostile or broken copy: never passed on
            return
        self._source[relay.blob] = peer
        if self._keep():
            self._chunks().put_chunk(self._gid, chunk, data, durable=False)
        self._finish(chunk, data)

    def chunks_missing(self, peer: DeviceId, chunks: Sequence[ChunkId]) -> None:
        """``peer`` lacks these: ask another, or tell the waiters."""
        for chunk in chunks:
            relay = self._relays.get(chunk)
            if relay is not None and peer in relay.flying:
                relay.flying.discard(peer)
                self._retry(chunk, relay)

    def _retry(self, chunk: ChunkId, relay: _Relay) -> None:
        if not self._ask(chunk, relay) and not relay.flying:
            self._finish(chunk, None)

    def _finish(self, chunk: ChunkId, data: bytes | None, *, answer: bool = True) -> None:
        relay = self._relays.pop(chunk, None)
        if relay is None:
            return
        if relay.timer is not None:
            relay.timer.cancel()
        net = self._net() if answer else None
        for waiter in relay.waiters:
            self._per_peer[waiter] -= 1
            if self._per_peer[waiter] <= 0:
                del self._per_peer[waiter]
            if net is not None:
                net.chunk_answer(self._gid, waiter, chunk, data)

    def close(self) -> None:
        """Drop every relay in flight (the device stops): nobody is answered."""
        for chunk in list(self._relays):
            self._finish(chunk, None, answer=False)
