"""Persons, devices and the signed records that bind them.

Theory of operation
-------------------
A **person** is an Ed25519 key (``PersonId`` is its public key). A **device** has its own
Ed25519 key (``DeviceId``), never copied and never restored: a profile restored from recovery
words makes a new device key and has the person key certify it.

The 24 recovery words encode a 32-byte **root** that no device keeps. The person key and the
**recovery key** are derived from it (``ROOT_PERSON_KEY``, ``ROOT_RECOVERY_KEY``). Devices hold
the person key and the recovery key's public half; the root lives only in the memory of the
process that created or restored the person (:meth:`LocalIdentity.recovery_words` works there
and nowhere else). A restored device carries a :class:`RecoveryCertificate`, signed by the
recovery key while the root was in memory: the proof, which a thief holding a device's person
key cannot make, that lets another member take the person back (``docs/devices.md``).

Signed records, each a canonical CBOR array ``[version, fields..., signature]`` whose signature
covers ``label || canonical array without the signature``:

=============================  ===========  ================================================
record                         signed by    binds
=============================  ===========  ================================================
:class:`DeviceCertificate`     person       device key to person, with the device's name
:class:`DeviceRevocation`      person       "this device is no longer mine"
:class:`RecoveryCertificate`   recovery     "this new device is the person's, by the words"
:class:`TransportCertificate`  device       the X25519 Noise static key, with an expiry
:class:`PrekeyCertificate`     device       a numbered X25519 prekey that epoch keys wrap to
=============================  ===========  ================================================

Records are pure values: ``issue(...)`` takes keys and ``now`` (milliseconds since the epoch),
``from_bytes`` decodes strictly, ``verify()`` checks the signature and raises
:class:`~microsync.errors.BadSignature`. Nothing here touches a clock, a disk or randomness
except through arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, NewType, Self

from microsync import encoding
from microsync.crypto import (
    Rng,
    SigningKey,
    VerifyKey,
    X25519PublicKey,
    X25519SecretKey,
    derive_key,
    fingerprint,
    labels,
    seed_from_words,
    words_from_seed,
)
from microsync.crypto.signed_record import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from microsync.crypto.signed_record import MAX_RECORD_SIZE as MAX_RECORD_SIZE
from microsync.crypto.signed_record import RECORD_VERSION as RECORD_VERSION
from microsync.crypto.signed_record import SignedRecord as _SignedRecord
from microsync.crypto.signed_record import _exactly, _signed
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError, UnknownVersion

__all__ = [
    "DeviceCertificate",
    "DeviceId",
    "DeviceRevocation",
    "LocalIdentity",
    "PersonId",
    "PrekeyCertificate",
    "RecoveryCertificate",
    "TransportCertificate",
    "keys_from_root",
]

PersonId = NewType("PersonId", bytes)
DeviceId = NewType("DeviceId", bytes)

_KEY = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceCertificate(_SignedRecord):
    """The person key's statement that ``device`` is one of its devices."""

    LABEL: ClassVar[labels.Label] = labels.DEVICE_CERTIFICATE
    person: PersonId
    device: DeviceId
    device_name: str
    issued_at: int
    signature: bytes

    @classmethod
    def issue(cls, person_key: SigningKey, device: VerifyKey, name: str, now: int) -> Self:
        unsigned = cls(
            person=PersonId(bytes(person_key.public)),
            device=DeviceId(bytes(device)),
            device_name=name,
            issued_at=now,
            signature=b"",
        )
        return _signed(person_key, unsigned)

    def _fields(self) -> list[Value]:
        return [self.person, self.device, self.device_name, self.issued_at]

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        person, device, name, issued = _exactly(fields, 4, cls.__name__)
        return cls(
            person=PersonId(expect_bytes(person, "person", _KEY)),
            device=DeviceId(expect_bytes(device, "device", _KEY)),
            device_name=expect_str(name, "device_name", MAX_NAME_LENGTH),
            issued_at=expect_int(issued, "issued_at"),
            signature=signature,
        )

    def _signer(self) -> VerifyKey:
        return VerifyKey(self.person)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRevocation(_SignedRecord):
    """The person key's statement that ``device`` must no longer be trusted."""

    LABEL: ClassVar[labels.Label] = labels.DEVICE_REVOCATION
    person: PersonId
    device: DeviceId
    revoked_at: int
    signature: bytes

    @classmethod
    def issue(cls, person_key: SigningKey, device: DeviceId, now: int) -> Self:
        unsigned = cls(
            person=PersonId(bytes(person_key.public)), device=device, revoked_at=now, signature=b""
        )
        return _signed(person_key, unsigned)

    def _fields(self) -> list[Value]:
        return [self.person, self.device, self.revoked_at]

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        person, device, revoked = _exactly(fields, 3, cls.__name__)
        return cls(
            person=PersonId(expect_bytes(person, "person", _KEY)),
            device=DeviceId(expect_bytes(device, "device", _KEY)),
            revoked_at=expect_int(revoked, "revoked_at"),
            signature=signature,
        )

    def _signer(self) -> VerifyKey:
        return VerifyKey(self.person)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportCertificate(_SignedRecord):
    """The device key's statement that ``key`` is its Noise static key until ``expires_at``."""

    LABEL: ClassVar[labels.Label] = labels.TRANSPORT_KEY_CERTIFICATE
    device: DeviceId
    key: X25519PublicKey
    issued_at: int
    expires_at: int
    signature: bytes

    @classmethod
    def issue(cls, device_key: SigningKey, key: X25519PublicKey, now: int, lifetime: int) -> Self:
        unsigned = cls(
            device=DeviceId(bytes(device_key.public)),
            key=key,
            issued_at=now,
            expires_at=now + lifetime,
            signature=b"",
        )
        return _signed(device_key, unsigned)

    def _fields(self) -> list[Value]:
        return [self.device, bytes(self.key), self.issued_at, self.expires_at]

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        device, key, issued, expires = _exactly(fields, 4, cls.__name__)
        return cls(
            device=DeviceId(expect_bytes(device, "device", _KEY)),
            key=X25519PublicKey(expect_bytes(key, "key", _KEY)),
            issued_at=expect_int(issued, "issued_at"),
            expires_at=expect_int(expires, "expires_at"),
            signature=signature,
        )

    def _signer(self) -> VerifyKey:
        return VerifyKey(self.device)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrekeyCertificate(_SignedRecord):
    """The device key's statement that prekey number ``prekey_id`` is ``key``."""

    LABEL: ClassVar[labels.Label] = labels.PREKEY_CERTIFICATE
    device: DeviceId
    prekey_id: int
    key: X25519PublicKey
    issued_at: int
    signature: bytes

    @classmethod
    def issue(cls, device_key: SigningKey, prekey_id: int, key: X25519PublicKey, now: int) -> Self:
        unsigned = cls(
            device=DeviceId(bytes(device_key.public)),
            prekey_id=prekey_id,
            key=key,
            issued_at=now,
            signature=b"",
        )
        return _signed(device_key, unsigned)

    def _fields(self) -> list[Value]:
        return [self.device, self.prekey_id, bytes(self.key), self.issued_at]

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        device, prekey_id, key, issued = _exactly(fields, 4, cls.__name__)
        return cls(
            device=DeviceId(expect_bytes(device, "device", _KEY)),
            prekey_id=expect_int(prekey_id, "prekey_id"),
            key=X25519PublicKey(expect_bytes(key, "key", _KEY)),
            issued_at=expect_int(issued, "issued_at"),
            signature=signature,
        )

    def _signer(self) -> VerifyKey:
        return VerifyKey(self.device)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCertificate(_SignedRecord):
    """The recovery key's statement that ``device`` (its id is its public key) is a device of
    ``person``: what lets another member take the person back (``rules.may_add_device``).
    Only the words can make one: no device holds the recovery secret."""

    LABEL: ClassVar[labels.Label] = labels.RECOVERY_CERTIFICATE
    recovery_key: bytes
    person: PersonId
    device: DeviceId
    issued_at: int
    signature: bytes

    @classmethod
    def issue(cls, recovery_key: SigningKey, person: PersonId, device: DeviceId, now: int) -> Self:
        unsigned = cls(
            recovery_key=bytes(recovery_key.public),
            person=person,
            device=device,
            issued_at=now,
            signature=b"",
        )
        return _signed(recovery_key, unsigned)

    def _fields(self) -> list[Value]:
        return [self.recovery_key, self.person, self.device, self.issued_at]

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        key, person, device, issued = _exactly(fields, 4, cls.__name__)
        return cls(
            recovery_key=expect_bytes(key, "recovery_key", _KEY),
            person=PersonId(expect_bytes(person, "person", _KEY)),
            device=DeviceId(expect_bytes(device, "device", _KEY)),
            issued_at=expect_int(issued, "issued_at"),
            signature=signature,
        )

    def _signer(self) -> VerifyKey:
        return VerifyKey(self.recovery_key)


def keys_from_root(root: bytes) -> tuple[SigningKey, SigningKey]:
    """The person key and the recovery key the 32-byte ``root`` (the words) stands for."""
    if len(root) != _KEY:
        raise ValueError("a root is 32 bytes")
    person = SigningKey(derive_key(labels.ROOT_PERSON_KEY, root))
    return person, SigningKey(derive_key(labels.ROOT_RECOVERY_KEY, root))


TRANSPORT_KEY_LIFETIME = 30 * 24 * 3600 * 1000  # 30 days, in milliseconds


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalIdentity:
    """Everything secret a device holds about itself, plus its public certificates.

    ``person_key`` is ``None`` on a device that may not certify other devices.
    ``recovery_key``: the public half of the person's recovery key (``None``: a person made
    before the words were a paper key, or a device linked by one). ``recovery_certificate``:
    on a device restored from the words, the recovery key's certificate of this device.
    The root (the words) is held in memory only, never stored. ``repr`` shows fingerprints only.
    """

    person_key: SigningKey | None
    person_id: PersonId
    device_key: SigningKey
    certificate: DeviceCertificate
    transport_key: X25519SecretKey
    transport_certificate: TransportCertificate
    prekey: X25519SecretKey
    prekey_certificate: PrekeyCertificate
    recovery_key: bytes | None = None
    recovery_certificate: RecoveryCertificate | None = None
    root: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def device_id(self) -> DeviceId:
        return DeviceId(bytes(self.device_key.public))

    @property
    def name(self) -> str:
        return self.certificate.device_name

    @classmethod
    def create(cls, name: str, rng: Rng, now: int) -> LocalIdentity:
        """A brand-new person with its first device; the root (the words) is kept in memory
        only, for :meth:`recovery_words`."""
        root = rng(_KEY)
        person_key, recovery = keys_from_root(root)
        first = cls.for_person(person_key, name, rng, now)
        return replace(first, recovery_key=bytes(recovery.public), root=root)

    @classmethod
    def for_person(
        cls,
        person_key: SigningKey,
        name: str,
        rng: Rng,
        now: int,
        recovery_key: bytes | None = None,
    ) -> LocalIdentity:
        """A NEW device (fresh device, transport and prekeys) certified by ``person_key``."""
        if not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"a device name is 1 to {MAX_NAME_LENGTH} characters")
        device_key = SigningKey.generate(rng)
        transport = X25519SecretKey.generate(rng)
        prekey = X25519SecretKey.generate(rng)
        return cls(
            person_key=person_key,
            person_id=PersonId(bytes(person_key.public)),
            device_key=device_key,
            certificate=DeviceCertificate.issue(person_key, device_key.public, name, now),
            transport_key=transport,
            transport_certificate=TransportCertificate.issue(
                device_key, transport.public, now, TRANSPORT_KEY_LIFETIME
            ),
            prekey=prekey,
            prekey_certificate=PrekeyCertificate.issue(device_key, 1, prekey.public, now),
            recovery_key=recovery_key,
        )

    @classmethod
    def restore(cls, words: list[str] | str, name: str, rng: Rng, now: int) -> LocalIdentity:
        """The same person from recovery words, on a NEW device key, with the recovery key's
        certificate of that device (signed now, while the root is in memory)."""
        root = seed_from_words(words)
        person_key, recovery = keys_from_root(root)
        device = cls.for_person(person_key, name, rng, now, bytes(recovery.public))
        certificate = RecoveryCertificate.issue(recovery, device.person_id, device.device_id, now)
        return replace(device, recovery_certificate=certificate, root=root)

    def current(self, now: int) -> LocalIdentity:
        """This identity with a transport certificate good at ``now``: itself while its
        certificate has more than half of :data:`TRANSPORT_KEY_LIFETIME` left, else a copy
        whose certificate of the same key is issued again at ``now`` (a handshake uses this,
        so a device older than the lifetime still connects)."""
        cert = self.transport_certificate
        if cert.issued_at <= now < cert.expires_at - TRANSPORT_KEY_LIFETIME // 2:
            return self
        renewed = TransportCertificate.issue(
            self.device_key, self.transport_key.public, now, TRANSPORT_KEY_LIFETIME
        )
        return replace(self, transport_certificate=renewed)

    def recovery_words(self) -> list[str]:
        """The root as 24 BIP39 words: only in the process that created or restored the
        person. Anywhere else ``ValueError``: no device keeps them."""
        if self.root is None:
            raise ValueError(
                "the recovery words are shown once, when the person is created or restored: "
                "no device keeps them"
            )
        return words_from_seed(self.root)

    def to_bytes(self) -> bytes:
        """The secret bundle for storage (seal it before it reaches a disk you do not trust)."""
        person = None if self.person_key is None else self.person_key.secret_bytes()
        return encoding.encode(
            [
                RECORD_VERSION,
                person,
                self.person_id,
                self.device_key.secret_bytes(),
                self.certificate.to_bytes(),
                self.transport_key.secret_bytes(),
                self.transport_certificate.to_bytes(),
                self.prekey.secret_bytes(),
                self.prekey_certificate.to_bytes(),
                self.recovery_key,
                None if self.recovery_certificate is None else self.recovery_certificate.to_bytes(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalIdentity:
        items = expect_list(encoding.decode(data, max_size=8192), "identity")
        if len(items) == 9:  # a bundle from before the recovery key
            items = [*items, None, None]
        if len(items) != 11:
            raise DecodeError("identity bundle: expected 9 or 11 items")
        if expect_int(items[0], "version") != RECORD_VERSION:
            raise UnknownVersion("identity bundle version is not supported")
        person = items[1]
        identity = cls(
            person_key=None if person is None else SigningKey(expect_bytes(person, "person", _KEY)),
            person_id=PersonId(expect_bytes(items[2], "person_id", _KEY)),
            device_key=SigningKey(expect_bytes(items[3], "device_key", _KEY)),
            certificate=DeviceCertificate.from_bytes(expect_bytes(items[4], "certificate")),
            transport_key=X25519SecretKey(expect_bytes(items[5], "transport_key", _KEY)),
            transport_certificate=TransportCertificate.from_bytes(
                expect_bytes(items[6], "transport_certificate")
            ),
            prekey=X25519SecretKey(expect_bytes(items[7], "prekey", _KEY)),
            prekey_certificate=PrekeyCertificate.from_bytes(
                expect_bytes(items[8], "prekey_certificate")
            ),
            recovery_key=None if items[9] is None else expect_bytes(items[9], "recovery", _KEY),
            recovery_certificate=None
            if items[10] is None
            else RecoveryCertificate.from_bytes(expect_bytes(items[10], "recovery_certificate")),
        )
        identity._check_consistent()
        return identity

    def _check_consistent(self) -> None:
        """Every key matches the public half its certificate names."""
        device = self.device_id
        consistent = (
            (self.person_key is None or bytes(self.person_key.public) == self.person_id)
            and self.certificate.person == self.person_id
            and self.certificate.device == device
            and self.transport_certificate.device == device
            and self.transport_certificate.key == self.transport_key.public
            and self.prekey_certificate.device == device
            and self.prekey_certificate.key == self.prekey.public
            and _certifies(self.recovery_certificate, self.recovery_key, self.person_id, device)
        )
        if not consistent:
            raise DecodeError(
                "identity bundle is inconsistent: a key does not match its certificate"
            )

    def __repr__(self) -> str:
        return (
            f"LocalIdentity(person={fingerprint(self.person_id)}, "
            f"device={fingerprint(self.device_id)}, name={self.name!r})"
        )


def _certifies(
    certificate: RecoveryCertificate | None, key: bytes | None, person: PersonId, device: DeviceId
) -> bool:
    return certificate is None or (
        certificate.recovery_key == key
        and certificate.person == person
        and certificate.device == device
    )
