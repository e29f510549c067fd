"""Ed25519 edge cases as known-answer vectors (issue 13): S + L, small-order A and R.

``tests/vectors/ed25519_edge_cases.json`` is made by ``tests/vectors/make_ed25519_vectors.py``
in pure Python (no libsodium). Every case marked invalid passes a lenient reference verifier,
so only the verifier's *policy* can refuse it. The policy microsync relies on is libsodium's
(PyNaCl's ``crypto_sign_open``): ``S < L``, canonical ``A`` and ``R`` of large order, the
cofactorless equation. These tests run every case through :meth:`VerifyKey.verify` (the one
verify function entries, certificates, snapshots and announcements use), then through the
entry and certificate paths themselves, where a malleable signature would be a real attack: a
second valid signature gives a second entry id for the same header, which looks like a fork
by the honest device.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from microsync.crypto import SigningKey, VerifyKey, labels
from microsync.errors import BadSignature
from microsync.feed import GroupId, Header, body_hash, ingest, parse_entry, sign_entry
from microsync.feed.trust import add_certificate
from microsync.identity import DeviceCertificate, DeviceId, PersonId
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity
from tests.vectors import make_ed25519_vectors as ref

VECTORS = Path(__file__).parent / "vectors" / "ed25519_edge_cases.json"
DATA: dict[str, Any] = json.loads(VECTORS.read_text())
CASES: list[dict[str, Any]] = DATA["cases"]
NOW = 1_700_000_000_000
GROUP = GroupId(bytes(range(32)))


def _case_bytes(case: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    return (
        bytes.fromhex(case["public"]),
        bytes.fromhex(case["message"]),
        bytes.fromhex(case["signature"]),
    )


def test_the_generator_reproduces_the_file() -> None:
    assert ref.vectors() == DATA


def test_the_small_order_points_are_the_published_eight() -> None:
    computed = ref.small_order_points()
    assert [point.hex() for point in computed] == sorted(DATA["small_order_points"])
    for encoded in computed:
        point = ref.decode_strict(encoded)
        assert point is not None and ref.order_divides_8(point)
    assert ref.encode(ref.B) == bytes.fromhex("58" + "66" * 31)  # RFC 8032's base point


def test_the_file_covers_every_kind_of_edge_case() -> None:
    names = [case["name"] for case in CASES]
    assert sum(name.startswith("S+") for name in names) == 3
    assert sum(name.startswith("small-order A ") for name in names) == 14 + 1  # + "A and R"
    assert sum(name.startswith("small-order R ") for name in names) == 14
    assert sum(case["valid"] for case in CASES) == 3


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_verify_key_applies_the_policy(case: dict[str, Any]) -> None:
    public, message, signature = _case_bytes(case)
    label = labels.ALL_LABELS[case["label"]]
    key = VerifyKey(public)
    if case["valid"]:
        key.verify(label, message, signature)
    else:
        assert ref.verify_lenient(public, labels.frame(label) + message, signature)
        with pytest.raises(BadSignature):
            key.verify(label, message, signature)


@pytest.mark.parametrize("case", [c for c in CASES if c["valid"]], ids=lambda c: c["name"])
def test_signing_matches_the_reference_byte_for_byte(case: dict[str, Any]) -> None:
    public, message, signature = _case_bytes(case)
    key = SigningKey(bytes.fromhex(case["seed"]))
    assert bytes(key.public) == public
    assert key.sign(labels.ALL_LABELS[case["label"]], message) == signature


def _malleated(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:], "little")
    return signature[:32] + (s + ref.L).to_bytes(32, "little")


def _header(device: bytes, hlc: int = NOW << 16) -> Header:
    return Header(
        group=GROUP,
        device=DeviceId(device),
        seq=1,
        prev=None,
        epoch=0,
        type=1,
        hlc=hlc,
        deps=(),
        body_hash=body_hash(b"hello"),
        body_len=5,
    )


def test_an_s_plus_l_copy_of_an_entry_cannot_frame_its_device_for_a_fork() -> None:
    """The malleated copy would have a new entry id at the same (device, seq): a fork. It is
    refused with BadSignature and leaves no trace (no fork evidence, same feed)."""
    identity = make_identity("ed25519-author")
    store = MemoryStore()
    add_certificate(store, identity.certificate)
    entry = sign_entry(identity.device_key, _header(bytes(identity.device_key.public)))
    assert ingest(store, GROUP, entry.wire, b"hello").accepted == (entry,)
    before = store.dump()
    copy = entry.header_bytes + _malleated(entry.signature)
    assert parse_entry(copy).id != entry.id
    with pytest.raises(BadSignature):
        ingest(store, GROUP, copy, b"hello")
    assert store.dump() == before
    assert store.fork_evidence(GROUP, identity.device_id) == []


def _forge(
    public: bytes, message_of: Any, label: labels.Label, order: int = 8
) -> tuple[Any, bytes]:
    """A record "signed" by the small-order key ``public`` with no secret: ``message_of(n)``
    is ground until ``k`` is a multiple of ``order``; then ``R = [r]B, S = r`` verifies
    (cofactorless) for a verifier without the small-order check."""
    r = 1234567
    r_bytes = ref.encode(ref.multiply(r, ref.B))
    for attempt in range(10_000):
        record, message = message_of(attempt)
        full = labels.frame(label) + message
        if ref.sha512_int(r_bytes, public, full) % ref.L % order == 0:
            signature = r_bytes + r.to_bytes(32, "little")
            assert ref.verify_lenient(public, full, signature)
            return record, signature
    raise AssertionError("no message found")  # pragma: no cover - 1 in 8 per attempt


SMALL_A = bytes.fromhex(ref.SMALL_ORDER_CANONICAL[4])  # order 8


def test_an_entry_by_a_small_order_device_key_is_refused() -> None:
    def message_of(attempt: int) -> tuple[Header, bytes]:
        header = _header(SMALL_A, hlc=(NOW << 16) + attempt)
        return header, header.to_bytes()

    header, signature = _forge(SMALL_A, message_of, labels.ENTRY_SIGNATURE)
    entry = parse_entry(header.to_bytes() + signature)
    with pytest.raises(BadSignature):
        entry.verify_signature()


def test_a_certificate_by_a_small_order_person_key_is_refused() -> None:
    device = make_identity("ed25519-device").device_id

    def message_of(attempt: int) -> tuple[DeviceCertificate, bytes]:
        unsigned = DeviceCertificate(
            person=PersonId(SMALL_A),
            device=device,
            device_name="anyone's",
            issued_at=NOW + attempt,
            signature=bytes(64),
        )
        return unsigned, unsigned.signing_bytes()

    unsigned, signature = _forge(SMALL_A, message_of, labels.DEVICE_CERTIFICATE)
    forged = DeviceCertificate.from_bytes(replace(unsigned, signature=signature).to_bytes())
    with pytest.raises(BadSignature):
        forged.verify()
    with pytest.raises(BadSignature):
        add_certificate(MemoryStore(), forged)


def test_an_s_plus_l_certificate_is_refused() -> None:
    certificate = make_identity("ed25519-cert").certificate
    certificate.verify()
    copy = replace(certificate, signature=_malleated(certificate.signature))
    with pytest.raises(BadSignature):
        DeviceCertificate.from_bytes(copy.to_bytes()).verify()
