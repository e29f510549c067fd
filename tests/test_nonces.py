"""Nonces (issue 13): where a nonce could repeat under one key, and what stops it.

The argument is in docs/security.md, "Nonces". These tests check the guards that exist and the
facts the argument rests on:

* Noise: counter nonces, one key per direction per session; nonce ``2**64 - 1`` is refused
  and a failed decryption does not advance the counter.
* Vault: STREAM nonces are the chunk position, unique within a blob; every blob gets a fresh
  key, even for the same bytes added twice.
* Content bodies: the 24-byte nonce is drawn from the rng for every body (nothing else).
* Key wraps: the zero nonce is safe because every wrap key is used once; the one way two
  wraps of a bundle share a key (one prekey listed for two recipients) is pinned down too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import microsync
from microsync.crypto import X25519SecretKey
from microsync.crypto.noise import MAX_NONCE
from microsync.crypto.stream import stream_nonce
from microsync.errors import DecryptionError, LocalProtocolError
from microsync.feed.entry import GroupId
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    encrypt_content,
    seal_bundle,
)
from microsync.identity import DeviceId
from microsync.protocol.noise import CipherState, HandshakeState
from tests.conftest import make_rng

GROUP = GroupId(bytes(range(32)))
KEY = bytes(range(32, 64))


# --- Noise ------------------------------------------------------------------------------------


def test_noise_refuses_the_last_nonce_and_never_wraps() -> None:
    state = CipherState(KEY, nonce=MAX_NONCE - 1)
    state.encrypt_with_ad(b"", b"the last message")
    assert state.nonce == MAX_NONCE
    for _ in range(2):
        with pytest.raises(LocalProtocolError, match="exhausted"):
            state.encrypt_with_ad(b"", b"one more")
        with pytest.raises(LocalProtocolError, match="exhausted"):
            state.decrypt_with_ad(b"", bytes(32))
    assert state.nonce == MAX_NONCE


def test_noise_counts_every_encryption_and_no_failed_decryption() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    first, second = (sender.encrypt_with_ad(b"", b"same plaintext") for _ in range(2))
    assert first != second and sender.nonce == 2
    with pytest.raises(DecryptionError):
        receiver.decrypt_with_ad(b"", second)  # out of order: wrong nonce
    assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"", first) == b"same plaintext"
    assert receiver.decrypt_with_ad(b"", second) == b"same plaintext"


def test_noise_uses_one_key_per_direction_and_per_session() -> None:
    def session(seed: str) -> tuple[CipherState, CipherState, CipherState, CipherState]:
        rng = make_rng(seed)
        name = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
        i_static, r_static = X25519SecretKey(KEY), X25519SecretKey(bytes(range(64, 96)))
        i = HandshakeState(name, initiator=True, static=i_static, rng=rng)
        r = HandshakeState(name, initiator=False, static=r_static, rng=rng)
        r.read_message(i.write_message(b""))
        i.read_message(r.write_message(b""))
        r.read_message(i.write_message(b""))
        return (*i.split(), *r.split())

    i_send, _, r_send, r_receive = session("one")
    again_send, *_ = session("two")  # same static keys, new ephemerals
    texts = {s.encrypt_with_ad(b"", bytes(64)) for s in (i_send, r_send, again_send)}
    assert len(texts) == 3  # nonce 0 under three different keys
    assert r_receive.nonce == 0


# --- the vault ---------------------------------------------------------------------------------


def test_stream_nonces_are_unique_within_a_blob() -> None:
    nonces = [stream_nonce(i, last=False) for i in range(4096)]
    nonces += [stream_nonce(i, last=True) for i in range(4096)]
    assert len(set(nonces)) == len(nonces) and {len(n) for n in nonces} == {12}


async def test_the_same_bytes_added_twice_get_two_keys(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "alice", name="Alice") as alice:
        vault = (await alice.create_group("Family")).vault
        first = await vault.add(b"the same file" * 1000, name="a.txt")
        second = await vault.add(b"the same file" * 1000, name="a.txt")
        assert first.id != second.id  # chunk ids hash the ciphertext: other key, other bytes


# --- content bodies -----------------------------------------------------------------------------


def test_every_body_takes_a_fresh_nonce_from_the_rng() -> None:
    epoch = EpochKey.from_root(GROUP, 1, KEY)
    assert epoch.content is not None
    rng, mirror = make_rng("bodies"), make_rng("bodies")
    device = DeviceId(bytes(32))
    bodies = [
        encrypt_content(
            rng,
            epoch.content,
            epoch.ref,
            b"same",
            group=GROUP,
            epoch=1,
            device=device,
            seq=1,
            type=1,
        )
        for _ in range(3)
    ]
    nonces = [body[16:40] for body in bodies]
    assert nonces == [mirror(24) for _ in range(3)] and len(set(nonces)) == 3


# --- key wraps --------------------------------------------------------------------------------


def _recipients(prekeys: list[X25519SecretKey]) -> list[Recipient]:
    return [
        Recipient(device=DeviceId(bytes([n]) * 32), prekey_id=1, prekey=key.public)
        for n, key in enumerate(prekeys)
    ]


def _wraps(recipients: list[Recipient]) -> list[bytes]:
    grant = KeyGrant.of(EpochKey.from_root(GROUP, 1, KEY), full=True)
    bundle = seal_bundle(
        make_rng("bundle"),
        group=GROUP,
        epoch=1,
        sender=DeviceId(bytes(32)),
        purpose=Purpose.ROTATION,
        recipients=recipients,
        grants=[grant],
    )
    assert isinstance(bundle, list) and isinstance(bundle[1], list)
    return [bytes(wrap[2]) for wrap in bundle[1]]  # type: ignore[index, arg-type]


def test_every_wrap_of_a_bundle_is_under_its_own_key() -> None:
    """Same bundle key, same zero nonce: equal ciphertext bodies would mean a shared key."""
    prekeys = [X25519SecretKey(make_rng(f"prekey {n}")(32)) for n in range(8)]
    bodies = [wrap[:-16] for wrap in _wraps(_recipients(prekeys))]
    assert len(set(bodies)) == len(bodies)


def test_a_prekey_listed_for_two_recipients_shares_one_wrap_key() -> None:
    """The documented limit (docs/security.md, "Nonces"): the wrap key depends on the
    ephemeral and the prekey, not on the recipient, so two recipients certifying the same
    prekey get the same key and zero nonce; the bodies are equal, the tags differ (the AD
    names the recipient). The holder of the copied public prekey learns no key from it."""
    shared = X25519SecretKey(make_rng("victim prekey")(32))
    first, second = _wraps(_recipients([shared, shared]))
    assert first[:-16] == second[:-16] and first[-16:] != second[-16:]
