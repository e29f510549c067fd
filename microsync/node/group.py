"""The group face: :class:`Group` (one group as a :class:`~microsync.node.Device` holds it),
with :class:`Member` and :class:`InviteStatus`, the records its reads return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microsync.app.api import Post
from microsync.app.events import DeviceForked, ForkDetected, MemberJoined, MemberLeft
from microsync.app.presence import PresenceMixin
from microsync.blobs import BlobRef
from microsync.crypto import fingerprint, system_rng
from microsync.errors import NotAMember
from microsync.feed import GroupId
from microsync.group.invite import Invite, InviteId, InviteState
from microsync.group.join import issue_invite
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId, PersonId
from microsync.net.connection import now_ms as _now_ms
from microsync.node.events import Event, Exited
from microsync.node.exits import GroupExit, exit_of
from microsync.node.peers import KnownPeer, known_peers
from microsync.node.vault import Vault

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["Group", "InviteStatus", "Member"]


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a group as this device sees it."""

    person_id: PersonId
    name: str
    role: str  # "admin" or "member"
    devices: tuple[DeviceId, ...]

    def __repr__(self) -> str:
        return (
            f"Member(name={self.name!r}, person={fingerprint(self.person_id)}, "
            f"role={self.role!r}, devices={len(self.devices)})"
        )


@dataclass(frozen=True, slots=True)
class InviteStatus:
    """An invite as the group sees it: ``state`` is open, consumed, revoked or burned;
    ``joined`` is the person it admitted."""

    invite_id: bytes
    role: str
    expires_at: int
    state: str
    joined: PersonId | None


class Group(PresenceMixin):
    """One group as this device holds it. Reads are plain methods; writes are ``async``.

    Get one from :meth:`Device.create_group` or :meth:`Device.groups`. The app primitives
    (posts, replies, reactions, read cursors, events) come from
    :class:`~microsync.app.api.AppMixin`.
    """

    def __init__(self, device: Device, replica: GroupReplica) -> None:
        self._device = device
        self._replica = replica
        replica.on_append = device._changed
        self._known_members = set(replica.state.members)
        self._was_member = replica.is_member
        self._known_forks = self._fork_points()
        self._listeners: list[asyncio.Queue[Event]] = []

    @property
    def id(self) -> GroupId:
        return self._replica.id

    @property
    def name(self) -> str:
        return self._replica.state.name

    @property
    def history(self) -> str:
        """``"shared"`` or ``"none"``: whether later members may read earlier content."""
        return self._replica.state.history

    @property
    def epoch(self) -> int:
        """The number of the epoch this device writes in (-1 while a rotation is due)."""
        current = self._replica.state.current_epoch()
        return -1 if current is None else current.number

    def is_member(self) -> bool:
        return self._replica.is_member

    def exit(self) -> GroupExit | None:
        """How this device came to be out of the group (removed, and by whom; left; revoked),
        or ``None`` while it is a member. Read-only (:mod:`microsync.node.exits`)."""
        return exit_of(self._replica)

    def members(self) -> list[Member]:
        """Current members, admins first, then by name."""
        found = [
            Member(
                person_id=m.person,
                name=m.name,
                role=str(m.role),
                devices=tuple(sorted(m.devices)),
            )
            for m in self._replica.state.members.values()
        ]
        return sorted(found, key=lambda m: (m.role != "admin", m.name, m.person_id))

    def _now(self) -> int:
        return _now_ms()

    def _device_owner(self, device: DeviceId) -> str | None:
        """The name of the member whose device ``device`` is, if one is."""
        members = self._replica.state.members.values()
        return next((m.name for m in members if device in m.devices), None)

    def _person_name(self, person: PersonId) -> str | None:
        """``person``'s name as a member of this group, if it is one."""
        member = self._replica.state.members.get(person)
        return None if member is None else member.name

    # ---- vault (docs/vault.md) -------------------------------------------------------------

    @property
    def vault(self) -> Vault:
        """The group's vault of encrypted files (:class:`~microsync.node.vault.Vault`)."""
        found: Vault | None = self.__dict__.get("_vault")
        if found is None:
            found = self.__dict__["_vault"] = Vault(self)
        return found

    async def post(
        self, text: str, attachments: Sequence[bytes | BlobRef] = (), *, ttl: float | None = None
    ) -> Post:
        """Post ``text``; ``attachments`` may be vault :class:`~microsync.blobs.BlobRef`s (a
        post carries ``bytes(ref)``, the blob id: receivers resolve it with ``vault.get``)."""
        return await super().post(text, [bytes(a) for a in attachments], ttl=ttl)

    # ---- end of vault ----------------------------------------------------------------------

    def known_peers(self) -> list[KnownPeer]:
        """Where this device last finished a sync of this group, most recent first: addresses
        it dialled and relays it met members through (:mod:`microsync.node.peers`)."""
        return known_peers(self._device._store, self.id)

    def _after_announce(self, sealed: bytes) -> None:
        self._device._announced(self.id, sealed)

    def _person(self) -> PersonId:
        return self._device.person_id

    def _wants_events(self) -> bool:
        return bool(self._listeners)

    def _check_members(self) -> None:
        """Emit ``member_joined`` / ``member_left`` for what changed since the last check
        (entries received, or this device's own operations such as admitting an invite)."""
        now = set(self._replica.state.members)
        for person in sorted(now - self._known_members):
            self._emit(MemberJoined(person=person))
        for person in sorted(self._known_members - now):
            self._emit(MemberLeft(person=person))
        self._known_members = now
        if self._was_member and not self._replica.is_member:
            found = self.exit()
            self._emit(Exited(person=None if found is None else found.by, exit=found))
        self._was_member = self._replica.is_member

    def _fork_points(self) -> dict[DeviceId, int]:
        feeds = self._replica.store.feeds(self.id)
        return {d: s.forked_at for d, s in feeds.items() if s.forked_at is not None}

    def _check_forks(self) -> None:
        """Emit ``device_forked`` for every fork found (or found earlier in its feed) since the
        last check, and take what the device wrote from its fork on out of the view."""
        points = self._fork_points()
        fresh = {d: s for d, s in points.items() if s < self._known_forks.get(d, s + 1)}
        self._known_forks = points
        if not fresh:
            return
        self._replica.forget_forked()
        self._forget_forked(points)
        for device, seq in sorted(fresh.items()):
            certificate = self._replica.store.certificate(device)
            person = None if certificate is None else certificate.person
            self._emit(ForkDetected(person=person, fork=DeviceForked(device=device, seq=seq)))

    def _emit(self, event: Event) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every change from now on, as it is applied: new posts, replies, edits, deletes,
        expiries, reactions, members joining or leaving, a device found forked (its posts from
        the fork on are then gone from :meth:`feed`), and this device's own ``"exit"`` (its
        ``detail`` the :class:`GroupExit`, ``person`` who did it) when it is removed, leaves or
        is revoked. Iterate with ``async for``."""
        self._timeline()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    async def rotate_keys(self) -> None:
        """Start a new epoch now, wrapped to every current member device (any member may)."""
        self._replica.rotate(now=self._now())

    async def remove(self, person_id: bytes, *, force: bool = False) -> None:
        """Remove a member (admins only). Starts a new epoch the removed person cannot read.
        Removing yourself while you are the group's only admin and others remain raises
        :class:`NotAMember` unless ``force`` (then nobody can ever invite, remove or promote
        again): promote another admin first."""
        person = PersonId(bytes(person_id))
        self._refuse_last_admin(person, "remove", force)
        self._replica.remove(person, now=self._now())

    async def leave(self, *, force: bool = False) -> None:
        """Leave the group. The remaining members rotate the key on their next write. Refused
        (:class:`NotAMember`) while you are its only admin and others remain, unless ``force``."""
        self._refuse_last_admin(self._device.person_id, "leave", force)
        self._replica.leave(now=self._now())

    def _refuse_last_admin(self, person: PersonId, verb: str, force: bool) -> None:
        """Raise unless taking ``person``'s admin rights leaves the group another admin (or no
        one to administer). Only you can take your own rights while you are the last admin:
        any other admin who could would still be one (ranks, ``docs/membership.md``), so
        this looks at your own person only and leaves every other refusal to the replica."""
        members = self._replica.state.members
        me = members.get(self._device.person_id)
        if force or person != self._device.person_id or me is None or me.role is not Role.ADMIN:
            return
        admins = [m for m in members.values() if m.role is Role.ADMIN and m.person != person]
        if admins or (len(members) == 1 and verb != "demote"):  # alone: the group ends with you
            return
        raise NotAMember(
            f"cannot {verb}: you are the only admin of {self.name}, and without one nobody "
            "could invite, remove or promote again; promote another member first "
            "(or pass force=True; on the command line, --force)"
        )

    async def invite(
        self,
        *,
        ttl: float = 24 * 3600,
        role: str = "member",
        addresses: Sequence[str] | None = None,
        relay: str | None = None,
    ) -> Invite:
        """A single-use invite (admins only) expiring after ``ttl`` seconds: ``.link`` carries a
        256-bit secret and where to reach this device (for a QR code), ``.code`` a short code to
        read aloud (one wrong guess burns it). ``addresses`` and ``relay`` default to where
        this device is reachable while started (its listener's real addresses and port, its
        relay; :class:`InviteError` if neither), else to ``127.0.0.1:7425``."""
        addresses_, relay_ = self._device._reachable(addresses, relay)
        return issue_invite(
            self._replica,
            self._device._book,
            rng=system_rng,
            now=self._now(),
            ttl_ms=int(ttl * 1000),
            role=Role.parse(role),
            addresses=addresses_,
            relay=relay_,
        )

    async def revoke_invite(self, invite: Invite | bytes) -> None:
        """Revoke an invite (admins only): no device will admit it any more."""
        invite_id = invite.invite_id if isinstance(invite, Invite) else bytes(invite)
        self._replica.revoke_invite(invite_id, now=self._now())

    def invites(self) -> list[InviteStatus]:
        """Every invite of this group with its state and, once used, who joined."""
        found = []
        for info in self._replica.state.invites.values():
            state = "open"
            joined = None
            if info.revoked:
                state = "revoked"
            elif info.consumed_by is not None:
                state = "consumed"
                record = self._replica.operation(info.consumed_by)
                joined = None if record is None else record.op.person
            mine = self._device._book.get(InviteId(info.invite_id))
            if mine is not None and mine[2] is InviteState.BURNED:
                state = "burned"
            found.append(
                InviteStatus(
                    invite_id=info.invite_id,
                    role=str(info.role),
                    expires_at=info.expires_at,
                    state=state,
                    joined=joined,
                )
            )
        return sorted(found, key=lambda s: (s.expires_at, s.invite_id))

    async def promote(self, person_id: bytes) -> None:
        """Make a member an admin (admins only)."""
        self._replica.set_role(PersonId(bytes(person_id)), Role.ADMIN, now=self._now())

    async def demote(self, person_id: bytes, *, force: bool = False) -> None:
        """Make an admin a plain member (admins only). Demoting yourself while you are the
        only admin raises :class:`NotAMember` unless ``force``."""
        person = PersonId(bytes(person_id))
        self._refuse_last_admin(person, "demote", force)
        self._replica.set_role(person, Role.MEMBER, now=self._now())

    def __repr__(self) -> str:
        count = len(self._replica.state.members)
        return f"Group(name={self.name!r}, id={fingerprint(self.id)}, members={count})"
