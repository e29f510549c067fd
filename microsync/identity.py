"""Persons, devices and the signed records that bind them.

Theory of operation
-------------------
A **person** is an Ed25519 key (``PersonId`` is its public key). A **device** has its own
Ed25519 key (``DeviceId``), never copied and never restored: a profile restored from recovery
words makes a new device key and has the person key certify it.

Signed records, each a canonical CBOR array ``[version, fields..., signature]`` whose signature
covers ``label || canonical array without the signature``:

=============================  ===========  ================================================
record                         signed by    binds
=============================  ===========  ================================================
:class:`DeviceCertificate`     person       device key to person, with the device's name
:class:`DeviceRevocation`      person       "this device is no longer mine"
:class:`TransportCertificate`  device       the X25519 Noise static key, with an expiry
:class:`PrekeyCertificate`     device       a numbered X25519 prekey that epoch keys wrap to
=============================  ===========  ================================================

Records are pure values: ``issue(...)`` takes keys and ``now`` (milliseconds since the epoch),
``from_bytes`` decodes strictly, ``verify()`` checks the signature and raises
:class:`~microsync.errors.BadSignature`. Nothing here touches a clock, a disk or randomness
except through arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, NewType, Self, TypeVar

from microsync import encoding
from microsync.crypto import (
    SIGNATURE_SIZE,
    Rng,
    SigningKey,
    VerifyKey,
    X25519PublicKey,
    X25519SecretKey,
    fingerprint,
    labels,
    seed_from_words,
    words_from_seed,
)
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError, UnknownVersion

__all__ = [
    "DeviceCertificate",
    "DeviceId",
    "DeviceRevocation",
    "LocalIdentity",
    "PersonId",
    "PrekeyCertificate",
    "TransportCertificate",
]

PersonId = NewType("PersonId", bytes)
DeviceId = NewType("DeviceId", bytes)

RECORD_VERSION = 1
MAX_RECORD_SIZE = 1024
MAX_NAME_LENGTH = 64
_KEY = 32


class _SignedRecord:
    """Shared codec for the records above: ``[version, *fields, signature]``."""

    __slots__ = ()
    LABEL: ClassVar[labels.Label]
    signature: bytes

    def _fields(self) -> list[Value]:
        raise NotImplementedError

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        raise NotImplementedError

    def _signer(self) -> VerifyKey:
        raise NotImplementedError

    def signing_bytes(self) -> bytes:
        """The canonical bytes the signature covers (the label is added by the signer)."""
        return encoding.encode([RECORD_VERSION, *self._fields()])

    def to_bytes(self) -> bytes:
        return encoding.encode([RECORD_VERSION, *self._fields(), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode strictly. Does not check the signature: call :meth:`verify`."""
        items = expect_list(encoding.decode(data, max_size=MAX_RECORD_SIZE), cls.__name__)
        if len(items) < 2:
            raise DecodeError(f"{cls.__name__}: too short")
        version = expect_int(items[0], "version")
        if version != RECORD_VERSION:
            raise UnknownVersion(f"{cls.__name__} version {version} is not supported")
        signature = expect_bytes(items[-1], "signature", SIGNATURE_SIZE)
        return cls._from_fields(items[1:-1], signature)

    def verify(self) -> None:
        """Raise :class:`~microsync.errors.BadSignature` unless the signature is valid."""
        self._signer().verify(self.LABEL, self.signing_bytes(), self.signature)


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


def _exactly(fields: list[Value], count: int, name: str) -> list[Value]:
    if len(fields) != count:
        raise DecodeError(f"{name}: expected {count} fields, got {len(fields)}")
    return fields


_R = TypeVar("_R", bound=_SignedRecord)


def _signed(key: SigningKey, unsigned: _R) -> _R:
    """Sign ``unsigned``, refusing (``ValueError``) to sign anything ``from_bytes`` would reject."""
    try:
        type(unsigned).from_bytes(replace(unsigned, signature=bytes(SIGNATURE_SIZE)).to_bytes())  # type: ignore[type-var]
    except DecodeError as error:
        raise ValueError(f"cannot issue {type(unsigned).__name__}: {error}") from None
    signature = key.sign(unsigned.LABEL, unsigned.signing_bytes())
    return replace(unsigned, signature=signature)  # type: ignore[type-var]


TRANSPORT_KEY_LIFETIME = 30 * 24 * 3600 * 1000  # 30 days, in milliseconds


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalIdentity:
    """Everything secret a device holds about itself, plus its public certificates.

    ``person_key`` is ``None`` on a device that may not certify other devices.
    ``repr`` shows fingerprints only.
    """

    person_key: SigningKey | None
    person_id: PersonId
    device_key: SigningKey
    certificate: DeviceCertificate
    transport_key: X25519SecretKey
    transport_certificate: TransportCertificate
    prekey: X25519SecretKey
    prekey_certificate: PrekeyCertificate

    @property
    def device_id(self) -> DeviceId:
        return DeviceId(bytes(self.device_key.public))

    @property
    def name(self) -> str:
        return self.certificate.device_name

    @classmethod
    def create(cls, name: str, rng: Rng, now: int) -> LocalIdentity:
        """A brand-new person with its first device."""
        return cls.for_person(SigningKey.generate(rng), name, rng, now)

    @classmethod
    def for_person(cls, person_key: SigningKey, name: str, rng: Rng, now: int) -> LocalIdentity:
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
        )

    @classmethod
    def restore(cls, words: list[str] | str, name: str, rng: Rng, now: int) -> LocalIdentity:
        """The same person from recovery words, on a NEW device key."""
        return cls.for_person(SigningKey(seed_from_words(words)), name, rng, now)

    def recovery_words(self) -> list[str]:
        """The person key as 24 BIP39 words. Raises ``ValueError`` if this device lacks it."""
        if self.person_key is None:
            raise ValueError("this device does not hold the person key")
        return words_from_seed(self.person_key.secret_bytes())

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
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalIdentity:
        items = expect_list(encoding.decode(data, max_size=8192), "identity", 9)
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
