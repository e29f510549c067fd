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
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.app.timeline import Timeline
    from microsync.feed.entry import Entry
    from microsync.group.replica import GroupReplica

__all__ = ["hide_after_removal", "hide_of"]


def hide_of(replica: GroupReplica, timeline: Timeline, person: PersonId) -> HideOp | None:
    """The hide of everything ``person``'s devices wrote that this device holds (``None``:
    nothing of theirs is held here)."""
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
