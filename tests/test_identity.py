"""Persons, devices and their signed records (DESIGN 2).

The laws: every record survives issue -> verify -> to_bytes -> from_bytes unchanged; any
single-bit change is refused by the decoder or by the signature check; a signature made for one
record type never verifies as another; a restored identity is the same person on a NEW device.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.crypto import SigningKey, X25519SecretKey, fingerprint, labels, words_from_seed
from microsync.crypto.labels import frame
from microsync.errors import BadSignature, DecodeError, UnknownVersion
from microsync.identity import (
    MAX_NAME_LENGTH,
    MAX_RECORD_SIZE,
    TRANSPORT_KEY_LIFETIME,
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
    RecoveryCertificate,
    TransportCertificate,
    keys_from_root,
)

NOW = 1_700_000_000_000
MAX_TIME = 2**63 - 1

Record = DeviceCertificate | DeviceRevocation | TransportCertificate | PrekeyCertificate
RECORD_TYPES: list[type[Record]] = [
    DeviceCertificate,
    DeviceRevocation,
    TransportCertificate,
    PrekeyCertificate,
]


def make_rng(seed: str) -> Callable[[int], bytes]:
    """A deterministic byte source: SHAKE-256 of ``seed`` and a counter."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return hashlib.shake_256(seed.encode() + next(counter).to_bytes(8, "big")).digest(n)

    return rng


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


PERSON = SigningKey(make_rng("person")(32))
OTHER_PERSON = SigningKey(make_rng("other person")(32))
DEVICE = SigningKey(make_rng("device")(32))
OTHER_DEVICE = SigningKey(make_rng("other device")(32))
TRANSPORT = X25519SecretKey(make_rng("transport")(32))
PREKEY = X25519SecretKey(make_rng("prekey")(32))


def sample_records(now: int = NOW) -> dict[type[Record], Record]:
    return {
        DeviceCertificate: DeviceCertificate.issue(PERSON, DEVICE.public, "phone", now),
        DeviceRevocation: DeviceRevocation.issue(PERSON, DeviceId(bytes(DEVICE.public)), now),
        TransportCertificate: TransportCertificate.issue(
            DEVICE, TRANSPORT.public, now, TRANSPORT_KEY_LIFETIME
        ),
        PrekeyCertificate: PrekeyCertificate.issue(DEVICE, 7, PREKEY.public, now),
    }


RECORDS = sample_records()


def fields_of(record: Record) -> list[Any]:
    """The record's wire array ``[version, *fields, signature]`` as plain values."""
    items = encoding.decode(record.to_bytes(), max_size=MAX_RECORD_SIZE)
    assert isinstance(items, list)
    return items


def assert_rejected(kind: type[Record], data: bytes) -> None:
    """``data`` is refused: by the decoder, or else by the signature check."""
    try:
        decoded = kind.from_bytes(data)
    except (DecodeError, UnknownVersion):
        return
    with pytest.raises(BadSignature):
        decoded.verify()


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_issue_verify_round_trip(kind: type[Record]) -> None:
    record = RECORDS[kind]
    record.verify()
    data = record.to_bytes()
    decoded = kind.from_bytes(data)
    assert decoded == record
    assert decoded.to_bytes() == data
    decoded.verify()


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_signature_is_standard_ed25519_over_label_and_signing_bytes(kind: type[Record]) -> None:
    record = RECORDS[kind]
    items = fields_of(record)
    assert items[0] == 1
    assert record.signing_bytes() == encoding.encode(items[:-1])
    assert items[-1] == record.signature
    signer = PERSON if kind in (DeviceCertificate, DeviceRevocation) else DEVICE
    Ed25519PublicKey.from_public_bytes(bytes(signer.public)).verify(
        record.signature, frame(kind.LABEL) + record.signing_bytes()
    )


def test_record_fields_say_what_was_issued() -> None:
    cert = RECORDS[DeviceCertificate]
    assert isinstance(cert, DeviceCertificate)
    assert (cert.person, cert.device) == (bytes(PERSON.public), bytes(DEVICE.public))
    assert (cert.device_name, cert.issued_at) == ("phone", NOW)
    assert fields_of(cert)[1:-1] == [cert.person, cert.device, "phone", NOW]

    revocation = RECORDS[DeviceRevocation]
    assert isinstance(revocation, DeviceRevocation)
    assert fields_of(revocation)[1:-1] == [bytes(PERSON.public), bytes(DEVICE.public), NOW]

    transport = RECORDS[TransportCertificate]
    assert isinstance(transport, TransportCertificate)
    assert transport.key == TRANSPORT.public
    assert transport.expires_at == NOW + TRANSPORT_KEY_LIFETIME
    assert fields_of(transport)[1:-1] == [
        bytes(DEVICE.public),
        bytes(TRANSPORT.public),
        NOW,
        NOW + TRANSPORT_KEY_LIFETIME,
    ]

    prekey = RECORDS[PrekeyCertificate]
    assert isinstance(prekey, PrekeyCertificate)
    assert fields_of(prekey)[1:-1] == [bytes(DEVICE.public), 7, bytes(PREKEY.public), NOW]


def test_the_label_of_each_record_type_is_its_own() -> None:
    assert DeviceCertificate.LABEL == labels.DEVICE_CERTIFICATE
    assert DeviceRevocation.LABEL == labels.DEVICE_REVOCATION
    assert TransportCertificate.LABEL == labels.TRANSPORT_KEY_CERTIFICATE
    assert PrekeyCertificate.LABEL == labels.PREKEY_CERTIFICATE
    assert len({kind.LABEL for kind in RECORD_TYPES}) == len(RECORD_TYPES)


# --------------------------------------------------------------------------- strategies

times = st.integers(0, MAX_TIME)
names = st.text(min_size=1, max_size=MAX_NAME_LENGTH)
key_seeds = st.binary(min_size=32, max_size=32)


@st.composite
def records(draw: st.DrawFn) -> Record:
    """Any record of any type, with arbitrary valid field values."""
    kind = draw(st.sampled_from(RECORD_TYPES))
    signer = SigningKey(draw(key_seeds))
    x25519 = X25519SecretKey(draw(key_seeds)).public
    now = draw(times)
    if kind is DeviceCertificate:
        return DeviceCertificate.issue(signer, SigningKey(draw(key_seeds)).public, draw(names), now)
    if kind is DeviceRevocation:
        return DeviceRevocation.issue(signer, DeviceId(draw(key_seeds)), now)
    if kind is TransportCertificate:
        return TransportCertificate.issue(signer, x25519, now, draw(st.integers(0, MAX_TIME - now)))
    return PrekeyCertificate.issue(signer, draw(st.integers(0, MAX_TIME)), x25519, now)


@settings(max_examples=200, deadline=None)
@given(records())
def test_any_record_round_trips(record: Record) -> None:
    record.verify()
    data = record.to_bytes()
    assert len(data) <= MAX_RECORD_SIZE
    decoded = type(record).from_bytes(data)
    assert decoded == record
    decoded.verify()


# --------------------------------------------------------------------------- tampering


@settings(max_examples=300, deadline=None)
@given(records(), st.data())
def test_any_single_bit_flip_is_refused(record: Record, data: st.DataObject) -> None:
    original = record.to_bytes()
    bit = data.draw(st.integers(0, len(original) * 8 - 1))
    assert_rejected(type(record), flip(original, bit))


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_every_single_bit_flip_is_refused(kind: type[Record]) -> None:
    original = RECORDS[kind].to_bytes()
    by_decoder = 0
    for bit in range(len(original) * 8):
        flipped = flip(original, bit)
        try:
            decoded = kind.from_bytes(flipped)
        except (DecodeError, UnknownVersion):
            by_decoder += 1
            continue
        with pytest.raises(BadSignature):
            decoded.verify()
    # Both guards are exercised: some flips break the encoding, most only the signature.
    assert 0 < by_decoder < len(original) * 8


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_every_truncation_and_extension_is_refused(kind: type[Record]) -> None:
    original = RECORDS[kind].to_bytes()
    for end in range(len(original)):
        with pytest.raises(DecodeError):
            kind.from_bytes(original[:end])
    with pytest.raises(DecodeError):
        kind.from_bytes(original + b"\x00")


def test_a_record_signed_by_the_wrong_key_fails() -> None:
    # Signed by OTHER_PERSON but claiming to come from PERSON.
    forged = DeviceCertificate.issue(OTHER_PERSON, DEVICE.public, "phone", NOW)
    forged.verify()
    with pytest.raises(BadSignature):
        replace(forged, person=PersonId(bytes(PERSON.public))).verify()
    revocation = DeviceRevocation.issue(OTHER_PERSON, DeviceId(bytes(DEVICE.public)), NOW)
    with pytest.raises(BadSignature):
        replace(revocation, person=PersonId(bytes(PERSON.public))).verify()
    transport = TransportCertificate.issue(OTHER_DEVICE, TRANSPORT.public, NOW, 1000)
    with pytest.raises(BadSignature):
        replace(transport, device=DeviceId(bytes(DEVICE.public))).verify()
    prekey = PrekeyCertificate.issue(OTHER_DEVICE, 1, PREKEY.public, NOW)
    with pytest.raises(BadSignature):
        replace(prekey, device=DeviceId(bytes(DEVICE.public))).verify()


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_a_changed_field_breaks_the_signature(kind: type[Record]) -> None:
    record = RECORDS[kind]
    for name in ("issued_at", "revoked_at"):
        if hasattr(record, name):
            with pytest.raises(BadSignature):
                replace(record, **{name: getattr(record, name) + 1}).verify()
    if isinstance(record, DeviceCertificate):
        with pytest.raises(BadSignature):
            replace(record, device_name="phone ").verify()
    if isinstance(record, TransportCertificate | PrekeyCertificate):
        with pytest.raises(BadSignature):
            replace(record, key=X25519SecretKey(make_rng("evil")(32)).public).verify()
    if isinstance(record, PrekeyCertificate):
        with pytest.raises(BadSignature):
            replace(record, prekey_id=8).verify()


def test_a_device_certificate_signature_cannot_be_replayed_as_a_revocation() -> None:
    cert = RECORDS[DeviceCertificate]
    assert isinstance(cert, DeviceCertificate)
    replayed = DeviceRevocation(
        person=cert.person, device=cert.device, revoked_at=cert.issued_at, signature=cert.signature
    )
    with pytest.raises(BadSignature):
        replayed.verify()
    # Even a signature over the revocation's exact bytes fails if it was made under the
    # certificate label: only the label separates the two.
    revocation = DeviceRevocation.issue(PERSON, cert.device, NOW)
    under_cert_label = PERSON.sign(labels.DEVICE_CERTIFICATE, revocation.signing_bytes())
    with pytest.raises(BadSignature):
        replace(revocation, signature=under_cert_label).verify()
    under_own_label = PERSON.sign(labels.DEVICE_REVOCATION, revocation.signing_bytes())
    replace(revocation, signature=under_own_label).verify()


def test_device_signed_records_cannot_be_replayed_as_each_other() -> None:
    transport = RECORDS[TransportCertificate]
    prekey = RECORDS[PrekeyCertificate]
    swapped_t = DEVICE.sign(labels.PREKEY_CERTIFICATE, transport.signing_bytes())
    swapped_p = DEVICE.sign(labels.TRANSPORT_KEY_CERTIFICATE, prekey.signing_bytes())
    with pytest.raises(BadSignature):
        replace(transport, signature=swapped_t).verify()
    with pytest.raises(BadSignature):
        replace(prekey, signature=swapped_p).verify()


@pytest.mark.parametrize(
    ("source", "target"),
    list(itertools.permutations(RECORD_TYPES, 2)),
    ids=lambda k: k.__name__,
)
def test_bytes_of_one_record_type_are_not_another(
    source: type[Record], target: type[Record]
) -> None:
    assert_rejected(target, RECORDS[source].to_bytes())


# --------------------------------------------------------------------------- strict decoding


@pytest.mark.parametrize("version", [0, 2, 3, 255, 2**32, MAX_TIME])
@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda k: k.__name__)
def test_other_versions_raise_unknown_version(kind: type[Record], version: int) -> None:
    items = fields_of(RECORDS[kind])
    with pytest.raises(UnknownVersion):
        kind.from_bytes(encoding.encode([version, *items[1:]]))
    # A future version may have other fields: still UnknownVersion, not a decode error.
    with pytest.raises(UnknownVersion):
        kind.from_bytes(encoding.encode([version, "future field", items[-1]]))


@pytest.mark.parametrize("version", ["1", b"\x01", True, 1.0, None, -1])
def test_a_malformed_version_is_a_decode_error(version: Any) -> None:
    items = fields_of(RECORDS[DeviceCertificate])
    with pytest.raises(DecodeError):
        DeviceCertificate.from_bytes(encoding.encode([version, *items[1:]]))


def malformed_device_certificates() -> dict[str, list[Any]]:
    version, person, device, name, issued, signature = fields_of(RECORDS[DeviceCertificate])
    return {
        "not an array": {"person": person},  # type: ignore[dict-item]
        "empty": [],
        "version only": [version],
        "no fields": [version, signature],
        "missing field": [version, person, device, name, signature],
        "extra field": [version, person, device, name, issued, 0, signature],
        "short person": [version, person[:31], device, name, issued, signature],
        "long device": [version, person, device + b"\x00", name, issued, signature],
        "person as text": [version, person.hex(), device, name, issued, signature],
        "name as bytes": [version, person, device, name.encode(), issued, signature],
        "name too long": [version, person, device, "x" * 65, issued, signature],
        "negative time": [version, person, device, name, -1, signature],
        "time over 2**63-1": [version, person, device, name, 2**63, signature],
        "bool time": [version, person, device, name, True, signature],
        "float time": [version, person, device, name, float(issued), signature],
        "short signature": [version, person, device, name, issued, signature[:63]],
        "long signature": [version, person, device, name, issued, signature + b"\x00"],
        "missing signature": [version, person, device, name, issued],
        "oversize": [version, person, device, name, issued, b"x" * MAX_RECORD_SIZE],
    }


MALFORMED = malformed_device_certificates()


@pytest.mark.parametrize("items", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_device_certificates_are_decode_errors(items: Any) -> None:
    with pytest.raises(DecodeError):
        DeviceCertificate.from_bytes(encoding.encode(items))


def test_non_canonical_encoding_is_a_decode_error() -> None:
    data = RECORDS[DeviceRevocation].to_bytes()
    assert data[0] == 0x85  # an array of 5 items
    with pytest.raises(DecodeError):
        DeviceRevocation.from_bytes(b"\x98\x05" + data[1:])  # the same array, long header
    with pytest.raises(DecodeError):
        DeviceRevocation.from_bytes(b"\x9f" + data[1:] + b"\xff")  # indefinite length


@pytest.mark.parametrize(
    "name", ["a", "x" * MAX_NAME_LENGTH, "\U0001f4f1" * MAX_NAME_LENGTH, "caf\u00e9 \u6c34"]
)
def test_device_names_up_to_the_limit_round_trip(name: str) -> None:
    cert = DeviceCertificate.issue(PERSON, DEVICE.public, name, NOW)
    assert DeviceCertificate.from_bytes(cert.to_bytes()) == cert


# --------------------------------------------------------------------------- LocalIdentity


def new_identity(name: str = "laptop", seed: str = "identity") -> LocalIdentity:
    return LocalIdentity.create(name, make_rng(seed), NOW)


def assert_consistent(identity: LocalIdentity, name: str, now: int) -> None:
    assert identity.name == name
    assert identity.person_key is not None
    assert identity.person_id == bytes(identity.person_key.public)
    assert identity.device_id == bytes(identity.device_key.public)
    assert bytes(identity.device_id) != bytes(identity.person_id)
    identity.certificate.verify()
    identity.transport_certificate.verify()
    identity.prekey_certificate.verify()
    assert identity.certificate.person == identity.person_id
    assert identity.certificate.device == identity.device_id
    assert identity.certificate.issued_at == now
    assert identity.transport_certificate.device == identity.device_id
    assert identity.transport_certificate.key == identity.transport_key.public
    assert identity.transport_certificate.expires_at == now + TRANSPORT_KEY_LIFETIME
    assert identity.prekey_certificate.device == identity.device_id
    assert identity.prekey_certificate.key == identity.prekey.public
    assert identity.prekey_certificate.prekey_id == 1
    assert identity.transport_key.public != identity.prekey.public


def assert_same_identity(a: LocalIdentity, b: LocalIdentity) -> None:
    # Secret keys deliberately have no __eq__; compare what they are made of.
    assert a.to_bytes() == b.to_bytes()
    assert a.person_id == b.person_id
    assert a.device_id == b.device_id
    assert (a.person_key is None) == (b.person_key is None)
    if a.person_key is not None and b.person_key is not None:
        assert a.person_key.secret_bytes() == b.person_key.secret_bytes()
    assert a.device_key.secret_bytes() == b.device_key.secret_bytes()
    assert a.transport_key.secret_bytes() == b.transport_key.secret_bytes()
    assert a.prekey.secret_bytes() == b.prekey.secret_bytes()
    assert a.certificate == b.certificate
    assert a.transport_certificate == b.transport_certificate
    assert a.prekey_certificate == b.prekey_certificate


def test_create_makes_a_consistent_identity() -> None:
    assert_consistent(new_identity(), "laptop", NOW)


def test_create_draws_randomness_only_from_its_rng() -> None:
    assert new_identity().to_bytes() == new_identity().to_bytes()
    assert new_identity().person_id != new_identity(seed="someone else").person_id


def test_identity_round_trips_through_bytes() -> None:
    identity = new_identity()
    restored = LocalIdentity.from_bytes(identity.to_bytes())
    assert_same_identity(identity, restored)
    assert_consistent(restored, "laptop", NOW)


def test_identity_without_person_key_round_trips() -> None:
    identity = replace(new_identity(), person_key=None)
    restored = LocalIdentity.from_bytes(identity.to_bytes())
    assert restored.person_key is None
    assert_same_identity(identity, restored)


def test_recovery_words_are_not_kept_by_any_device() -> None:
    """The words are the root: a stored and reloaded identity (any device, later) lacks them,
    and says that they were shown once."""
    identity = new_identity()
    assert identity.root is not None
    reloaded = LocalIdentity.from_bytes(identity.to_bytes())
    assert reloaded.root is None and reloaded.recovery_key == identity.recovery_key
    with pytest.raises(ValueError, match="shown once"):
        reloaded.recovery_words()
    root = identity.root
    assert root not in identity.to_bytes()  # not in the stored bundle
    _, recovery = keys_from_root(root)
    assert recovery.secret_bytes() not in identity.to_bytes()


def test_recovery_words_encode_the_root_of_both_keys() -> None:
    identity = new_identity()
    assert identity.person_key is not None and identity.root is not None
    words = identity.recovery_words()
    assert len(words) == 24
    assert words == words_from_seed(identity.root)
    person, recovery = keys_from_root(identity.root)
    assert person.public == identity.person_key.public
    assert identity.recovery_key == bytes(recovery.public)
    assert bytes(recovery.public) != identity.person_id


# Known answers: the all-zero root ("abandon" x 23 + "art") and the keys it stands for.
ZERO_WORDS = ["abandon"] * 23 + ["art"]
ZERO_PERSON = "a577c5d36fab299d42081911b157f9d19a3ff1926ba5109eb1208d3a7cf6c4f2"
ZERO_RECOVERY = "fa464672b18d9f376bced5fb595da97164f45a754e8b45bcc6a66071c62d7dac"


def _independent_public(root: bytes, label: bytes) -> str:
    """Ed25519 public key of seed BLAKE2b-256(key=root, len(label) || label), computed
    without microsync's crypto package."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    seed = hashlib.blake2b(bytes((len(label),)) + label, key=root, digest_size=32).digest()
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def test_words_to_keys_known_answer() -> None:
    assert words_from_seed(bytes(32)) == ZERO_WORDS
    person, recovery = keys_from_root(bytes(32))
    assert bytes(person.public).hex() == ZERO_PERSON
    assert bytes(recovery.public).hex() == ZERO_RECOVERY
    assert _independent_public(bytes(32), b"microsync/v1/root-person-key") == ZERO_PERSON
    assert _independent_public(bytes(32), b"microsync/v1/root-recovery-key") == ZERO_RECOVERY
    restored = LocalIdentity.restore(ZERO_WORDS, "paper", make_rng("kat"), NOW)
    assert restored.person_id.hex() == ZERO_PERSON
    assert restored.recovery_key is not None and restored.recovery_key.hex() == ZERO_RECOVERY


def test_restore_is_the_same_person_on_a_new_device() -> None:
    original = new_identity()
    words = original.recovery_words()
    restored = LocalIdentity.restore(words, "new laptop", make_rng("restore"), NOW + 5)
    assert_consistent(restored, "new laptop", NOW + 5)
    assert restored.person_id == original.person_id
    assert restored.recovery_key == original.recovery_key
    assert restored.recovery_words() == words
    assert restored.device_id != original.device_id
    assert restored.transport_key.public != original.transport_key.public
    assert restored.prekey.public != original.prekey.public
    # The new device is certified by the same person key.
    assert restored.certificate.person == original.person_id
    # ... and by the recovery key: a certificate of exactly this device, kept on a reload
    certificate = restored.recovery_certificate
    assert certificate is not None and original.recovery_certificate is None
    certificate.verify()
    assert certificate.recovery_key == original.recovery_key
    assert (certificate.person, certificate.device) == (restored.person_id, restored.device_id)
    reloaded = LocalIdentity.from_bytes(restored.to_bytes())
    assert reloaded.recovery_certificate == certificate and reloaded.root is None


def test_a_bundle_whose_recovery_certificate_names_another_device_is_refused() -> None:
    restored = LocalIdentity.restore(ZERO_WORDS, "paper", make_rng("a"), NOW)
    other = LocalIdentity.restore(ZERO_WORDS, "other", make_rng("b"), NOW)
    swapped = replace(restored, recovery_certificate=other.recovery_certificate)
    with pytest.raises(DecodeError, match="inconsistent"):
        LocalIdentity.from_bytes(swapped.to_bytes())


def test_an_old_nine_item_bundle_still_opens() -> None:
    items = encoding.decode(new_identity().to_bytes(), max_size=8192)
    assert isinstance(items, list) and len(items) == 11
    old = LocalIdentity.from_bytes(encoding.encode(items[:9]))
    assert old.recovery_key is None and old.recovery_certificate is None


def test_recovery_certificate_round_trips_and_checks_its_signature() -> None:
    _, recovery = keys_from_root(bytes(32))
    cert = RecoveryCertificate.issue(recovery, PersonId(bytes(32)), DeviceId(bytes(32)), NOW)
    assert RecoveryCertificate.from_bytes(cert.to_bytes()) == cert
    cert.verify()
    forged = replace(cert, device=DeviceId(b"\1" * 32))
    with pytest.raises(BadSignature):
        forged.verify()


def test_restore_tolerates_a_retyped_phrase() -> None:
    original = new_identity()
    phrase = "  " + "\n".join(word.upper() for word in original.recovery_words()) + " "
    restored = LocalIdentity.restore(phrase, "tablet", make_rng("tablet"), NOW)
    assert restored.person_id == original.person_id


def test_restore_rejects_bad_words() -> None:
    words = new_identity().recovery_words()
    with pytest.raises(DecodeError):
        LocalIdentity.restore(words[:23], "tablet", make_rng("tablet"), NOW)
    with pytest.raises(DecodeError):
        LocalIdentity.restore([*words[:23], "notaword"], "tablet", make_rng("tablet"), NOW)


@pytest.mark.parametrize("name", ["", "x" * (MAX_NAME_LENGTH + 1), "\u6c34" * 100])
def test_device_name_length_is_limited(name: str) -> None:
    with pytest.raises(ValueError):
        LocalIdentity.create(name, make_rng("n"), NOW)
    words = new_identity().recovery_words()
    with pytest.raises(ValueError):
        LocalIdentity.restore(words, name, make_rng("n"), NOW)


@pytest.mark.parametrize("name", ["a", "x" * MAX_NAME_LENGTH, "\U0001f4bb" * MAX_NAME_LENGTH])
def test_device_names_at_the_limits_are_accepted(name: str) -> None:
    identity = LocalIdentity.create(name, make_rng("n"), NOW)
    assert identity.name == name
    assert LocalIdentity.from_bytes(identity.to_bytes()).name == name


@settings(max_examples=50, deadline=None)
@given(names, st.text(min_size=1, max_size=20), st.integers(0, MAX_TIME - TRANSPORT_KEY_LIFETIME))
def test_any_identity_round_trips(name: str, seed: str, now: int) -> None:
    identity = LocalIdentity.create(name, make_rng(seed), now)
    assert_consistent(identity, name, now)
    assert_same_identity(identity, LocalIdentity.from_bytes(identity.to_bytes()))


def test_identity_bundle_other_versions_raise_unknown_version() -> None:
    items = encoding.decode(new_identity().to_bytes(), max_size=8192)
    assert isinstance(items, list)
    for version in (0, 2, 99):
        with pytest.raises(UnknownVersion):
            LocalIdentity.from_bytes(encoding.encode([version, *items[1:]]))


def test_identity_bundle_with_a_future_certificate_version_is_refused() -> None:
    items = encoding.decode(new_identity().to_bytes(), max_size=8192)
    assert isinstance(items, list)
    assert isinstance(items[4], bytes)
    cert = encoding.decode(items[4], max_size=MAX_RECORD_SIZE)
    assert isinstance(cert, list)
    items[4] = encoding.encode([2, *cert[1:]])
    with pytest.raises(UnknownVersion):
        LocalIdentity.from_bytes(encoding.encode(items))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda items: items[:8],
        lambda items: [*items, None],
        lambda items: [items[0], b"x" * 31, *items[2:]],
        lambda items: [*items[:3], None, *items[4:]],
        lambda items: [*items[:4], b"not a certificate", *items[5:]],
        lambda items: [*items[:5], "transport", *items[6:]],
        lambda items: {"identity": items[2]},
    ],
    ids=[
        "missing item",
        "extra item",
        "short person key",
        "missing device key",
        "garbage certificate",
        "text transport key",
        "not an array",
    ],
)
def test_malformed_identity_bundles_are_decode_errors(mutate: Callable[[list[Any]], Any]) -> None:
    items = encoding.decode(new_identity().to_bytes(), max_size=8192)
    assert isinstance(items, list)
    with pytest.raises(DecodeError):
        LocalIdentity.from_bytes(encoding.encode(mutate(items)))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_identity_bundle_bit_flips_raise_only_decode_errors(data: st.DataObject) -> None:
    original = new_identity().to_bytes()
    flipped = flip(original, data.draw(st.integers(0, len(original) * 8 - 1)))
    try:
        decoded = LocalIdentity.from_bytes(flipped)
    except (DecodeError, UnknownVersion):
        return
    # The bundle is not signed as a whole (it is sealed instead), so a flip inside a secret
    # key may decode; but it must decode to exactly what the flipped bytes say.
    assert decoded.to_bytes() == flipped


def test_identity_repr_names_the_person_and_device() -> None:
    identity = new_identity()
    text = repr(identity)
    assert fingerprint(identity.person_id) in text
    assert fingerprint(identity.device_id) in text
    assert "laptop" in text
