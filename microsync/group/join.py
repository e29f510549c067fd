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

The payloads inside a pairing (join and link requests, their answers, the new device's
candidate keys) are in :mod:`microsync.group.invite.payloads`; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Final, NamedTuple

from microsync import encoding
from microsync.crypto.random import Rng
from microsync.encoding import expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import (
    AlreadyAMember,
    GroupFull,
    InviteError,
    InviteRefused,
    MicrosyncError,
    NotAMember,
)
from microsync.feed.entry import Entry, GroupId
from microsync.group.envelope import sealed_ref
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
from microsync.group.invite.host import Recover
from microsync.group.invite.payloads import (
    DeviceCandidate,
    JoinRequest,
    LinkRequest,
    LinkResponse,
    Welcome,
)
from microsync.group.membership import GroupState, InviteInfo
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica, GroupStore, LocalMember

__all__ = [
    "BookEntry",
    "DeviceCandidate",
    "InviteBook",
    "InviteHost",
    "JoinRequest",
    "LinkRequest",
    "LinkResponse",
    "Welcome",
    "accept_welcome",
    "group_invite_state",
    "issue_invite",
]

_BOOK_KEY: Final = "invites"


class BookEntry(NamedTuple):
    """One invite this device issued: the invite (secret included), the group it admits to
    (``None`` for a device link) and what this device knows of its state. A tuple, so
    ``invite, group, state = entry`` and ``entry[2]`` work as they did."""

    invite: Invite
    group: GroupId | None
    state: InviteState


class InviteBook:
    """The invites this device issued (secrets included), kept in the profile's store."""

    def __init__(self, store: GroupStore) -> None:
        self._store = store
        self._invites: dict[InviteId, BookEntry] = {}
        data = store.get_meta(_BOOK_KEY)
        if data is not None:
            for item in expect_list(encoding.decode(data, max_size=2**22), "invites"):
                entry = _decode_invite(item)
                self._invites[entry.invite.invite_id] = entry

    def add(self, invite: Invite, group: GroupId | None) -> None:
        self._invites[invite.invite_id] = BookEntry(invite, group, InviteState.OPEN)
        self._save()

    def mark(self, invite_id: InviteId, state: InviteState) -> None:
        found = self._invites.get(invite_id)
        if found is not None:
            self._invites[invite_id] = found._replace(state=state)
            self._save()

    def get(self, invite_id: InviteId) -> BookEntry | None:
        return self._invites.get(invite_id)

    def is_device_link(self, invite_id: InviteId) -> bool:
        """Did this device issue ``invite_id`` to link a device (not to invite a person)?"""
        found = self._invites.get(invite_id)
        return found is not None and found.invite.purpose is InvitePurpose.LINK

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


def _decode_invite(value: encoding.Value) -> BookEntry:
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
    return BookEntry(
        invite,
        None if group is None else GroupId(expect_bytes(group, "group", 32)),
        InviteState(expect_str(state, "state")),
    )


def group_invite_state(info: InviteInfo, mine: BookEntry | None) -> InviteState:
    """A group invite's state: as the group resolved it (``info``), except that a burn this
    device recorded (``mine``, if it issued the invite) wins."""
    if mine is not None and mine.state is InviteState.BURNED:
        return InviteState.BURNED
    if info.revoked:
        return InviteState.REVOKED
    if info.consumed_by is not None:
        return InviteState.CONSUMED
    return InviteState.OPEN


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

    def session(self, recover: Recover | None = None) -> PairingHost:
        """A fresh host state machine for one incoming pairing connection (``recover``: how it
        answers a restored device, :mod:`microsync.group.recovery`)."""
        return PairingHost(
            check=self.check,
            admit=self.admit,
            burn=self.burn,
            rng=self._rng,
            find_code=self._book.find_code,
            recover=recover,
        )

    def check(self, invite_id: InviteId) -> InviteRecord | None:
        """The terms and state of ``invite_id``: a device link from this device's book, a
        group invite from the group that published it (a burn recorded here wins)."""
        found = self._book.get(invite_id)
        if found is not None and found.invite.purpose is InvitePurpose.LINK:
            invite = found.invite
            return InviteRecord(
                invite_id=invite_id,
                purpose=invite.purpose,
                expires_at=invite.expires_at,
                state=found.state,
            )
        for replica in self._replicas.values():
            info = replica.state.invites.get(invite_id)
            if info is not None:
                return InviteRecord(
                    invite_id=invite_id,
                    purpose=InvitePurpose.INVITE,
                    expires_at=info.expires_at,
                    state=group_invite_state(info, found),
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
        if self._book.is_device_link(invite_id):
            if self._link_device is None:
                raise InviteRefused("this device cannot certify devices")
            response = self._link_device(LinkRequest.from_bytes(request))
            self._book.mark(invite_id, InviteState.CONSUMED)
            return response.to_bytes()
        join = JoinRequest.from_bytes(request)
        replica = self._group_of(invite_id)
        if join.person in replica.state.members:
            raise AlreadyAMember("the person redeeming the invite is a member already")
        info = replica.state.invites[invite_id]
        require_room(replica.state)
        entry = replica.add(
            join.person,
            join.name,
            [join.device],
            role=info.role,
            invite_id=invite_id,
            now=self._now(),
            recovery_key=join.recovery_key,
        )
        self._book.mark(invite_id, InviteState.CONSUMED)  # if this device issued it
        return _welcome(replica, entry).to_bytes()

    def burn(self, invite_id: InviteId) -> None:
        self._book.mark(invite_id, InviteState.BURNED)
        for replica in self._replicas.values():
            info = replica.state.invites.get(invite_id)
            if info is not None and not info.revoked and replica.is_member:
                # demoted meanwhile? the local burn still refuses it here
                with suppress(NotAMember):
                    replica.revoke_invite(invite_id, now=self._now())


def _welcome(replica: GroupReplica, add: Entry) -> Welcome:
    """The welcome for the joiner ``add`` admitted: with the group's keepers, and the control
    secret of the epoch key that sealed the add (where a keeper files it)."""
    keepers = replica.state.keepers
    stored = replica.store.entry_at(replica.id, add.header.device, add.header.seq)
    if not keepers or stored is None or stored.body is None:
        return Welcome(replica.id, add.id)
    key = replica.key_for(add.header.epoch, sealed_ref(stored.body))
    if key is None:  # pragma: no cover - the add was just sealed under a key held here
        return Welcome(replica.id, add.id)
    return Welcome(replica.id, add.id, keepers, key.control.secret_bytes())


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
    require_room(replica.state)
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


def require_room(state: GroupState) -> None:
    """:class:`GroupFull` if ``state`` holds as many members as the group's cap allows."""
    if state.full():
        raise GroupFull(f"the group is full: it holds its cap of {state.max_members} members")


def accept_welcome(store: GroupStore, me: LocalMember, response: bytes) -> GroupReplica:
    """The joiner's side after a successful pairing: a replica of the group it was admitted
    to. It fills as entries arrive (the add that admitted it carries its keys)."""
    welcome = Welcome.from_bytes(response)
    return GroupReplica(store, me, welcome.group)
