"""Epoch keys, key wraps and content encryption (microsync.group.keys): round trips, what each
wrap and body is bound to, tampering, low-order keys, and pinned known-answer bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.crypto import SymmetricKey, X25519SecretKey, labelled_hash, labels
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import GroupId
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    commitment,
    decrypt_content,
    discovery_tag,
    encrypt_content,
    open_bundle,
    rendezvous_id,
    seal_bundle,
)
from microsync.identity import DeviceId
from tests.conftest import make_rng

GROUP = GroupId(bytes(range(32)))
OTHER_GROUP = GroupId(bytes(range(1, 33)))
SENDER = DeviceId(b"\x51" * 32)


def counter_rng(start: int = 0) -> Callable[[int], bytes]:
    """Bytes start, start+1, ... (mod 256), continuing across calls: fully predictable."""
    state = [start]

    def rng(n: int) -> bytes:
        out = bytes((state[0] + i) % 256 for i in range(n))
        state[0] += n
        return out

    return rng


class Device:
    """A recipient device: an id and one signed prekey (id 1)."""

    def __init__(self, tag: int) -> None:
        self.id = DeviceId(bytes([tag]) * 32)
        self.prekey = X25519SecretKey(bytes([tag, *range(31)]))

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.id, 1, self.prekey.public)

    @property
    def prekeys(self) -> dict[int, X25519SecretKey]:
        return {1: self.prekey}


ALICE, BOB, CAROL, MALLORY = Device(0xA1), Device(0xB2), Device(0xC3), Device(0xD4)


def epoch(number: int = 3, group: GroupId = GROUP, seed: int = 7) -> EpochKey:
    return EpochKey.from_root(group, number, bytes([seed]) * 32)


def seal(
    recipients: list[Device],
    grants: list[KeyGrant],
    *,
    rng: Callable[[int], bytes] | None = None,
    epoch_number: int = 3,
    purpose: Purpose = Purpose.ROTATION,
) -> encoding.Value:
    return seal_bundle(
        rng or make_rng("bundle"),
        group=GROUP,
        epoch=epoch_number,
        sender=SENDER,
        purpose=purpose,
        recipients=[d.recipient for d in recipients],
        grants=grants,
    )


def open_as(device: Device, bundle: encoding.Value, **changes: object) -> list[KeyGrant] | None:
    args: dict[str, object] = {
        "group": GROUP,
        "epoch": 3,
        "sender": SENDER,
        "purpose": Purpose.ROTATION,
        "me": device.id,
        "prekeys": device.prekeys,
    }
    args.update(changes)
    return open_bundle(bundle, **args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ bundles


def test_every_recipient_opens_the_same_grants() -> None:
    grants = [KeyGrant.of(epoch(3), True), KeyGrant.of(epoch(2, seed=9), False)]
    bundle = seal([ALICE, BOB, CAROL], grants)
    for device in (ALICE, BOB, CAROL):
        assert open_as(device, bundle) == grants
    opened = [g.open(GROUP) for g in grants]
    assert opened[0] == epoch(3)
    assert opened[1] == epoch(2, seed=9).control_only()
    assert opened[1].content is None and opened[0].content is not None


def test_a_wrap_opens_only_for_its_recipient() -> None:
    bundle = seal([ALICE, BOB], [KeyGrant.of(epoch(), True)])
    assert open_as(MALLORY, bundle) is None
    # holding Alice's id without her prekey secret does not help
    with pytest.raises(DecryptionError):
        open_as(MALLORY, bundle, me=ALICE.id)
    # nor does holding another prekey id
    with pytest.raises(DecryptionError):
        open_as(ALICE, bundle, prekeys={2: ALICE.prekey})


@pytest.mark.parametrize(
    "change",
    [
        {"group": OTHER_GROUP},
        {"epoch": 4},
        {"epoch": 2},
        {"sender": DeviceId(b"\x52" * 32)},
        {"purpose": Purpose.HISTORY},
        {"purpose": Purpose.KEY_RESPONSE},
    ],
    ids=["group", "next-epoch", "previous-epoch", "sender", "history", "key-response"],
)
def test_a_bundle_moved_to_another_context_does_not_open(change: dict[str, object]) -> None:
    bundle = seal([ALICE, BOB], [KeyGrant.of(epoch(), True)])
    for device in (ALICE, BOB):
        with pytest.raises(DecryptionError):
            open_as(device, bundle, **change)


def test_parts_spliced_from_another_bundle_do_not_open() -> None:
    first = seal([ALICE], [KeyGrant.of(epoch(), True)], rng=make_rng("one"))
    second = seal([ALICE], [KeyGrant.of(epoch(seed=8), True)], rng=make_rng("two"))
    assert isinstance(first, list) and isinstance(second, list)
    with pytest.raises(DecryptionError):  # first's wrap, second's payload
        open_as(ALICE, [first[0], first[1], second[2]])
    # second's wraps are tagged for second's eph: under first's eph none is for Alice
    assert open_as(ALICE, [first[0], second[1], first[2]]) is None


def test_every_flipped_bit_of_a_bundle_is_refused() -> None:
    """Each wrap is separate (the entry signature covers the body as a whole), so a flip in
    Bob's wrap leaves Alice's intact: every flip must stop at least one recipient, and no
    recipient may ever open anything but the original grants."""
    grants = [KeyGrant.of(epoch(), True)]
    wire = encoding.encode(seal([ALICE, BOB], grants))
    for bit in range(len(wire) * 8):
        mutated = bytearray(wire)
        mutated[bit // 8] ^= 1 << (bit % 8)
        opened = []
        for device in (ALICE, BOB):
            try:
                outcome = open_as(device, encoding.decode(bytes(mutated), max_size=1 << 16))
            except (DecryptionError, DecodeError):
                continue
            assert outcome in (None, grants), f"bit {bit} changed what {device.id[:1]!r} got"
            opened.append(outcome is not None)
        assert not all(opened) or len(opened) < 2, f"bit {bit} changed and both still opened"


# X25519 points of small order (and non-canonical encodings of them): a DH with any of them
# gives an all-zero or attacker-known secret.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p[:4].hex())
def test_a_low_order_ephemeral_key_is_refused(point: bytes) -> None:
    bundle = seal([ALICE], [KeyGrant.of(epoch(), True)])
    assert isinstance(bundle, list)
    # a forger who picks the eph also picks the tag that routes the wrap to Alice
    tag = labelled_hash(labels.KEY_WRAP_TAG, point, ALICE.id)[:8]
    [[_, prekey_id, wrapped]] = bundle[1]  # type: ignore[misc]
    forged = [point, [[tag, prekey_id, wrapped]], bundle[2]]
    with pytest.raises(DecryptionError):
        open_as(ALICE, forged)


def test_keygrant_checks_a_full_key_against_its_commitment() -> None:
    real = KeyGrant.of(epoch(), True)
    assert real.open(GROUP) == epoch()
    swapped = KeyGrant(real.number, real.commitment, b"\x99" * 32, True)
    with pytest.raises(DecryptionError):
        swapped.open(GROUP)
    renumbered = KeyGrant(real.number + 1, real.commitment, real.key, True)
    with pytest.raises(DecryptionError):
        renumbered.open(GROUP)
    with pytest.raises(DecryptionError):
        real.open(OTHER_GROUP)
    with pytest.raises(ValueError):
        KeyGrant.of(epoch().control_only(), True)


def test_keygrant_checks_a_control_only_key_against_its_commitment() -> None:
    real = KeyGrant.of(epoch(), False)
    opened = real.open(GROUP)
    assert opened == epoch().control_only() and opened.root is None
    forged = [
        KeyGrant(real.number, real.commitment, b"\x99" * 32, False, real.check),  # other key
        KeyGrant(real.number, real.commitment, real.key, False, b"\x99" * 32),  # other check
        KeyGrant(real.number + 1, real.commitment, real.key, False, real.check),
        KeyGrant(real.number, epoch(seed=8).commitment, real.key, False, real.check),
    ]
    for grant in forged:
        with pytest.raises(DecryptionError):
            grant.open(GROUP)
    with pytest.raises(DecryptionError):
        real.open(OTHER_GROUP)


def test_keygrant_value_round_trip_and_strict_decoding() -> None:
    for grant in (KeyGrant.of(epoch(), False), KeyGrant.of(epoch(), True)):
        assert KeyGrant.from_value(grant.to_value()) == grant
    control = KeyGrant.of(epoch(), False).to_value()
    full = KeyGrant.of(epoch(), True).to_value()
    assert isinstance(control, list) and isinstance(full, list)
    for bad in (
        [3, b"x" * 32, 1, b"k" * 32, b""],  # full must be a boolean
        [3, b"x" * 31, True, b"k" * 32, b""],
        [3, b"x" * 32, True, b"k" * 32],  # the old four-field shape
        [3, b"x" * 32],
        [*full[:4], b"c" * 32],  # a check with a full key
        [*control[:4], b""],  # a control-only key without its check
        [*control[:4], b"c" * 31],
    ):
        with pytest.raises(DecodeError):
            KeyGrant.from_value(bad)


def test_commitment_binds_group_number_and_root() -> None:
    root = b"\x07" * 32
    base = commitment(GROUP, 3, root)
    assert base == epoch().commitment and len(base) == 32
    assert (
        len(
            {
                base,
                commitment(OTHER_GROUP, 3, root),
                commitment(GROUP, 4, root),
                commitment(GROUP, 3, b"\x08" * 32),
            }
        )
        == 4
    )
    assert epoch().ref == base[:16]


def test_epoch_key_repr_shows_no_secret() -> None:
    key = epoch()
    assert key.root is not None
    text = repr(key) + repr(key.control) + repr(key.content)
    for secret in (key.root, key.control.secret_bytes()):
        assert secret.hex() not in text and secret[:8].hex() not in text


# ------------------------------------------------------------------------ content bodies

CONTEXT: dict[str, object] = {"group": GROUP, "epoch": 3, "device": SENDER, "seq": 5, "type": 100}


def encrypt(plaintext: bytes, key: EpochKey | None = None, rng_start: int = 0) -> bytes:
    key = key or epoch()
    assert key.content is not None
    return encrypt_content(
        counter_rng(rng_start),
        key.content,
        key.ref,
        plaintext,
        **CONTEXT,  # type: ignore[arg-type]
    )


def decrypt(body: bytes, key: SymmetricKey | None = None, **changes: object) -> bytes:
    content = key or epoch().content
    assert content is not None
    return decrypt_content(content, body, **{**CONTEXT, **changes})  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2048), st.integers(0, 255))
def test_content_round_trip(plaintext: bytes, start: int) -> None:
    body = encrypt(plaintext, rng_start=start)
    assert body[:16] == epoch().ref
    assert len(body) == 16 + 24 + len(plaintext) + 16
    assert decrypt(body) == plaintext


@pytest.mark.parametrize(
    "change",
    [
        {"group": OTHER_GROUP},
        {"epoch": 4},
        {"device": DeviceId(b"\x52" * 32)},
        {"seq": 6},
        {"type": 101},
    ],
    ids=["group", "epoch", "device", "seq", "type"],
)
def test_content_is_bound_to_its_entry(change: dict[str, object]) -> None:
    body = encrypt(b"hello")
    with pytest.raises(DecryptionError):
        decrypt(body, **change)


def test_content_does_not_open_under_another_key_or_with_another_ref() -> None:
    body = encrypt(b"hello")
    other = epoch(seed=8)
    with pytest.raises(DecryptionError):
        decrypt(body, key=other.content)
    with pytest.raises(DecryptionError):
        decrypt(body, key=epoch().control)  # the control key never opens content
    with pytest.raises(DecryptionError):
        decrypt(other.ref + body[16:])  # the ref is authenticated too
    for short in (b"", body[:16], body[: 56 - 1]):
        with pytest.raises(DecryptionError):
            decrypt(short)


def test_every_flipped_bit_of_a_body_is_refused() -> None:
    body = encrypt(b"a short secret")
    for bit in range(len(body) * 8):
        mutated = bytearray(body)
        mutated[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionError):
            decrypt(bytes(mutated))


def test_routing_values_change_with_epoch_and_bucket() -> None:
    first, rotated = epoch(3), epoch(4, seed=8)
    tags = {discovery_tag(k, b) for k in (first, rotated) for b in (0, 1, 2)}
    ids = {rendezvous_id(k, b) for k in (first, rotated) for b in (0, 1, 2)}
    assert len(tags) == 6 and len(ids) == 6
    assert all(len(t) == 8 for t in tags) and all(len(i) == 32 for i in ids)
    # deterministic, and the same for a member who holds only the control key
    assert discovery_tag(first, 1) == discovery_tag(first.control_only(), 1)
    assert rendezvous_id(first, 1) == rendezvous_id(first.control_only(), 1)
    assert discovery_tag(first, 1) != rendezvous_id(first, 1)[:8]


# ------------------------------------------------------------------------ known answers

KAT_BUNDLE = (
    "8358208f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f8283481ffc4589691c"
    "c48f0158305234cfa1c505fb1fc2fbe50b3a3029d7ecbcab6eea3bf36a934fce86e6ffd991a37d9e9bf1e76f"
    "cb11a1a94d348d91b6834876064c5220afbb300158309933e8a33e1aec95553a505c359b21febad160cc08fb"
    "0fb01b16c4265d464ff8bf45f0782d37a3db23b4b81b938c044a58c2ef7f2b6a04f33ce366f94c5dbc1978b4"
    "62a89158a3208f9901c63e2233469c9752e6ebd68f41d1b7f5d211fc06227fe8318979f9e50dfcda1bbbd6c8"
    "e7a44cd8650a4710e6b8d0d438b3ae52972901e4f11e34c65a46b2b40a57f3ad611c8c4d0b5036d733b38e42"
    "ec770f25921e93cb208e16afa0ce31ef21de4715701eee6e2a6f10bd89a4b1dc6ce3219c8016a205b8ef411f"
    "8d23a50bd2982991d4e3d06e0604956129a0b775969fc7448d1ff8c76afb2e495e654fd21c0a792a88e986e6"
    "f703"
)
KAT_BODY = (
    "fc0a34593c06620c3a037279332bc83b404142434445464748494a4b4c4d4e4f5051525354555657ac3ab3cf"
    "2b476febc729fcf56ce1ca18b86251911f64291b17a20777"
)
KAT_COMMITMENT = "fc0a34593c06620c3a037279332bc83bf0a1c740f8b35e8d2e7b73a739689909"


def test_commitment_follows_the_spec() -> None:
    """The commitment recomputed with hashlib alone, from docs/security.md: control key and
    content check, each from the root by keyed BLAKE2b-256 / BLAKE2b-256 over framed labels."""

    def framed(label: bytes) -> bytes:
        return bytes((len(label),)) + label

    root, number = b"\x07" * 32, (3).to_bytes(8, "big")
    control = hashlib.blake2b(
        framed(b"microsync/v1/epoch-control-key"), key=root, digest_size=32
    ).digest()
    check = hashlib.blake2b(
        framed(b"microsync/v1/epoch-content-check") + GROUP + number + root, digest_size=32
    ).digest()
    expected = hashlib.blake2b(
        framed(b"microsync/v2/epoch-commitment") + GROUP + number + control + check,
        digest_size=32,
    ).digest()
    assert epoch().commitment == expected
    assert expected.hex() == KAT_COMMITMENT
    assert epoch().control.secret_bytes() == control and epoch().check == check


def kat_bundle() -> bytes:
    grants = [KeyGrant.of(epoch(3), True), KeyGrant.of(epoch(2, seed=9), False)]
    return encoding.encode(seal([ALICE, BOB], grants, rng=counter_rng()))


def test_known_answer_bundle() -> None:
    wire = kat_bundle()
    assert wire.hex() == KAT_BUNDLE
    assert open_as(BOB, encoding.decode(wire, max_size=4096)) is not None


def test_known_answer_body() -> None:
    body = encrypt(b"known answer", rng_start=0x40)
    assert body.hex() == KAT_BODY
    assert epoch().commitment.hex() == KAT_COMMITMENT
    assert decrypt(bytes.fromhex(KAT_BODY)) == b"known answer"
