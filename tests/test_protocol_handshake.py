"""The microsync handshake profile (microsync.protocol.handshake), driven in memory.

Happy paths, then one test per attack or mistake: a downgraded preamble, tampered handshake
messages, low-order keys, a chain over another key, an expired or forged certificate, a
connection to oneself, a malformed chain, a refused peer. Failures are HandshakeErrors, and a
failed handshake refuses any further use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.crypto import SigningKey, X25519PublicKey, X25519SecretKey
from microsync.crypto.noise import dh
from microsync.errors import HandshakeError, LocalProtocolError, NotAMember
from microsync.identity import DeviceCertificate, LocalIdentity, PersonId, TransportCertificate
from microsync.protocol.framing import FrameDecoder, encode_frame
from microsync.protocol.handshake import (
    PROTOCOL_NAME,
    TRANSITIONS,
    CertificateChain,
    Handshake,
    Preamble,
    Purpose,
    Step,
    pump,
)
from microsync.protocol.noise import HandshakeState
from tests.conftest import make_identity, make_rng

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000

# The points of small order on Curve25519 (and their twins with the ignored top bit set):
# 0, 1, the two points of order 8, p-1, p and p+1 (the list libsodium blocks).
SMALL_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 19 - 1).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
    (2**255 - 19 + 1).to_bytes(32, "little"),
]
SMALL_ORDER += [point[:31] + bytes([point[31] | 0x80]) for point in SMALL_ORDER]

ALICE = make_identity("alice")
BOB = make_identity("bob")


def pair(
    initiator: LocalIdentity = ALICE,
    responder: LocalIdentity = BOB,
    *,
    purpose: Purpose = Purpose.SYNC,
    accepts: tuple[Purpose, ...] = (Purpose.SYNC,),
    now: int = NOW,
    accept_i: Callable[[DeviceCertificate], bool] | None = None,
    accept_r: Callable[[DeviceCertificate], bool] | None = None,
) -> tuple[Handshake, Handshake]:
    i = Handshake.initiator(initiator, purpose, now=now, rng=make_rng("i"), accept=accept_i)
    r = Handshake.responder(responder, accepts, now=now, rng=make_rng("r"), accept=accept_r)
    return i, r


def connected() -> tuple[Handshake, Handshake]:
    i, r = pair()
    pump(i, r)
    assert i.done and r.done
    return i, r


def with_transport_key(identity: LocalIdentity, key: X25519SecretKey) -> LocalIdentity:
    """The same device with a different Noise static key and NO new certificate for it."""
    return dataclasses.replace(identity, transport_key=key)


def recertified(identity: LocalIdentity, issued_at: int, lifetime: int) -> LocalIdentity:
    certificate = TransportCertificate.issue(
        identity.device_key, identity.transport_key.public, issued_at, lifetime
    )
    return dataclasses.replace(identity, transport_certificate=certificate)


def expect_failure(failing: Handshake, run: Callable[[], None], match: str | None = None) -> None:
    with pytest.raises(HandshakeError, match=match):
        run()
    assert failing.step is Step.FAILED
    with pytest.raises(LocalProtocolError):
        failing.receive(b"")
    with pytest.raises(LocalProtocolError):
        _ = failing.transport


# --- happy paths ------------------------------------------------------------------------------


def test_both_sides_verify_each_other_and_exchange_records() -> None:
    i, r = connected()
    assert i.peer == BOB.certificate and r.peer == ALICE.certificate
    assert i.peer_chain is not None and i.peer_chain.transport == BOB.transport_certificate
    assert (i.version, i.purpose) == (r.version, r.purpose) == (1, Purpose.SYNC)
    assert i.transport.handshake_hash == r.transport.handshake_hash
    big = os.urandom(200_000)
    assert r.transport.feed(i.transport.encrypt_record(big)) == [big]
    assert i.transport.feed(r.transport.encrypt_record(b"")) == [b""]


def test_records_that_arrive_with_the_responders_chain_are_kept() -> None:
    i, r = pair()
    pump(i, r, rounds=2)  # preambles, messages 1 and 2
    r.receive(i.bytes_to_send())  # message 3: the responder is done, the initiator is not
    assert r.done and not i.done
    early = r.bytes_to_send() + r.transport.encrypt_record(b"early") + b"\x00"
    i.receive(early)
    assert i.done
    assert i.transport.feed(b"") == [b"early"]
    assert i.transport.feed(r.transport.encrypt_record(b"late")[1:]) == [b"late"]


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_any_slicing_of_the_stream_completes(cuts: list[int]) -> None:
    i, r = pair()

    def deliver(receiver: Handshake, data: bytes) -> None:
        while data:
            for cut in cuts:
                receiver.receive(data[:cut])
                data = data[cut:]

    for _ in range(4):
        deliver(r, i.bytes_to_send())
        deliver(i, r.bytes_to_send())
    assert i.done and r.done and i.peer == BOB.certificate


def test_invite_purpose_and_its_refusal() -> None:
    i, r = pair(purpose=Purpose.INVITE, accepts=(Purpose.SYNC, Purpose.INVITE))
    pump(i, r)
    assert i.purpose is r.purpose is Purpose.INVITE
    i, r = pair(purpose=Purpose.INVITE, accepts=(Purpose.SYNC,))
    expect_failure(r, lambda: pump(i, r), "purpose")


def test_accept_hook_sees_the_peer_and_can_refuse() -> None:
    seen: list[DeviceCertificate] = []

    def refuse(cert: DeviceCertificate) -> bool:
        seen.append(cert)
        return False

    i, r = pair(accept_r=refuse)
    expect_failure(r, lambda: pump(i, r), "not accepted")
    assert seen == [ALICE.certificate]
    assert r.bytes_to_send() == b""  # the responder never revealed its chain
    assert not i.done

    def not_a_member(cert: DeviceCertificate) -> bool:
        raise NotAMember("not in any shared group")

    i, r = pair(accept_i=not_a_member)
    with pytest.raises(NotAMember):
        pump(i, r)
    assert i.step is Step.FAILED


def test_message_2_carries_nothing_identifying() -> None:
    """Nothing an observer sees names either device, person or static key."""
    i, r = pair()
    wire: list[bytes] = []

    def record(_: bool, data: bytes) -> bytes:
        wire.append(data)
        return data

    pump(i, r, tamper=record)
    frames = [frame for data in wire for frame in FrameDecoder().feed(data)]
    assert len(frames[3]) == 32 + 48 + 16  # message 2: e, encrypted s, empty encrypted payload
    transcript = b"".join(wire)
    for identity in (ALICE, BOB):
        for secret_or_name in (
            identity.person_id,
            identity.device_id,
            bytes(identity.transport_key.public),
            identity.name.encode(),
        ):
            assert secret_or_name not in transcript


def test_transition_table_is_the_whole_machine() -> None:
    steps = {step for (_, step) in TRANSITIONS} | {after for (_, after) in TRANSITIONS.values()}
    assert steps == set(Step) - {Step.FAILED}


# --- downgrade and tampering ------------------------------------------------------------------


def _rewrite_first_frame(data: bytes, new_body: bytes) -> bytes:
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    return encode_frame(new_body) + b"".join(encode_frame(f) for f in frames[1:])


def test_downgraded_version_list_breaks_the_handshake() -> None:
    i, r = pair()
    forged = Preamble(versions=(1, 2), purposes=(Purpose.SYNC,)).to_bytes()
    tampered = {"done": False}

    def tamper(from_initiator: bool, data: bytes) -> bytes:
        if from_initiator and not tampered["done"]:
            tampered["done"] = True
            return _rewrite_first_frame(data, forged)
        return data

    expect_failure(i, lambda: pump(i, r, tamper=tamper), "authenticate")


def test_tampered_responder_preamble_breaks_the_handshake() -> None:
    i, r = pair(accepts=(Purpose.SYNC, Purpose.INVITE))
    forged = Preamble(versions=(1,), purposes=(Purpose.SYNC,)).to_bytes()
    first = {"done": False}

    def tamper(from_initiator: bool, data: bytes) -> bytes:
        if not from_initiator and not first["done"]:
            first["done"] = True
            return _rewrite_first_frame(data, forged)
        return data

    expect_failure(i, lambda: pump(i, r, tamper=tamper), "authenticate")


@pytest.mark.parametrize(
    "preamble",
    [b"HTTP/1.1 200 OK", b"MSYN", b"MSYN\x01\x09\x01\x01", b"MSYN\x01\x01\x01\x01junk"],
    ids=["not-microsync", "truncated", "no-common-version", "trailing-bytes"],
)
def test_bad_preambles_are_refused(preamble: bytes) -> None:
    i, _ = pair()
    expect_failure(i, lambda: i.receive(encode_frame(preamble)))


@pytest.mark.parametrize("index", [0, 1, 2], ids=["message-1", "message-2", "message-3"])
def test_a_flipped_bit_in_any_handshake_message_fails(index: int) -> None:
    i, r = pair()
    sent = {True: 0, False: 0}

    def tamper(from_initiator: bool, data: bytes) -> bytes:
        out = b""
        for frame in FrameDecoder().feed(data):
            number = sent[from_initiator]
            sent[from_initiator] += 1
            noise_index = 2 * (number - 1) + (0 if from_initiator else 1)
            if number >= 1 and noise_index == index:
                frame = frame[:-1] + bytes([frame[-1] ^ 0x80])
            out += encode_frame(frame)
        return out

    with pytest.raises(HandshakeError):
        pump(i, r, tamper=tamper)
    assert Step.FAILED in (i.step, r.step)
    assert not (i.done and r.done)


# --- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", SMALL_ORDER, ids=[p.hex()[:8] for p in SMALL_ORDER])
def test_small_order_points_are_refused(point: bytes) -> None:
    with pytest.raises(HandshakeError):
        dh(X25519SecretKey(os.urandom(32)), X25519PublicKey(point))


@pytest.mark.parametrize("point", SMALL_ORDER[:7], ids=[p.hex()[:8] for p in SMALL_ORDER[:7]])
def test_small_order_ephemeral_in_message_1_is_refused(point: bytes) -> None:
    _, r = pair()
    initiator_preamble = Preamble(versions=(1,), purposes=(Purpose.SYNC,)).to_bytes()
    expect_failure(r, lambda: r.receive(encode_frame(initiator_preamble) + encode_frame(point)))


def test_small_order_ephemeral_in_message_2_is_refused() -> None:
    i, r = pair()
    i.receive(r.bytes_to_send())
    fake_message_2 = SMALL_ORDER[2] + os.urandom(48 + 16)
    expect_failure(i, lambda: i.receive(encode_frame(fake_message_2)), "low order")


class RawInitiator:
    """An initiator that writes whatever message 3 payload a test asks for."""

    def __init__(self, identity: LocalIdentity, responder: Handshake) -> None:
        preamble = Preamble(versions=(1,), purposes=(Purpose.SYNC,)).to_bytes()
        theirs = FrameDecoder().feed(responder.bytes_to_send())[0]
        self.noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=True,
            prologue=encode_frame(preamble) + encode_frame(theirs),
            static=identity.transport_key,
            rng=make_rng("raw"),
        )
        responder.receive(encode_frame(preamble) + encode_frame(self.noise.write_message(b"")))
        self.noise.read_message(FrameDecoder().feed(responder.bytes_to_send())[0])

    def message_3(self, payload: bytes) -> bytes:
        return encode_frame(self.noise.write_message(payload))


def chain_of(identity: LocalIdentity) -> bytes:
    return CertificateChain(
        device=identity.certificate, transport=identity.transport_certificate
    ).to_bytes()


def test_a_valid_chain_over_another_noise_key_is_refused() -> None:
    mallory = with_transport_key(make_identity("mallory"), X25519SecretKey(os.urandom(32)))
    i, r = pair(mallory, BOB)
    expect_failure(r, lambda: pump(i, r), "not the key of this session")
    _, r = pair()
    raw = RawInitiator(make_identity("mallory"), r)
    expect_failure(r, lambda: r.receive(raw.message_3(chain_of(ALICE))), "not the key")


def test_responder_with_a_chain_over_another_key_is_refused() -> None:
    mallory = with_transport_key(make_identity("mallory"), X25519SecretKey(os.urandom(32)))
    i, r = pair(ALICE, mallory)
    expect_failure(i, lambda: pump(i, r), "not the key of this session")


@pytest.mark.parametrize("initiator_expired", [True, False], ids=["initiator", "responder"])
def test_expired_transport_certificate_is_refused(initiator_expired: bool) -> None:
    old = recertified(make_identity("old"), NOW - 31 * DAY, 30 * DAY)
    i, r = pair(old, BOB) if initiator_expired else pair(ALICE, old)
    expect_failure(r if initiator_expired else i, lambda: pump(i, r), "expired")


def test_transport_certificate_from_the_future_is_refused() -> None:
    early = recertified(make_identity("early"), NOW + DAY, 30 * DAY)
    i, r = pair(early, BOB)
    expect_failure(r, lambda: pump(i, r), "not valid yet")


def test_connecting_to_oneself_is_refused() -> None:
    i, r = pair(ALICE, ALICE)
    expect_failure(i, lambda: pump(i, r), "itself")


def test_same_device_with_another_transport_key_is_refused() -> None:
    key = X25519SecretKey(os.urandom(32))
    twin = recertified(with_transport_key(ALICE, key), NOW, DAY)
    i, r = pair(ALICE, twin)
    expect_failure(r, lambda: pump(i, r), "itself")  # the responder sees message 3 first


def test_forged_device_certificate_is_refused() -> None:
    stranger = SigningKey(os.urandom(32))
    forged = dataclasses.replace(ALICE.certificate, person=PersonId(bytes(stranger.public)))
    _, r = pair()
    raw = RawInitiator(ALICE, r)
    chain = CertificateChain(device=forged, transport=ALICE.transport_certificate).to_bytes()
    expect_failure(r, lambda: r.receive(raw.message_3(chain)), "signature")


def test_transport_certificate_of_another_device_is_refused() -> None:
    _, r = pair()
    raw = RawInitiator(ALICE, r)
    chain = CertificateChain(device=BOB.certificate, transport=ALICE.transport_certificate)
    expect_failure(r, lambda: r.receive(raw.message_3(chain.to_bytes())), "another device")


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"garbage" * 10, chain_of(ALICE)[:-1], chain_of(ALICE) + b"\x00"],
    ids=["empty", "zero", "garbage", "truncated", "trailing"],
)
def test_malformed_message_3_payload_is_refused(payload: bytes) -> None:
    _, r = pair()
    raw = RawInitiator(ALICE, r)
    expect_failure(r, lambda: r.receive(raw.message_3(payload)), "malformed")


@settings(max_examples=60, deadline=None)
@given(
    garbage=st.lists(st.binary(max_size=120), min_size=1, max_size=4),
    initiator_side=st.booleans(),
    after_preamble=st.booleans(),
)
def test_garbage_from_the_peer_is_only_ever_a_handshake_error(
    garbage: list[bytes], initiator_side: bool, after_preamble: bool
) -> None:
    i, r = pair()
    victim = i if initiator_side else r
    if after_preamble:  # a preamble both sides accept, then garbage where Noise should be
        victim.receive(encode_frame(Preamble(versions=(1,), purposes=(1,)).to_bytes()))
    try:
        for piece in garbage:
            victim.receive(encode_frame(piece) if len(piece) % 2 else piece)
    except HandshakeError:
        assert victim.step is Step.FAILED
    else:
        assert not victim.done


# --- hygiene ----------------------------------------------------------------------------------


def test_nothing_secret_in_reprs_or_errors() -> None:
    i, r = connected()
    secrets = [
        ALICE.transport_key.secret_bytes(),
        BOB.transport_key.secret_bytes(),
        ALICE.device_key.secret_bytes(),
    ]
    shown = " ".join(repr(x) for x in (i, r, i.transport, r.transport))
    errors: list[str] = []
    mallory = with_transport_key(make_identity("mallory"), X25519SecretKey(os.urandom(32)))
    for a, b in [(ALICE, ALICE), (mallory, BOB), (ALICE, mallory)]:
        x, y = pair(a, b)
        try:
            pump(x, y)
        except HandshakeError as error:
            errors.append(str(error))
    assert len(errors) == 3
    for secret in secrets:
        for form in (secret.hex(), repr(secret), secret.hex()[:16]):
            assert form not in shown and all(form not in e for e in errors)
