"""``Group.hide_posts_of`` and ``Group.remove(..., hide_posts=True)``: which feed positions an
admin's hide names. The rules every replica applies are in :mod:`microsync.app.moderation`.

A hide names, for each device of the person, the last position it covers: for a removal, the
positions the removal itself names (what it cuts off after; nothing later of those devices
counts anyway); otherwise the head of each of the person's feeds held here. Devices are the
person's current ones plus every device that wrote a post of theirs this device has applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.app.ops import HideOp
from microsync.errors import NotAMember
from microsync.group.ops import Role
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.app.timeline import Timeline
    from microsync.feed.entry import Entry
    from microsync.group.replica import GroupReplica
    from microsync.node.group import Group

__all__ = ["cap_of", "hide_after_removal", "hide_of", "hide_posts_of", "is_admin", "remove_member"]


def cap_of(group: Group) -> int | None:
    """``Group.max_members``: the member cap set at creation (``None``: no cap but the
    4000-device limit); every replica voids an add beyond it (``docs/membership.md``)."""
    return group._replica.state.max_members


async def hide_posts_of(group: Group, person_id: bytes) -> None:
    """``Group.hide_posts_of``: hide, for everyone, every post and reply ``person_id`` wrote
    so far (admins only: :class:`NotAMember` otherwise). Posts of theirs written before it
    that arrive later are hidden too; what they write later is shown (``docs/app.md``)."""
    me = group._device.person_id
    op = hide_of(group._replica, group._timeline(), PersonId(bytes(person_id)), me)
    if op is not None:
        await group._write(op)


async def remove_member(
    group: Group, person_id: bytes, *, force: bool = False, hide_posts: bool = False
) -> None:
    """``Group.remove``: remove a member (admins only). Starts a new epoch the removed person
    cannot read. Removing yourself while you are the group's only admin and others remain
    raises :class:`NotAMember` unless ``force`` (then nobody can ever invite, remove or
    promote again): promote another admin first. With ``hide_posts=True`` every post and
    reply they wrote up to the removal's cut-off is hidden too, for everyone."""
    person = PersonId(bytes(person_id))
    group._refuse_last_admin(person, "remove", force)
    removal = group._replica.remove(person, now=group._now())
    op = hide_after_removal(group._replica, removal) if hide_posts else None
    if op is not None:
        await group._write(op)


def is_admin(replica: GroupReplica, person: PersonId) -> bool:
    """Is ``person`` an admin of the group now (as this device resolved it)?"""
    member = replica.state.members.get(person)
    return member is not None and member.role is Role.ADMIN


def hide_of(
    replica: GroupReplica, timeline: Timeline, person: PersonId, me: PersonId
) -> HideOp | None:
    """The hide, by ``me``, of everything ``person``'s devices wrote that this device holds
    (``None``: nothing of theirs is held here; :class:`NotAMember` unless ``me`` is an admin)."""
    if not is_admin(replica, me):
        raise NotAMember("only admins may hide someone's posts")
    member = replica.state.members.get(person)
    devices = set(member.devices) if member is not None else set()
    devices |= {p.device for p in timeline.posts.values() if p.author == person}
    heads = {d: replica.store.feed_status(replica.id, d).head_seq for d in devices}
    upto = tuple(sorted((d, seq) for d, seq in heads.items() if seq > 0))
    return HideOp(upto=upto) if upto else None


def hide_after_removal(replica: GroupReplica, removal: Entry) -> HideOp | None:
    """The hide of what the removed person's devices wrote up to the removal's cut-off."""
    record = replica.operation(removal.id)
    if record is None or not record.op.positions:
        return None
    upto = tuple((DeviceId(d), seq) for d, seq in record.op.positions if seq > 0)
    return HideOp(upto=upto) if upto else None
