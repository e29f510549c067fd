"""Interoperability with an independent Noise implementation: the PyPI ``noiseprotocol`` package.

microsync initiator <-> noiseprotocol responder and the reverse, for the suite microsync uses
(``Noise_XX_25519_ChaChaPoly_BLAKE2b``) and a few others for breadth; then transport messages
of 0, 1 and 65,519 bytes (the most one Noise message carries) and random sizes, both ways.
``noiseprotocol`` is a test-only dependency; microsync never imports it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from noise.connection import Keypair, NoiseConnection  # type: ignore[import-untyped]

from microsync.crypto import X25519PublicKey, X25519SecretKey
from microsync.errors import DecryptionError, LocalProtocolError, RemoteProtocolError
from microsync.protocol.framing import FLAG_LAST, FrameDecoder, encode_frame
from microsync.protocol.handshake import CertificateChain, Handshake, Preamble, Purpose
from microsync.protocol.noise import MAX_PLAINTEXT_SIZE, CipherState, HandshakeState
from tests.conftest import make_identity, make_rng

XX = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"microsync interop"
SIZES = [0, 1, 1000, MAX_PLAINTEXT_SIZE]


class Theirs:
    """A noiseprotocol peer with the same surface as our side: write, read, finished."""

    def __init__(self, name: str, *, initiator: bool, keys: dict[str, bytes], psk: bytes | None):
        self.connection = NoiseConnection.from_name(name.encode())
        if initiator:
            self.connection.set_as_initiator()
        else:
            self.connection.set_as_responder()
        self.connection.set_prologue(PROLOGUE)
        self.connection.set_keypair_from_private_bytes(Keypair.STATIC, keys["static"])
        if "remote" in keys:
            self.connection.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, keys["remote"])
        if psk is not None:
            self.connection.set_psks(psk=psk)
        self.connection.start_handshake()

    def write_message(self, payload: bytes) -> bytes:
        return bytes(self.connection.write_message(payload))

    def read_message(self, message: bytes) -> bytes:
        return bytes(self.connection.read_message(message))

    @property
    def finished(self) -> bool:
        return bool(self.connection.handshake_finished)


def _ours(
    name: str, *, initiator: bool, keys: dict[str, bytes], psk: bytes | None
) -> HandshakeState:
    return HandshakeState(
        name,
        initiator=initiator,
        prologue=PROLOGUE,
        static=X25519SecretKey(keys["static"]),
        remote_static=X25519PublicKey(keys["remote"]) if "remote" in keys else None,
        psks=[psk] if psk is not None else [],
        rng=os.urandom,
    )


def _handshake(name: str, ours_initiates: bool) -> tuple[HandshakeState, Theirs]:
    """Run a full handshake between the two implementations, payloads checked each way."""
    ours_key, theirs_key = os.urandom(32), os.urandom(32)
    theirs_public = bytes(X25519SecretKey(theirs_key).public)
    needs_remote = ("_IK_" in name or "_NK_" in name) and ours_initiates
    psk = os.urandom(32) if "psk" in name else None
    ours = _ours(
        name,
        initiator=ours_initiates,
        keys={"static": ours_key} | ({"remote": theirs_public} if needs_remote else {}),
        psk=psk,
    )
    if ("_IK_" in name or "_NK_" in name) and not ours_initiates:
        ours_public = bytes(X25519SecretKey(ours_key).public)
        theirs = Theirs(
            name, initiator=True, keys={"static": theirs_key, "remote": ours_public}, psk=psk
        )
    else:
        theirs = Theirs(name, initiator=not ours_initiates, keys={"static": theirs_key}, psk=psk)
    writer: Any = ours if ours_initiates else theirs
    reader: Any = theirs if ours_initiates else ours
    index = 0
    while not (ours.finished and theirs.finished):
        payload = f"handshake payload {index}".encode()
        assert reader.read_message(writer.write_message(payload)) == payload
        writer, reader, index = reader, writer, index + 1
    assert ours.handshake_hash == theirs.connection.get_handshake_hash()
    return ours, theirs


def _exchange(ours: HandshakeState, theirs: Theirs, sizes: list[int]) -> None:
    send, receive = ours.split()
    for size in sizes:
        data = os.urandom(size)
        ciphertext = send.encrypt_with_ad(b"", data)
        assert len(ciphertext) == size + 16
        assert theirs.connection.decrypt(ciphertext) == data
        assert receive.decrypt_with_ad(b"", theirs.connection.encrypt(data)) == data


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours->theirs", "theirs->ours"])
def test_xx_blake2b_both_ways_with_boundary_sizes(ours_initiates: bool) -> None:
    ours, theirs = _handshake(XX, ours_initiates)
    _exchange(ours, theirs, SIZES)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_25519_ChaChaPoly_SHA256",
        "Noise_IK_25519_ChaChaPoly_BLAKE2b",
        "Noise_NK_25519_ChaChaPoly_SHA256",
        "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
    ],
)
@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours->theirs", "theirs->ours"])
def test_other_suites_both_ways(name: str, ours_initiates: bool) -> None:
    ours, theirs = _handshake(name, ours_initiates)
    _exchange(ours, theirs, [0, 1, 100])


@settings(max_examples=25, deadline=None)
@given(
    ours_initiates=st.booleans(),
    sizes=st.lists(st.integers(0, MAX_PLAINTEXT_SIZE), min_size=1, max_size=4),
)
def test_random_transport_sizes(ours_initiates: bool, sizes: list[int]) -> None:
    ours, theirs = _handshake(XX, ours_initiates)
    _exchange(ours, theirs, sizes)


def test_one_byte_too_many_is_refused_with_a_typed_error() -> None:
    ours, _ = _handshake(XX, True)
    send, receive = ours.split()
    with pytest.raises(LocalProtocolError):
        send.encrypt_with_ad(b"", bytes(MAX_PLAINTEXT_SIZE + 1))
    assert send.nonce == 0  # nothing was used up
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", bytes(65536))
    assert receive.nonce == 0


def test_rekey_matches() -> None:
    ours, theirs = _handshake(XX, True)
    send, receive = ours.split()
    send.rekey()
    theirs.connection.rekey_inbound_cipher()
    assert theirs.connection.decrypt(send.encrypt_with_ad(b"", b"after rekey")) == b"after rekey"
    receive.rekey()
    theirs.connection.rekey_outbound_cipher()
    assert receive.decrypt_with_ad(b"", theirs.connection.encrypt(b"back")) == b"back"


def test_cipher_state_rules() -> None:
    """A failed decrypt raises and keeps the nonce; nonce 2**64-1 is never used."""
    key = os.urandom(32)
    sender, receiver = CipherState(key), CipherState(key)
    first = sender.encrypt_with_ad(b"ad", b"one")
    forged = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(DecryptionError):
        receiver.decrypt_with_ad(b"ad", forged)
    assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"ad", first) == b"one"
    sender.set_nonce(2**64 - 1)
    with pytest.raises(LocalProtocolError):
        sender.encrypt_with_ad(b"", b"x")
    assert "key" not in repr(sender).replace("keyed", "")
    assert key.hex() not in repr(sender)


def test_the_microsync_profile_is_plain_noise_on_the_wire() -> None:
    """A noiseprotocol initiator that follows docs/protocol.md completes our handshake."""
    alice, bob = make_identity("alice"), make_identity("bob")
    responder = Handshake.responder(bob, now=1_700_000_000_000, rng=make_rng("r"))
    decoder = FrameDecoder()
    ours = Preamble(versions=(1,), purposes=(Purpose.SYNC,)).to_bytes()
    theirs = decoder.feed(responder.bytes_to_send())[0]
    peer = NoiseConnection.from_name(XX.encode())
    peer.set_as_initiator()
    peer.set_prologue(encode_frame(ours) + encode_frame(theirs))
    peer.set_keypair_from_private_bytes(Keypair.STATIC, alice.transport_key.secret_bytes())
    peer.start_handshake()
    responder.receive(encode_frame(ours) + encode_frame(bytes(peer.write_message(b""))))
    assert peer.read_message(decoder.feed(responder.bytes_to_send())[0]) == b""
    chain = CertificateChain(device=alice.certificate, transport=alice.transport_certificate)
    responder.receive(encode_frame(bytes(peer.write_message(chain.to_bytes()))))
    assert responder.done and responder.peer == alice.certificate
    record = peer.decrypt(decoder.feed(responder.bytes_to_send())[0])
    assert record[0] == FLAG_LAST
    assert CertificateChain.from_bytes(record[1:]).device == bob.certificate
    sent = responder.transport.encrypt_record(b"hello")
    assert peer.decrypt(decoder.feed(sent)[0]) == bytes([FLAG_LAST]) + b"hello"
    reply = encode_frame(peer.encrypt(bytes([FLAG_LAST]) + b"hi"))
    assert responder.transport.feed(reply) == [b"hi"]
