"""The records a :class:`~microsync.node.group.Group`'s reads return about people and invites:
:class:`Member` and :class:`InviteStatus`, and :func:`invite_statuses`, which builds the latter."""

from __future__ import annotations

from dataclasses import dataclass

from microsync.crypto import fingerprint
from microsync.group.invite import InviteId, InviteState
from microsync.group.join import InviteBook
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId, PersonId

__all__ = ["InviteStatus", "Member", "invite_statuses", "members_of"]


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


def members_of(replica: GroupReplica) -> list[Member]:
    """The group's current members, admins first, then by name."""
    found = [
        Member(
            person_id=m.person,
            name=m.name,
            role=str(m.role),
            devices=tuple(sorted(m.devices)),
        )
        for m in replica.state.members.values()
    ]
    return sorted(found, key=lambda m: (m.role != "admin", m.name, m.person_id))


@dataclass(frozen=True, slots=True)
class InviteStatus:
    """An invite as the group sees it: ``state`` is open, consumed, revoked or burned;
    ``joined`` is the person it admitted."""

    invite_id: bytes
    role: str
    expires_at: int
    state: str
    joined: PersonId | None


def invite_statuses(replica: GroupReplica, book: InviteBook) -> list[InviteStatus]:
    """Every invite of ``replica``'s group with its state and, once used, who joined (``book``:
    this device's own invites, which know whether a wrong code burned one)."""
    found = []
    for info in replica.state.invites.values():
        state = "open"
        joined = None
        if info.revoked:
            state = "revoked"
        elif info.consumed_by is not None:
            state = "consumed"
            record = replica.operation(info.consumed_by)
            joined = None if record is None else record.op.person
        mine = book.get(InviteId(info.invite_id))
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
