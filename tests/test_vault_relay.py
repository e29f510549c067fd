"""The pieces of relayed chunk fetches, without sockets: the ``hops`` field on the wire, a
session owing an answer it passed on (:class:`ChunkTransfer`), and the relay's bounds, dedupe,
hash check and timeout (:class:`~microsync.node.chunk_relay.ChunkRelay`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import pytest

from microsync.blobs import BlobDecryptor, BlobEncryptor, BlobId, ChunkId
from microsync.errors import DecodeError
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.node import chunk_relay
from microsync.node.chunk_relay import MAX_RELAYED, PER_PEER, ChunkRelay, Located
from microsync.protocol import messages
from microsync.protocol.messages import (
    MAX_CHUNK_HOPS,
    ChunkData,
    ChunkMissing,
    ChunkRequest,
    decode_message,
    encode_message,
)
from microsync.protocol.session import SyncOptions
from microsync.protocol.sync.chunks import ChunkTransfer
from microsync.storage.memory import MemoryStore
from tests.test_sync_machines import GROUP, FakeHost, link_to

# ---------------------------------------------------------------------- the wire


def test_a_chunk_request_carries_its_hops_and_no_more_than_the_limit() -> None:
    ids = (b"a" * 32, b"b" * 32)
    for hops in range(MAX_CHUNK_HOPS + 1):
        m = ChunkRequest(group=GROUP, ids=ids, hops=hops)
        assert decode_message(encode_message(m)) == m
    record = encode_message(ChunkRequest(group=GROUP, ids=ids, hops=MAX_CHUNK_HOPS))
    too_far = record[:-1] + bytes([record[-1] + 1])  # the last byte is the small int hops
    with pytest.raises(DecodeError, match="hops"):
        decode_message(too_far)
    assert messages.MAX_CHUNK_HOPS == 1


# ---------------------------------------------------------------------- the session's side


class RelayHost(FakeHost):
    """Holds ``held``; takes on every other chunk to relay while ``relaying``."""

    def __init__(self, held: dict[bytes, bytes], relaying: bool = True) -> None:
        super().__init__()
        self.held, self.relaying = held, relaying
        self.taken: list[bytes] = []

    def chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bytes | None:
        return self.held.get(chunk)

    def chunk_received(self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes) -> None:
        return None

    def chunks_missing(self, group: GroupId, peer: DeviceId, chunks: Sequence[bytes]) -> None:
        return None

    def relay_chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bool:
        if self.relaying:
            self.taken.append(chunk)
        return self.relaying


def test_a_passed_on_chunk_is_owed_and_answered_exactly_once() -> None:
    held, far, nowhere = b"h" * 32, b"f" * 32, b"n" * 32
    host = RelayHost({held: b"HELD"})
    link = link_to(host)
    chunks = ChunkTransfer(link, GROUP)
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=(held, far), hops=1))
    assert link.out == [ChunkData(group=GROUP, id=held, data=b"HELD")]  # far: owed, later
    assert chunks.owed == {far} and host.taken == [far]
    link.out.clear()
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=(far,), hops=1))  # asked again
    assert link.out == [] and host.taken == [far]  # still one answer owed, not two
    assert chunks.answer(far, b"FAR") and link.out == [ChunkData(group=GROUP, id=far, data=b"FAR")]
    assert not chunks.answer(far, b"FAR") and not chunks.answer(nowhere, None)
    link.out.clear()
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=(nowhere,), hops=0))  # no hop left
    assert link.out == [ChunkMissing(group=GROUP, ids=(nowhere,))] and host.taken == [far]
    link.out.clear()
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=(nowhere,), hops=1))
    assert chunks.answer(nowhere, None)
    assert link.out == [ChunkMissing(group=GROUP, ids=(nowhere,))]


def test_what_a_session_owes_is_bounded_by_the_window_and_refusals_answer_at_once() -> None:
    link = link_to(RelayHost({}), SyncOptions(max_chunks_outstanding=2))
    chunks = ChunkTransfer(link, GROUP)
    ids = tuple(bytes([i]) * 32 for i in range(3))
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=ids, hops=1))
    assert chunks.owed == set(ids[:2]) and link.out == [ChunkMissing(group=GROUP, ids=ids[2:])]
    refusing = link_to(RelayHost({}, relaying=False))
    other = ChunkTransfer(refusing, GROUP)
    other.on_chunk_request(ChunkRequest(group=GROUP, ids=ids, hops=1))
    assert other.owed == set() and refusing.out == [ChunkMissing(group=GROUP, ids=ids)]


# ---------------------------------------------------------------------- the relay


ASKER, OTHER = DeviceId(b"A" * 32), DeviceId(b"O" * 32)
UP1, UP2, UP3 = DeviceId(b"1" * 32), DeviceId(b"2" * 32), DeviceId(b"3" * 32)
BLOB = BlobId(b"B" * 32)


class FakeNet:
    """Peers that record what they were asked; answers recorded per (peer, chunk)."""

    def __init__(self, *peers: DeviceId) -> None:
        self.peers = list(peers)
        self.asked: list[tuple[DeviceId, bytes, int]] = []
        self.answers: list[tuple[DeviceId, bytes, bytes | None]] = []

    def chunk_peers(self, group: GroupId) -> dict[DeviceId, chunk_relay.Request]:
        return {p: functools.partial(self._request, p) for p in self.peers}

    def _request(self, peer: DeviceId, ids: Sequence[bytes], hops: int) -> None:
        self.asked += [(peer, i, hops) for i in ids]

    def chunk_answer(
        self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes | None
    ) -> None:
        self.answers.append((peer, chunk, data))


def sealed_blob(chunks: int = 3) -> tuple[list[bytes], list[ChunkId], BlobDecryptor]:
    encryptor = BlobEncryptor(b"k" * 32, b"i" * 32, 16)
    sealed = encryptor.update(b"x" * (16 * chunks - 1))
    sealed.append(encryptor.finish())
    ids = [s.id for s in sealed]
    return (
        [s.data for s in sealed],
        ids,
        BlobDecryptor(b"k" * 32, b"i" * 32, 16, 16 * chunks - 1, ids),
    )


def relay_of(
    net: FakeNet,
    ids: Sequence[ChunkId],
    decryptor: BlobDecryptor,
    store: MemoryStore,
    keep: bool = True,
) -> ChunkRelay:
    where = {c: i for i, c in enumerate(ids)}

    def locate(chunk: ChunkId) -> Located | None:
        return None if chunk not in where else (BLOB, where[chunk], decryptor)

    return ChunkRelay(GROUP, locate, lambda: keep, lambda: store, lambda: net)


async def test_the_relay_dedupes_checks_each_copy_and_answers_every_waiter() -> None:
    data, ids, decryptor = sealed_blob()
    net, store = FakeNet(ASKER, UP1, UP2, UP3), MemoryStore()
    relay = relay_of(net, ids, decryptor, store)
    assert relay.relay(ASKER, ids[0])
    net.peers.append(OTHER)
    assert relay.relay(OTHER, ids[0])  # one relay for both, and OTHER never asked for it
    assert [(p, h) for p, _, h in net.asked] == [(UP1, 0), (UP2, 0)]  # FANOUT, no hop left
    relay.chunk_received(UP1, ids[0], data[1])  # a wrong copy: never passed on
    assert net.answers == [] and net.asked[-1][0] == UP3  # another peer asked instead
    relay.chunks_missing(UP2, [ids[0]])
    relay.chunk_received(UP3, ids[0], data[0])
    assert sorted(net.answers) == sorted([(ASKER, ids[0], data[0]), (OTHER, ids[0], data[0])])
    assert store.get_chunk(GROUP, ids[0]) == data[0] and relay.in_flight == 0
    relay.chunk_received(UP3, ids[0], data[0])  # late copies change nothing
    assert len(net.answers) == 2
    net.asked.clear()
    assert relay.relay(ASKER, ids[1])
    assert net.asked[0][0] == UP3  # the peer that served this blob is asked first


async def test_the_relay_says_missing_when_every_peer_lacks_it_and_refuses_the_uncheckable() -> (
    None
):
    data, ids, decryptor = sealed_blob()
    net, store = FakeNet(ASKER, UP1), MemoryStore()
    relay = relay_of(net, ids, decryptor, store, keep=False)
    assert not relay.relay(ASKER, ChunkId(b"?" * 32))  # no blob here has it: nothing to check
    assert relay.relay(ASKER, ids[0])
    relay.chunks_missing(UP1, [ids[0]])
    assert net.answers == [(ASKER, ids[0], None)]
    alone = relay_of(FakeNet(ASKER), ids, decryptor, store)
    assert not alone.relay(ASKER, ids[0])  # nobody but the asker to ask
    assert relay.relay(ASKER, ids[1])
    relay.chunk_received(UP1, ids[1], data[1])
    assert store.get_chunk(GROUP, ids[1]) is None  # "on_demand": passed on, not kept


async def test_the_relay_bounds_each_asker_and_the_whole_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encryptor = BlobEncryptor(b"k" * 32, b"i" * 32, 16)
    sealed = encryptor.update(b"x" * 16 * 200)
    sealed.append(encryptor.finish())
    ids = [s.id for s in sealed]
    decryptor = BlobDecryptor(b"k" * 32, b"i" * 32, 16, 16 * 200, ids)
    askers = [DeviceId(bytes([i]) * 32) for i in range(8)]
    net = FakeNet(*askers, UP1)
    relay = relay_of(net, ids, decryptor, MemoryStore())
    taken = [relay.relay(askers[0], c) for c in ids[: PER_PEER + 1]]
    assert taken == [True] * PER_PEER + [False]  # one asker: PER_PEER at a time
    more = [relay.relay(askers[1 + i // PER_PEER], c) for i, c in enumerate(ids[PER_PEER:100])]
    assert sum(more) + PER_PEER == MAX_RELAYED and relay.in_flight == MAX_RELAYED
    monkeypatch.setattr(chunk_relay, "RELAY_TIMEOUT", 0.05)
    late = relay_of(FakeNet(ASKER, UP1), ids, decryptor, MemoryStore())
    assert late.relay(ASKER, ids[0])
    await asyncio.sleep(0.2)  # UP1 never answers: the waiter hears "missing" after the timeout
    assert late._net().answers == [(ASKER, ids[0], None)]  # type: ignore[union-attr]
    relay.close()
    assert relay.in_flight == 0
