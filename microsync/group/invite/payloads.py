"""What a guest asks for and what the host answers, inside a pairing: canonical CBOR payloads.

A join request ``[1, person, name, [certificate, prekey cert]]`` is answered by a welcome
``[1, group, add entry id]``; a link request ``[1, device key, name, prekey cert, transport
cert]`` by ``[1, device certificate, [group ids], [add entry ids], person key seed]`` (the
ids of the ``ADD_DEVICE`` entries that admitted the new device, one per group: its welcome in
each, how it proves membership at its first sync; and the person key, so the new device may
link and revoke devices too). A response without adds or person key keeps the older
three-item form ``[1, device certificate, [group ids]]``. A :class:`DeviceCandidate` is the new
device's side of a link: fresh keys, waiting for its person's certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from microsync import encoding
from microsync.crypto import SigningKey, VerifyKey, X25519SecretKey
from microsync.crypto.random import Rng
from microsync.encoding import expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError, InviteRefused
from microsync.feed.entry import EntryId, GroupId
from microsync.group.ops import DeviceGrant
from microsync.group.settings import MAX_KEEPER_URL, MAX_KEEPERS, keeper_url
from microsync.identity import (
    MAX_NAME_LENGTH,
    TRANSPORT_KEY_LIFETIME,
    DeviceCertificate,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
    TransportCertificate,
)

__all__ = ["DeviceCandidate", "JoinRequest", "LinkRequest", "LinkResponse", "Welcome"]

_VERSION: Final = 1
_MAX: Final = 32 * 1024


def _items(data: bytes, name: str, count: int) -> list[encoding.Value]:
    items = expect_list(encoding.decode(data, max_size=_MAX), name, count)
    if expect_int(items[0], "version") != _VERSION:
        raise DecodeError(f"{name}: unknown version")
    return items


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a joiner sends: who it is, the device (with its signed prekey) to admit, and its
    person's recovery public key (``None``: not recoverable by the words; then the request
    encodes as before, four items)."""

    person: PersonId
    name: str
    device: DeviceGrant
    recovery_key: bytes | None = None

    def to_bytes(self) -> bytes:
        head: list[encoding.Value] = [_VERSION, self.person, self.name, self.device.to_value()]
        key: list[encoding.Value] = [] if self.recovery_key is None else [self.recovery_key]
        return encoding.encode([*head, *key])

    @classmethod
    def from_bytes(cls, data: bytes) -> JoinRequest:
        items = expect_list(encoding.decode(data, max_size=_MAX), "join request")
        if len(items) not in (4, 5) or expect_int(items[0], "version") != _VERSION:
            raise DecodeError("join request: unknown version or shape")
        key = expect_bytes(items[4], "recovery key", 32) if len(items) == 5 else None
        _, person, name, device = items[:4]
        text = expect_str(name, "name", MAX_NAME_LENGTH)
        if not text:
            raise DecodeError("join request: empty name")
        return cls(
            PersonId(expect_bytes(person, "person", 32)),
            text,
            DeviceGrant.from_value(device),
            key,
        )

    @classmethod
    def of(cls, identity: LocalIdentity, name: str | None = None) -> JoinRequest:
        grant = DeviceGrant(identity.certificate.to_bytes(), identity.prekey_certificate.to_bytes())
        return cls(identity.person_id, name or identity.name, grant, identity.recovery_key)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The inviter's answer: which group, and the add that admitted the joiner; for a group
    with keepers also their URLs and ``mailbox``, the control secret of the epoch that add is
    sealed in (so the joiner finds it at a keeper while nobody is online; the add's own key
    bundle gives it the same secret). Encoded ``[1, group, add]``, or with keepers
    ``[1, group, add, [url, ...], mailbox]``: the three-item form still decodes."""

    group: GroupId
    add: EntryId
    keepers: tuple[str, ...] = ()
    mailbox: bytes = field(default=b"", repr=False)

    def to_bytes(self) -> bytes:
        if not self.keepers:
            return encoding.encode([_VERSION, self.group, self.add])
        urls: list[encoding.Value] = list(self.keepers)
        return encoding.encode([_VERSION, self.group, self.add, urls, self.mailbox])

    @classmethod
    def from_bytes(cls, data: bytes) -> Welcome:
        value = encoding.decode(data, max_size=_MAX)
        long = type(value) is list and len(value) == 5
        _, group, add, *rest = _items(data, "welcome", 5 if long else 3)
        keepers: tuple[str, ...] = ()
        mailbox = b""
        if rest:
            urls = expect_list(rest[0], "keepers")
            if not 0 < len(urls) <= MAX_KEEPERS:
                raise DecodeError(f"welcome: 1 to {MAX_KEEPERS} keepers")
            keepers = tuple(keeper_url(expect_str(u, "keeper", MAX_KEEPER_URL)) for u in urls)
            mailbox = expect_bytes(rest[1], "mailbox", 32)
        return cls(
            GroupId(expect_bytes(group, "group", 32)),
            EntryId(expect_bytes(add, "add", 32)),
            keepers,
            mailbox,
        )


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """A new device of the same person: its keys, each certified by its own device key."""

    device: VerifyKey
    name: str
    prekey: PrekeyCertificate
    transport: TransportCertificate

    def to_bytes(self) -> bytes:
        return encoding.encode(
            [
                _VERSION,
                bytes(self.device),
                self.name,
                self.prekey.to_bytes(),
                self.transport.to_bytes(),
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkRequest:
        _, device, name, prekey, transport = _items(data, "link request", 5)
        text = expect_str(name, "name", MAX_NAME_LENGTH)
        request = cls(
            VerifyKey(expect_bytes(device, "device", 32)),
            text,
            PrekeyCertificate.from_bytes(expect_bytes(prekey, "prekey", max_size=1024)),
            TransportCertificate.from_bytes(expect_bytes(transport, "transport", max_size=1024)),
        )
        if not text:
            raise DecodeError("link request: empty name")
        request.prekey.verify()
        request.transport.verify()
        if request.prekey.device != bytes(request.device) or (
            request.transport.device != bytes(request.device)
        ):
            raise DecodeError("link request: a certificate names another device")
        return request


@dataclass(frozen=True, slots=True)
class LinkResponse:
    """The existing device's answer to a link: the new device's certificate, the groups it
    was added to with the id of the add in each (``adds[i]`` admitted it to ``groups[i]``),
    and the person key (``None``: a device that may not certify or revoke devices). ``repr``
    shows the person key's fingerprint only."""

    certificate: DeviceCertificate
    groups: tuple[GroupId, ...]
    adds: tuple[EntryId, ...] = ()
    person_key: SigningKey | None = field(default=None, compare=False)
    recovery_key: bytes | None = None  # the person's recovery PUBLIC key (6th item)

    def to_bytes(self) -> bytes:
        head: list[encoding.Value] = [_VERSION, self.certificate.to_bytes(), list(self.groups)]
        if not self.adds and self.person_key is None and self.recovery_key is None:
            return encoding.encode(head)
        seed = None if self.person_key is None else self.person_key.secret_bytes()
        tail = [] if self.recovery_key is None else [self.recovery_key]
        return encoding.encode([*head, list(self.adds), seed, *tail])

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkResponse:
        items = expect_list(encoding.decode(data, max_size=_MAX), "link response")
        if len(items) not in (3, 5, 6) or expect_int(items[0], "version") != _VERSION:
            raise DecodeError("link response: unknown version or shape")
        certificate = DeviceCertificate.from_bytes(
            expect_bytes(items[1], "certificate", max_size=1024)
        )
        certificate.verify()
        ids = tuple(GroupId(expect_bytes(g, "group", 32)) for g in expect_list(items[2], "groups"))
        if len(items) == 3:
            return cls(certificate, ids)
        adds = tuple(EntryId(expect_bytes(a, "add", 32)) for a in expect_list(items[3], "adds"))
        if adds and len(adds) != len(ids):
            raise DecodeError("link response: one add per group")
        person_key = None if items[4] is None else SigningKey(expect_bytes(items[4], "person", 32))
        if person_key is not None and bytes(person_key.public) != certificate.person:
            raise DecodeError("link response: the person key did not certify the device")
        key = expect_bytes(items[5], "recovery key", 32) if len(items) == 6 else None
        return cls(certificate, ids, adds, person_key, key)

    def welcomes(self) -> dict[GroupId, EntryId]:
        """Per group, the add that admitted the new device (empty from an older host)."""
        return dict(zip(self.groups, self.adds, strict=False))


@dataclass(frozen=True, slots=True)
class DeviceCandidate:
    """A device being linked: fresh keys waiting for the person's certificate."""

    name: str
    device_key: SigningKey
    transport_key: X25519SecretKey
    transport_certificate: TransportCertificate
    prekey: X25519SecretKey
    prekey_certificate: PrekeyCertificate

    @classmethod
    def generate(cls, name: str, rng: Rng, now: int) -> DeviceCandidate:
        if not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"a device name is 1 to {MAX_NAME_LENGTH} characters")
        device = SigningKey.generate(rng)
        transport = X25519SecretKey.generate(rng)
        prekey = X25519SecretKey.generate(rng)
        return cls(
            name,
            device,
            transport,
            TransportCertificate.issue(device, transport.public, now, TRANSPORT_KEY_LIFETIME),
            prekey,
            PrekeyCertificate.issue(device, 1, prekey.public, now),
        )

    def request(self) -> LinkRequest:
        return LinkRequest(
            self.device_key.public, self.name, self.prekey_certificate, self.transport_certificate
        )

    def provisional(self, rng: Rng, now: int) -> LocalIdentity:
        """This candidate's own keys under a one-off person key, for the pairing handshake
        only: the host sees the candidate's real device and transport keys, which it then
        certifies for the real person. The one-off key is dropped with the identity; nothing
        is stored, and no group ever admits that certificate."""
        one_off = SigningKey.generate(rng)
        return LocalIdentity(
            person_key=None,
            person_id=PersonId(bytes(one_off.public)),
            device_key=self.device_key,
            certificate=DeviceCertificate.issue(one_off, self.device_key.public, self.name, now),
            transport_key=self.transport_key,
            transport_certificate=self.transport_certificate,
            prekey=self.prekey,
            prekey_certificate=self.prekey_certificate,
        )

    def complete(self, response: LinkResponse) -> LocalIdentity:
        """The linked device's identity, once the person has certified it. It holds the person
        key if the response carries it (then it may link and revoke devices too)."""
        cert = response.certificate
        if cert.device != bytes(self.device_key.public) or cert.device_name != self.name:
            raise InviteRefused("the certificate is for another device")
        identity = LocalIdentity(
            person_key=response.person_key,
            person_id=cert.person,
            device_key=self.device_key,
            certificate=cert,
            transport_key=self.transport_key,
            transport_certificate=self.transport_certificate,
            prekey=self.prekey,
            prekey_certificate=self.prekey_certificate,
            recovery_key=response.recovery_key,
        )
        return identity
