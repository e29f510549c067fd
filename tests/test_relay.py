"""The blind relay (microsync.net.relay) and its client, over real WebSockets on 127.0.0.1.

Every test binds port 0 on loopback and stops what it starts (the fixtures close the relay
and every client in a ``finally``). Order: the wire codec, pairing and streaming, a Noise
session end to end and what the relay sees of it, caps and bad clients, shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from microsync.errors import DecodeError
from microsync.feed import GroupId
from microsync.group.keys import EpochKey, rendezvous_id
from microsync.net.relay import (
    BUCKETS,
    MAX_PAYLOAD,
    Close,
    Closed,
    Data,
    Error,
    ErrorCode,
    Flow,
    Join,
    Leave,
    Paired,
    RelayLimits,
    RelayServer,
    bucket_for,
    data_sizes,
    decode,
    encode,
)
from microsync.net.relay_client import RelayChannel, RelayClient
from microsync.protocol.handshake import Handshake, Purpose
from microsync.protocol.relay import data_channel, rechannel
from tests.conftest import make_identity, make_rng

NOW = 1_700_000_000_000
TIMEOUT = 5.0
T = TypeVar("T")

Tapped = list[tuple[Flow, bytes]]
Clients = Callable[..., Awaitable[RelayClient]]


def rid(name: str) -> bytes:
    return make_rng(f"rid {name}")(32)


async def within(awaitable: Awaitable[T], seconds: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, seconds)


async def accept(client: RelayClient) -> RelayChannel:
    return await asyncio.wait_for(client.accept(), TIMEOUT)


async def read_exactly(channel: RelayChannel, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await asyncio.wait_for(channel.read(), TIMEOUT)
        assert chunk, "EOF too early"
        got += chunk
    return bytes(got)


async def open_channels(client: RelayClient) -> int:
    """How many channels ``client`` has once the relay had time to pair anything pending."""
    await asyncio.sleep(0.2)
    return len(client.channels())


@pytest.fixture
async def tapped() -> Tapped:
    return []


async def start_relay(stack: AsyncExitStack, tap: Tapped, limits: RelayLimits) -> RelayServer:
    relay = RelayServer(limits=limits, tap=lambda flow, raw: tap.append((flow, raw)))
    await relay.start()
    stack.push_async_callback(relay.stop)
    return relay


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


@pytest.fixture
async def relay(stack: AsyncExitStack, tapped: Tapped) -> RelayServer:
    return await start_relay(stack, tapped, RelayLimits())


def client_factory(stack: AsyncExitStack, relay: RelayServer) -> Clients:
    async def open_client(**options: int) -> RelayClient:
        client = RelayClient(f"ws://127.0.0.1:{relay.port}", **options)
        await client.connect()
        stack.push_async_callback(client.close)
        return client

    return open_client


@pytest.fixture
def clients(stack: AsyncExitStack, relay: RelayServer) -> Clients:
    return client_factory(stack, relay)


async def paired(clients: Clients, name: str = "pair") -> tuple[RelayChannel, RelayChannel]:
    a, b = await clients(), await clients()
    await a.join(rid(name))
    await b.join(rid(name))
    return await accept(a), await accept(b)


async def raw_client(relay: RelayServer, stack: AsyncExitStack) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{relay.port}", compression=None, proxy=None)
    stack.push_async_callback(ws.close)
    return ws


# --- wire codec -------------------------------------------------------------------------------

CLIENT_MESSAGES = [
    Join(rid=rid("a")),
    Leave(rid=rid("a")),
    Data(channel=1, payload=b"x"),
    Data(channel=2**32 - 1, payload=bytes(MAX_PAYLOAD)),
    Close(channel=7),
]
RELAY_MESSAGES = [
    Paired(rid=rid("a"), channel=3, initiator=True),
    Paired(rid=rid("b"), channel=4, initiator=False),
    Data(channel=5, payload=b"y" * 1000),
    Closed(channel=6),
    Error(code=ErrorCode.RATE_LIMIT),
]


@pytest.mark.parametrize("message", CLIENT_MESSAGES + RELAY_MESSAGES, ids=repr)
def test_every_message_round_trips_at_a_bucket_size(message: object) -> None:
    wire = encode(message)  # type: ignore[arg-type]
    assert len(wire) in BUCKETS
    from_client = message in CLIENT_MESSAGES
    assert decode(wire, from_client=from_client) == message


@given(st.integers(1, MAX_PAYLOAD))
def test_data_of_any_size_pads_to_the_smallest_bucket(size: int) -> None:
    wire = encode(Data(channel=1, payload=b"\x01" * size))
    assert len(wire) == min(b for b in BUCKETS if b >= size + 8)
    assert decode(wire, from_client=True) == Data(channel=1, payload=b"\x01" * size)


@given(st.integers(0, 1_000_000))
def test_writes_are_cut_with_the_least_padding(length: int) -> None:
    sizes = data_sizes(length)
    assert sum(sizes) == length and all(0 < size <= MAX_PAYLOAD for size in sizes)
    naive = [min(MAX_PAYLOAD, length - start) for start in range(0, length, MAX_PAYLOAD)]
    assert sum(bucket_for(8 + s) for s in sizes) <= sum(bucket_for(8 + s) for s in naive)


def test_a_full_noise_frame_goes_as_one_message_with_almost_no_padding() -> None:
    sizes = data_sizes(65_537)
    wire = sum(len(encode(Data(channel=1, payload=bytes(s)))) for s in sizes)
    assert sizes == [65_537] and wire == 65_552  # 15 bytes: 8 of framing, 7 of padding


def malformed_messages() -> list[bytes]:
    join = encode(Join(rid=rid("a")))
    paired_bytes = encode(Paired(rid=rid("a"), channel=1, initiator=True))
    return [
        b"",
        join[:-1],  # not a bucket length
        join + bytes(1),
        join[:-1] + b"\x01",  # padding not zero
        b"\x09" + join[1:],  # unknown kind
        encode(Closed(channel=1)),  # a relay-only kind from a client
        b"\x01\x00\x00\x21" + bytes(252),  # JOIN with 33 bytes
        b"\x03\x00\x00\x04" + bytes(252),  # DATA without payload
        b"\x04\x00\x00\x04" + bytes(252),  # channel 0
        b"\x01\xff\xff\xff" + bytes(252),  # length beyond the message
        paired_bytes,
    ]


@given(st.binary(max_size=80), st.sampled_from([256, 1024]), st.booleans())
def test_any_bytes_decode_to_one_canonical_message_or_a_decode_error(
    start: bytes, size: int, from_client: bool
) -> None:
    wire = start.ljust(size, b"\x00")
    try:
        message = decode(wire, from_client=from_client)
    except DecodeError:
        return
    assert encode(message) == wire  # strict: nothing else decodes


@pytest.mark.parametrize("wire", malformed_messages(), ids=range(len(malformed_messages())))
def test_decoding_is_strict(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(wire, from_client=True)


def test_relay_messages_are_checked_too() -> None:
    bad_flag = bytearray(encode(Paired(rid=rid("a"), channel=1, initiator=True)))
    bad_flag[4 + 36] = 2
    for wire in (bytes(bad_flag), encode(Join(rid=rid("a"))), b"\x07\x00\x00\x02\x00\x63"):
        with pytest.raises(DecodeError):
            decode(wire.ljust(256, b"\x00"), from_client=False)


def test_encode_refuses_what_it_cannot_carry() -> None:
    for message in (
        Join(rid=b"short"),
        Data(channel=1, payload=b""),
        Data(channel=1, payload=bytes(MAX_PAYLOAD + 1)),
        Close(channel=0),
    ):
        with pytest.raises(ValueError):
            encode(message)


# --- pairing and streaming --------------------------------------------------------------------


async def test_two_clients_get_one_channel_and_bytes_flow_both_ways(clients: Clients) -> None:
    first, later = await paired(clients)
    assert (first.initiator, later.initiator) == (False, True)
    assert first.rid == later.rid == rid("pair")
    assert first.peer.startswith("relay:ws://127.0.0.1:")
    there, back = os.urandom(3_000_000), os.urandom(2_000_000)
    results = await asyncio.gather(
        first.write(there),
        later.write(back),
        read_exactly(later, len(there)),
        read_exactly(first, len(back)),
    )
    assert results[2] == there and results[3] == back


async def test_close_reaches_the_other_end_as_eof_after_the_data(clients: Clients) -> None:
    first, later = await paired(clients)
    await first.write(b"last words")
    await first.close()
    await first.close()  # idempotent
    assert await read_exactly(later, 10) == b"last words"
    assert await within(later.read()) == b""
    assert await within(later.read()) == b""
    with pytest.raises(ConnectionResetError):
        await later.write(b"too late")
    with pytest.raises(ConnectionResetError):
        await first.write(b"too late")
    await later.close()


async def test_simultaneous_close_is_harmless(clients: Clients, relay: RelayServer) -> None:
    first, later = await paired(clients)
    await asyncio.gather(first.close(), later.close())
    third, fourth = await paired(clients, "after")  # the relay is fine
    await third.write(b"ok")
    assert await read_exactly(fourth, 2) == b"ok"
    assert relay.stats.channels == 1


async def test_three_on_one_rid_make_three_channels_and_a_fourth_rid_stays_apart(
    clients: Clients, relay: RelayServer
) -> None:
    members = [await clients() for _ in range(3)]
    stranger = await clients()
    await stranger.join(rid("elsewhere"))
    for member in members:
        await member.join(rid("family"))
    a_channels = [await accept(members[0]), await accept(members[0])]
    b_channels = [await accept(members[1]), await accept(members[1])]
    c_channels = [await accept(members[2]), await accept(members[2])]
    assert await open_channels(stranger) == 0
    assert relay.stats.channels == 3
    # a pairs with b, then with c; b with a, then with c; c with a, then with b
    assert [ch.initiator for ch in a_channels] == [False, False]
    assert [ch.initiator for ch in b_channels] == [True, False]
    assert [ch.initiator for ch in c_channels] == [True, True]
    # each channel joins exactly one pair: what one end writes, only its partner reads
    for sender, receiver, text in (
        (a_channels[0], b_channels[0], b"a->b"),
        (a_channels[1], c_channels[0], b"a->c"),
        (b_channels[1], c_channels[1], b"b->c"),
        (c_channels[1], b_channels[1], b"c->b"),
    ):
        await sender.write(text)
        assert await read_exactly(receiver, 4) == text


async def test_twelve_members_online_each_get_eleven_channels(
    clients: Clients, relay: RelayServer
) -> None:
    members = [await clients() for _ in range(12)]
    for member in members:
        await member.join(rid("big family"))
    for member in members:
        channels = [await accept(member) for _ in range(11)]
        assert len(channels) == 11
    assert relay.stats.channels == 66


async def test_joining_twice_pairs_nothing_new_and_nobody_pairs_with_itself(
    clients: Clients, relay: RelayServer
) -> None:
    alone = await clients()
    await alone.join(rid("solo"))
    await alone.join(rid("solo"))
    assert await open_channels(alone) == 0
    a, b = await clients(), await clients()
    await a.join(rid("pair"))
    await b.join(rid("pair"))
    await b.join(rid("pair"))
    await a.join(rid("pair"))
    assert await open_channels(a) == 1 and await open_channels(b) == 1
    assert relay.stats.channels == 1


async def test_leave_stops_new_pairings_but_keeps_channels(
    clients: Clients, relay: RelayServer
) -> None:
    a, b, c = await clients(), await clients(), await clients()
    await a.join(rid("r"))
    await b.join(rid("r"))
    a_end, b_end = await accept(a), await accept(b)
    await a.leave(rid("r"))
    await a.leave(rid("r"))  # leaving twice is harmless
    await c.join(rid("r"))
    c_end = await accept(c)
    assert c_end.initiator and relay.stats.channels == 2
    assert await open_channels(a) == 1
    await a_end.write(b"still here")
    assert await read_exactly(b_end, 10) == b"still here"


async def test_a_full_client_closes_extra_pairings(clients: Clients, relay: RelayServer) -> None:
    small = await clients(max_channels=1)
    await small.join(rid("r"))
    first, second = await clients(), await clients()
    await first.join(rid("r"))
    await second.join(rid("r"))
    kept = await accept(small)
    assert await open_channels(small) == 1
    refused, with_first = await accept(second), await accept(second)
    assert await within(refused.read()) == b""  # small closed it at once
    await with_first.write(b"fine")
    await accept(first)  # with small
    assert await read_exactly(await accept(first), 4) == b"fine"
    assert kept.rid == rid("r") and relay.stats.channels == 2


async def test_a_reader_that_stops_pushes_back_on_the_writer(
    stack: AsyncExitStack, relay: RelayServer
) -> None:
    open_client = client_factory(stack, relay)
    a = await open_client()
    b = await open_client(buffer_size=64 * 1024)
    await a.join(rid("slow"))
    await b.join(rid("slow"))
    writer_end, reader_end = await accept(a), await accept(b)
    data = os.urandom(20_000_000)
    write = asyncio.ensure_future(writer_end.write(data))
    await asyncio.sleep(0.5)
    assert not write.done(), "20 MB were accepted although nobody reads"
    stalled_at = relay.stats.bytes_forwarded
    await asyncio.sleep(0.3)
    assert relay.stats.bytes_forwarded == stalled_at  # nothing moves while nobody reads
    assert stalled_at < 12_000_000  # what sits in bounded queues and the kernel's buffers
    got = await read_exactly(reader_end, len(data))
    await within(write)
    assert got == data


# --- a Noise session end to end, and what the relay sees of it --------------------------------

ALICE = make_identity("alice-phone")
BOB = make_identity("bob-laptop")
PLAINTEXT = b"Landed in Oxford. The spare key is under the third flower pot."


async def handshake_over(channel: RelayChannel, handshake: Handshake) -> Handshake:
    await channel.write(handshake.bytes_to_send())
    while not handshake.done:
        data = await within(channel.read())
        assert isinstance(data, bytes) and data
        handshake.receive(data)
        out = handshake.bytes_to_send()
        if out:
            await channel.write(out)
    return handshake


async def records(channel: RelayChannel, handshake: Handshake, count: int) -> list[bytes]:
    got = handshake.transport.feed(b"")
    while len(got) < count:
        data = await within(channel.read())
        assert isinstance(data, bytes) and data
        got += handshake.transport.feed(data)
    return got


async def noise_session(clients: Clients, rendezvous: bytes) -> None:
    """ALICE and BOB meet on ``rendezvous``, shake hands and trade records."""
    alice, bob = await clients(), await clients()
    await alice.join(rendezvous)
    await bob.join(rendezvous)
    alice_end, bob_end = await accept(alice), await accept(bob)
    ends = {True: (alice_end, ALICE), False: (bob_end, BOB)}
    sides = {}
    for end, identity in ends.values():
        if end.initiator:
            hs = Handshake.initiator(identity, Purpose.SYNC, now=NOW, rng=make_rng("i"))
        else:
            hs = Handshake.responder(identity, now=NOW, rng=make_rng("r"))
        sides[end.initiator] = (end, hs)
    await asyncio.gather(*(handshake_over(end, hs) for end, hs in sides.values()))
    (i_end, i_hs), (r_end, r_hs) = sides[True], sides[False]
    assert i_hs.transport.handshake_hash == r_hs.transport.handshake_hash
    assert {i_hs.peer, r_hs.peer} == {ALICE.certificate, BOB.certificate}
    big = os.urandom(300_000)
    await i_end.write(i_hs.transport.encrypt_record(PLAINTEXT) + i_hs.transport.encrypt_record(big))
    assert await records(r_end, r_hs, 2) == [PLAINTEXT, big]
    await r_end.write(r_hs.transport.encrypt_record(PLAINTEXT[::-1]))
    assert await records(i_end, i_hs, 1) == [PLAINTEXT[::-1]]
    await i_end.close()
    assert await within(r_end.read()) == b""


async def test_a_noise_session_runs_end_to_end_through_the_relay(clients: Clients) -> None:
    await noise_session(clients, rid("noise"))


async def test_the_connection_runner_works_over_relay_channels(clients: Clients) -> None:
    from microsync.clock import now_ms
    from microsync.identity import LocalIdentity
    from microsync.net.connection import handshake

    alice = LocalIdentity.create("alice", make_rng("runner alice"), now_ms())
    bob = LocalIdentity.create("bob", make_rng("runner bob"), now_ms())
    first, later = await paired(clients, "runner")
    streams = await asyncio.gather(
        handshake(first, alice, initiator=first.initiator, rng=make_rng("1")),
        handshake(later, bob, initiator=later.initiator, rng=make_rng("2")),
    )
    assert {s.peer_device for s in streams} == {alice.device_id, bob.device_id}
    await streams[1].send(PLAINTEXT)
    assert await within(streams[0].receive()) == PLAINTEXT
    await streams[1].close()
    assert await within(streams[0].receive()) is None  # a clean EOF through the relay


async def test_the_relay_sees_no_identifier_no_key_no_plaintext(
    clients: Clients, tapped: Tapped, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    epoch = EpochKey.from_root(GroupId(bytes(32)), 3, make_rng("epoch")(32))
    rendezvous = rendezvous_id(epoch, 2_000_000)
    await noise_session(clients, rendezvous)
    for shown in (rendezvous.hex(), repr(rendezvous)[2:20], repr(PLAINTEXT)[2:20]):
        assert shown not in caplog.text  # nor in the relay's (or websockets') logs
    assert {flow for flow, _ in tapped} == {Flow.RECEIVED, Flow.SENT}
    everything = b"".join(raw for _, raw in tapped)
    payload_stream = b"".join(  # DATA payloads glued together, in case a secret spans two
        bytes(message.payload)
        for flow, raw in tapped
        if isinstance(message := decode(raw, from_client=flow is Flow.RECEIVED), Data)
    )
    secrets = {"plaintext": PLAINTEXT, "epoch control key": epoch.control.secret_bytes()}
    for name, identity in (("alice", ALICE), ("bob", BOB)):
        secrets[f"{name} device id"] = bytes(identity.device_id)
        secrets[f"{name} person id"] = bytes(identity.person_id)
        secrets[f"{name} transport key"] = bytes(identity.transport_key.public)
        secrets[f"{name} prekey"] = bytes(identity.prekey.public)
        secrets[f"{name} name"] = identity.name.encode()
    for name, secret in secrets.items():
        assert secret not in everything, name
        assert secret not in payload_stream, name
    assert all(len(raw) in BUCKETS for _, raw in tapped)
    assert {len(raw) for flow, raw in tapped if flow is Flow.SENT} <= set(BUCKETS)


# --- caps and bad clients ---------------------------------------------------------------------


async def test_more_clients_than_the_cap_are_refused(stack: AsyncExitStack, tapped: Tapped) -> None:
    relay = await start_relay(stack, tapped, RelayLimits(max_clients=3))
    open_client = client_factory(stack, relay)
    admitted = [await open_client() for _ in range(3)]
    with pytest.raises(ConnectionRefusedError):
        await open_client()
    assert relay.stats.clients == 3
    await admitted[0].close()
    await asyncio.sleep(0.1)
    await open_client()  # room again


async def test_a_rush_of_clients_never_exceeds_the_cap(
    stack: AsyncExitStack, tapped: Tapped
) -> None:
    relay = await start_relay(stack, tapped, RelayLimits(max_clients=3))
    rush = [RelayClient(f"ws://127.0.0.1:{relay.port}") for _ in range(8)]
    for client in rush:
        stack.push_async_callback(client.close)
    outcomes = await asyncio.gather(*(c.connect() for c in rush), return_exceptions=True)
    await asyncio.sleep(0.2)
    assert relay.stats.clients <= 3
    refused_late = [c for c, o in zip(rush, outcomes, strict=True) if o is None and c.error]
    refused_early = [o for o in outcomes if isinstance(o, ConnectionRefusedError)]
    assert len(refused_early) + len(refused_late) == 8 - relay.stats.clients
    assert all(c.error is ErrorCode.RELAY_FULL for c in refused_late)


async def test_a_client_over_its_byte_cap_is_disconnected_others_continue(
    stack: AsyncExitStack, tapped: Tapped
) -> None:
    limits = RelayLimits(max_bytes_per_window=1_000_000, window=60.0)
    relay = await start_relay(stack, tapped, limits)
    open_client = client_factory(stack, relay)
    a, b, c, d = [await open_client() for _ in range(4)]
    await a.join(rid("greedy"))
    await b.join(rid("greedy"))
    await c.join(rid("modest"))
    await d.join(rid("modest"))
    greedy, victim = await accept(a), await accept(b)
    modest, partner = await accept(c), await accept(d)
    reading = asyncio.ensure_future(read_until_eof(victim))
    chunk = os.urandom(60_000)
    with pytest.raises(ConnectionResetError):
        for _ in range(2_000):  # 120 MB at most; the relay cuts it off after 1 MB
            await greedy.write(chunk)
            await asyncio.sleep(0)
    assert await within(reading) <= 1_000_000
    assert await within(greedy.read()) == b""
    assert a.error is ErrorCode.RATE_LIMIT
    await modest.write(b"still fine")
    assert await read_exactly(partner, 10) == b"still fine"
    assert relay.stats.clients == 3


async def read_until_eof(channel: RelayChannel) -> int:
    total = 0
    while chunk := await channel.read():
        total += len(chunk)
    return total


@pytest.mark.parametrize(
    "garbage",
    [b"not a relay message", "text frames are refused", encode(Closed(channel=1))],
    ids=["bad length", "text", "wrong direction"],
)
async def test_a_malformed_message_drops_only_its_sender(
    clients: Clients, relay: RelayServer, stack: AsyncExitStack, garbage: bytes | str
) -> None:
    first_client, later_client = await clients(), await clients()
    await first_client.join(rid("pair"))
    await later_client.join(rid("pair"))
    first, later = await accept(first_client), await accept(later_client)
    rogue = await raw_client(relay, stack)
    await rogue.send(encode(Join(rid=rid("pair"))))  # pairs with both of them
    await rogue.send(garbage)
    replies = []
    with pytest.raises(ConnectionClosed):
        while True:
            reply = await within(rogue.recv())
            assert isinstance(reply, bytes)
            replies.append(decode(reply, from_client=False))
    assert [type(reply) for reply in replies] == [Paired, Paired, Error]
    assert replies[-1] == Error(code=ErrorCode.MALFORMED)
    for client_end in (await accept(first_client), await accept(later_client)):
        assert await within(client_end.read()) == b""  # their channels with the rogue closed
    await first.write(b"unaffected")
    assert await read_exactly(later, 10) == b"unaffected"
    assert relay.stats.clients == 2


async def test_data_on_a_channel_never_made_is_malformed(
    relay: RelayServer, stack: AsyncExitStack
) -> None:
    rogue = await raw_client(relay, stack)
    await rogue.send(encode(Data(channel=9, payload=b"guess")))
    reply = await within(rogue.recv())
    assert isinstance(reply, bytes)
    assert decode(reply, from_client=False) == Error(code=ErrorCode.MALFORMED)


async def test_too_many_rendezvous_ids_is_refused(stack: AsyncExitStack, tapped: Tapped) -> None:
    relay = await start_relay(stack, tapped, RelayLimits(max_rids_per_client=2))
    client = await client_factory(stack, relay)()
    await client.join(rid("1"))
    await client.join(rid("2"))
    await client.join(rid("3"))
    with pytest.raises(ConnectionResetError):
        await within(client.accept())
    assert client.error is ErrorCode.TOO_MANY_RIDS


async def test_the_channel_cap_limits_pairings_without_disconnecting(
    stack: AsyncExitStack, tapped: Tapped
) -> None:
    relay = await start_relay(stack, tapped, RelayLimits(max_channels_per_client=2))
    open_client = client_factory(stack, relay)
    members = [await open_client() for _ in range(4)]
    for member in members:
        await member.join(rid("crowd"))
    # the first three to join form a triangle; the fourth finds everybody full
    assert sorted([await open_channels(member) for member in members]) == [0, 2, 2, 2]
    assert relay.stats.channels == 3 and relay.stats.clients == 4


async def test_an_idle_client_is_dropped_but_a_waiting_one_is_not(
    stack: AsyncExitStack, tapped: Tapped
) -> None:
    relay = await start_relay(stack, tapped, RelayLimits(idle_timeout=0.3))
    open_client = client_factory(stack, relay)
    idle, waiting, left = await open_client(), await open_client(), await open_client()
    await waiting.join(rid("waiting"))
    await left.join(rid("left"))
    await left.leave(rid("left"))
    for dropped in (idle, left):
        with pytest.raises(ConnectionResetError):
            await within(dropped.accept(), 3.0)
        assert dropped.error is ErrorCode.IDLE
    await asyncio.sleep(0.3)
    late = await open_client()
    await late.join(rid("waiting"))  # the waiting client is still there to pair with
    assert (await accept(waiting)).initiator is False
    assert relay.stats.clients == 2


# --- shutdown ---------------------------------------------------------------------------------


async def test_stop_closes_everything_and_leaves_no_task(tapped: Tapped) -> None:
    before = asyncio.all_tasks()
    relay = RelayServer(tap=lambda flow, raw: tapped.append((flow, raw)))
    port = await relay.start()
    a, b = RelayClient(f"ws://127.0.0.1:{port}"), RelayClient(f"ws://127.0.0.1:{port}")
    try:
        await a.connect()
        await b.connect()
        await a.join(rid("x"))
        await b.join(rid("x"))
        a_end, b_end = await accept(a), await accept(b)
        waiting = asyncio.ensure_future(a_end.read())
        await relay.stop()
        await relay.stop()  # idempotent
        assert await within(waiting) == b""
        assert await within(b_end.read()) == b""
        with pytest.raises(ConnectionResetError):
            await within(a.accept())
        with pytest.raises(ConnectionResetError):
            await b_end.write(b"gone")
        assert relay.stats.clients == 0 and relay.stats.channels == 0
    finally:
        await a.close()
        await b.close()
        await relay.stop()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


async def test_run_relay_serves_until_cancelled() -> None:
    from microsync.net.relay import run_relay

    ports: asyncio.Queue[int] = asyncio.Queue(1)
    task = asyncio.ensure_future(run_relay("127.0.0.1", 0, ready=ports.put_nowait))
    try:
        port = await within(ports.get())
        async with (
            RelayClient(f"ws://127.0.0.1:{port}") as a,
            RelayClient(f"ws://127.0.0.1:{port}") as b,
        ):
            await a.join(rid("cli"))
            await b.join(rid("cli"))
            assert (await accept(a)).initiator is False
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _client_messages() -> st.SearchStrategy[bytes]:
    """Client messages as sent, in their own bucket or padded up to a larger one, some of them
    damaged (a byte changed, cut short, a nonzero padding byte)."""
    data = st.builds(
        lambda channel, size, fill: encode(Data(channel=channel, payload=bytes([fill]) * size)),
        st.integers(1, 2**32 - 1),
        st.integers(1, 20_000) | st.sampled_from([65_528, 65_537, MAX_PAYLOAD]),
        st.integers(0, 255),
    )
    others = st.sampled_from([encode(Join(rid=rid("a"))), encode(Close(channel=3))])

    def damage(raw: bytes, how: int, at: int, value: int) -> bytes:
        if how == 0:
            return raw
        if how == 1:  # one byte changed
            i = at % len(raw)
            return raw[:i] + bytes([value]) + raw[i + 1 :]
        if how == 2:  # in a larger bucket than it needs
            bigger = [b for b in BUCKETS if b > len(raw)]
            return raw + bytes(bigger[0] - len(raw)) if bigger else raw
        return raw[: at % len(raw)]  # cut short

    return st.builds(
        damage,
        data | others,
        st.integers(0, 3),
        st.integers(0, 2**20),
        st.integers(0, 255),
    )


@given(_client_messages())
def test_the_relay_forwards_data_without_decoding_exactly_as_decode_and_encode_would(
    raw: bytes,
) -> None:
    """The broker's fast path (``data_channel`` + ``rechannel``) takes a message only when the
    general path reads it as DATA in its own bucket, and sends on the same bytes."""
    try:
        message = decode(raw, from_client=True)
    except DecodeError:
        message = None
    number = data_channel(raw)
    canonical = isinstance(message, Data) and encode(message) == raw
    assert (number is not None) == canonical
    if number is not None:
        assert isinstance(message, Data) and message.channel == number
        assert rechannel(raw, 7) == encode(Data(channel=7, payload=message.payload))
