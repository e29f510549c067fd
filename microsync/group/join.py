"""Joining a group and linking a device: the group side of the pairing protocol. Sans-IO.

:mod:`microsync.group.invite` runs the one-time pairing exchange (link secret or short code
through SPAKE2) and asks its host for four decisions through callbacks. This module answers
them from the group state and the issuer's :class:`InviteBook`:

* ``check``: an invite's terms and state: open, consumed (an effective add consumed it),
  revoked (a ``REVOKE_INVITE`` took effect) or burned (a wrong short code was tried here);
* ``admit``: for a group invite, append the admin-signed ``ADD`` that consumes the invite and
  wraps keys to the joiner (the inviter then sees who joined); for a device link, certify the
  new device with the person key and add it to every group the person is in;
* ``burn``: remember the burn and revoke the invite in its group, so no admin admits it again;
* ``find_code``: the issuer's invite behind a nameplate.

Payloads (canonical CBOR): a join request ``[1, person, name, [certificate, prekey cert]]``
answered by a welcome ``[1, group, add entry id]``; a link request
``[1, device key, name, prekey cert, transport cert]`` answered by ``[1, device certificate,
[group ids]]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.crypto import SigningKey, VerifyKey, X25519SecretKey
from microsync.crypto.random import Rng
from microsync.encoding import expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import (
    DecodeError,
    InviteError,
    InviteRefused,
    MicrosyncError,
    NotAMember,
)
from microsync.feed.entry import EntryId, GroupId
from microsync.group.invite import (
    Invite,
    InviteId,
    InvitePurpose,
    InviteRecord,
    InviteSecret,
    InviteState,
    PairingHost,
    ShortCode,
)
from microsync.group.ops import DeviceGrant, Role
from microsync.group.replica import GroupReplica, GroupStore, LocalMember
from microsync.identity import (
    MAX_NAME_LENGTH,
    TRANSPORT_KEY_LIFETIME,
    DeviceCertificate,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
    TransportCertificate,
)

__all__ = [
    "DeviceCandidate",
    "InviteBook",
    "InviteHost",
    "JoinRequest",
    "LinkRequest",
    "LinkResponse",
    "Welcome",
    "accept_welcome",
    "issue_invite",
]

_VERSION: Final = 1
_MAX: Final = 32 * 1024
_BOOK_KEY: Final = "invites"


def _items(data: bytes, name: str, count: int) -> list[encoding.Value]:
    items = expect_list(encoding.decode(data, max_size=_MAX), name, count)
    if expect_int(items[0], "version") != _VERSION:
        raise DecodeError(f"{name}: unknown version")
    return items


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What a joiner sends: who it is and the device (with its signed prekey) to admit."""

    person: PersonId
    name: str
    device: DeviceGrant

    def to_bytes(self) -> bytes:
        return encoding.encode([_VERSION, self.person, self.name, self.device.to_value()])

    @classmethod
    def from_bytes(cls, data: bytes) -> JoinRequest:
        _, person, name, device = _items(data, "join request", 4)
        text = expect_str(name, "name", MAX_NAME_LENGTH)
        if not text:
            raise DecodeError("join request: empty name")
        return cls(
            PersonId(expect_bytes(person, "person", 32)), text, DeviceGrant.from_value(device)
        )

    @classmethod
    def of(cls, identity: LocalIdentity, name: str | None = None) -> JoinRequest:
        grant = DeviceGrant(identity.certificate.to_bytes(), identity.prekey_certificate.to_bytes())
        return cls(identity.person_id, name or identity.name, grant)


@dataclass(frozen=True, slots=True)
class Welcome:
    """The inviter's answer: which group, and the add that admitted the joiner."""

    group: GroupId
    add: EntryId

    def to_bytes(self) -> bytes:
        return encoding.encode([_VERSION, self.group, self.add])

    @classmethod
    def from_bytes(cls, data: bytes) -> Welcome:
        _, group, add = _items(data, "welcome", 3)
        return cls(GroupId(expect_bytes(group, "group", 32)), EntryId(expect_bytes(add, "add", 32)))


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
    certificate: DeviceCertificate
    groups: tuple[GroupId, ...]

    def to_bytes(self) -> bytes:
        return encoding.encode([_VERSION, self.certificate.to_bytes(), list(self.groups)])

    @classmethod
    def from_bytes(cls, data: bytes) -> LinkResponse:
        _, cert, groups = _items(data, "link response", 3)
        certificate = DeviceCertificate.from_bytes(expect_bytes(cert, "certificate", max_size=1024))
        certificate.verify()
        ids = tuple(GroupId(expect_bytes(g, "group", 32)) for g in expect_list(groups, "groups"))
        return cls(certificate, ids)


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

    def complete(self, response: LinkResponse) -> LocalIdentity:
        """The linked device's identity, once the person has certified it. It holds no person
        key: it cannot certify or revoke devices, only its person's existing devices can."""
        cert = response.certificate
        if cert.device != bytes(self.device_key.public) or cert.device_name != self.name:
            raise InviteRefused("the certificate is for another device")
        identity = LocalIdentity(
            person_key=None,
            person_id=cert.person,
            device_key=self.device_key,
            certificate=cert,
            transport_key=self.transport_key,
            transport_certificate=self.transport_certificate,
            prekey=self.prekey,
            prekey_certificate=self.prekey_certificate,
        )
        return identity


class InviteBook:
    """The invites this device issued (secrets included), kept in the profile's store."""

    def __init__(self, store: GroupStore) -> None:
        self._store = store
        self._invites: dict[InviteId, tuple[Invite, GroupId | None, InviteState]] = {}
        data = store.get_meta(_BOOK_KEY)
        if data is not None:
            for item in expect_list(encoding.decode(data, max_size=2**22), "invites"):
                invite, group, state = _decode_invite(item)
                self._invites[invite.invite_id] = (invite, group, state)

    def add(self, invite: Invite, group: GroupId | None) -> None:
        self._invites[invite.invite_id] = (invite, group, InviteState.OPEN)
        self._save()

    def mark(self, invite_id: InviteId, state: InviteState) -> None:
        found = self._invites.get(invite_id)
        if found is not None:
            self._invites[invite_id] = (found[0], found[1], state)
            self._save()

    def get(self, invite_id: InviteId) -> tuple[Invite, GroupId | None, InviteState] | None:
        return self._invites.get(invite_id)

    def open_nameplates(self) -> set[int]:
        return {
            i.short_code.nameplate
            for i, _, state in self._invites.values()
            if state is InviteState.OPEN
        }

    def relay_invites(self, now: int) -> list[Invite]:
        """Open, unexpired invites whose link names a relay (the device waits there)."""
        return [
            invite
            for invite, _, state in self._invites.values()
            if state is InviteState.OPEN and invite.relay is not None and invite.expires_at > now
        ]

    def find_code(self, nameplate: int) -> Invite | None:
        for invite, _, state in self._invites.values():
            if invite.short_code.nameplate == nameplate and state is InviteState.OPEN:
                return invite
        return None

    def _save(self) -> None:
        value = [_encode_invite(i, g, s) for i, g, s in self._invites.values()]
        self._store.put_meta(_BOOK_KEY, encoding.encode(value))


def _encode_invite(invite: Invite, group: GroupId | None, state: InviteState) -> encoding.Value:
    return [
        invite.secret.secret_bytes(),
        invite.short_code.nameplate,
        list(invite.short_code.words),
        invite.purpose.value,
        None if invite.role is None else int(invite.role),
        invite.expires_at,
        list(invite.addresses),
        invite.relay,
        group,
        state.value,
    ]


def _decode_invite(value: encoding.Value) -> tuple[Invite, GroupId | None, InviteState]:
    secret, plate, words, purpose, role, expires, addresses, relay, group, state = expect_list(
        value, "invite", 10
    )
    invite = Invite(
        secret=InviteSecret(expect_bytes(secret, "secret", 32)),
        short_code=ShortCode(
            expect_int(plate, "nameplate"),
            tuple(expect_str(w, "word") for w in expect_list(words, "words")),
        ),
        purpose=InvitePurpose(expect_str(purpose, "purpose")),
        role=None if role is None else Role.from_code(expect_int(role, "role")),
        expires_at=expect_int(expires, "expires_at"),
        addresses=tuple(expect_str(a, "address") for a in expect_list(addresses, "addresses")),
        relay=None if relay is None else expect_str(relay, "relay"),
    )
    return (
        invite,
        None if group is None else GroupId(expect_bytes(group, "group", 32)),
        InviteState(expect_str(state, "state")),
    )


class InviteHost:
    """Answers a :class:`PairingHost`'s callbacks for this device's groups and invites.

    ``replicas`` maps group ids to this device's replicas; ``now`` is read at each decision
    (milliseconds); ``link_device`` is called to admit a device link (certify + add it to every
    group), or ``None`` when this device cannot certify devices.
    """

    def __init__(
        self,
        replicas: Mapping[GroupId, GroupReplica],
        book: InviteBook,
        *,
        rng: Rng,
        now: Callable[[], int],
        link_device: Callable[[LinkRequest], LinkResponse] | None = None,
    ) -> None:
        self._replicas = replicas
        self._book = book
        self._rng = rng
        self._now = now
        self._link_device = link_device

    def session(self) -> PairingHost:
        """A fresh host state machine for one incoming pairing connection."""
        return PairingHost(
            check=self.check,
            admit=self.admit,
            burn=self.burn,
            rng=self._rng,
            find_code=self._book.find_code,
        )

    def check(self, invite_id: InviteId) -> InviteRecord | None:
        found = self._book.get(invite_id)
        if found is not None and found[0].purpose is InvitePurpose.LINK:
            invite, _, state = found
            return InviteRecord(
                invite_id=invite_id,
                purpose=invite.purpose,
                expires_at=invite.expires_at,
                state=state,
            )
        for replica in self._replicas.values():
            info = replica.state.invites.get(invite_id)
            if info is None:
                continue
            state = InviteState.OPEN
            if found is not None and found[2] is InviteState.BURNED:
                state = InviteState.BURNED
            elif info.revoked:
                state = InviteState.REVOKED
            elif info.consumed_by is not None:
                state = InviteState.CONSUMED
            return InviteRecord(
                invite_id=invite_id,
                purpose=InvitePurpose.INVITE,
                expires_at=info.expires_at,
                state=state,
            )
        return None

    def _group_of(self, invite_id: InviteId) -> GroupReplica:
        for replica in self._replicas.values():
            if invite_id in replica.state.invites:
                return replica
        raise InviteRefused("no group of this device knows the invite")

    def admit(self, invite_id: InviteId, request: bytes) -> bytes:
        """Admit the redeemer, or raise an :class:`InviteError` (a malformed or forged request,
        or an add the group's rules refuse, becomes :class:`InviteRefused`)."""
        try:
            return self._admit(invite_id, request)
        except InviteError:
            raise
        except MicrosyncError as error:
            raise InviteRefused(f"the request was refused: {error}") from None

    def _admit(self, invite_id: InviteId, request: bytes) -> bytes:
        found = self._book.get(invite_id)
        if found is not None and found[0].purpose is InvitePurpose.LINK:
            if self._link_device is None:
                raise InviteRefused("this device cannot certify devices")
            response = self._link_device(LinkRequest.from_bytes(request))
            self._book.mark(invite_id, InviteState.CONSUMED)
            return response.to_bytes()
        join = JoinRequest.from_bytes(request)
        replica = self._group_of(invite_id)
        info = replica.state.invites[invite_id]
        entry = replica.add(
            join.person,
            join.name,
            [join.device],
            role=info.role,
            invite_id=invite_id,
            now=self._now(),
        )
        if found is not None:
            self._book.mark(invite_id, InviteState.CONSUMED)
        return Welcome(replica.id, entry.id).to_bytes()

    def burn(self, invite_id: InviteId) -> None:
        self._book.mark(invite_id, InviteState.BURNED)
        for replica in self._replicas.values():
            info = replica.state.invites.get(invite_id)
            if info is not None and not info.revoked and replica.is_member:
                # demoted meanwhile? the local burn still refuses it here
                with suppress(NotAMember):
                    replica.revoke_invite(invite_id, now=self._now())


def issue_invite(
    replica: GroupReplica,
    book: InviteBook,
    *,
    rng: Rng,
    now: int,
    ttl_ms: int,
    role: Role = Role.MEMBER,
    addresses: tuple[str, ...] = (),
    relay: str | None = None,
) -> Invite:
    """Issue a single-use group invite (admins only): publish its id, expiry and role to the
    group (never the secret) and keep the secret and short code in this device's book."""
    if ttl_ms <= 0:
        raise ValueError("an invite needs a positive time to live")
    invite = Invite.issue(
        rng=rng,
        now=now,
        purpose=InvitePurpose.INVITE,
        role=role,
        addresses=addresses,
        relay=relay,
        ttl_ms=ttl_ms,
        taken_nameplates=book.open_nameplates(),
    )
    replica.create_invite(invite.invite_id, expires_at=invite.expires_at, role=role, now=now)
    book.add(invite, replica.id)
    return invite


def accept_welcome(store: GroupStore, me: LocalMember, response: bytes) -> GroupReplica:
    """The joiner's side after a successful pairing: a replica of the group it was admitted
    to. It fills as entries arrive (the add that admitted it carries its keys)."""
    welcome = Welcome.from_bytes(response)
    return GroupReplica(store, me, welcome.group)
