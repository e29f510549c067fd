"""How this device came to be out of a group: :meth:`~microsync.node.Group.exit`.

Read-only over the group's membership resolution: the effective operation that put this
device's person or device out (:meth:`~microsync.group.replica.GroupReplica.exit_record`), its
author (``Resolution.authors``) and that author's name (a member's name now, else the one the
operation that added them gave). Nothing here changes who is a member.

``at`` is the time the operation's author signed (its ``hlc``), as any entry's time is: what
the author's clock said, not a time this device checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from microsync.app.api import when
from microsync.group.ops import OpKind
from microsync.group.replica import GroupReplica
from microsync.identity import PersonId

__all__ = ["GroupExit", "exit_of"]

How = Literal["removed", "left", "revoked"]
_HOW: dict[OpKind, How] = {OpKind.REMOVE: "removed", OpKind.LEAVE: "left"}


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupExit:
    """Why this device is no longer in a group. ``how``: ``"removed"`` (an admin removed this
    person), ``"left"`` (this person left, from this or another of their devices) or
    ``"revoked"`` (this device was revoked by its person); ``by``/``by_name``: who did it, when
    known; ``at``: when, as its author signed it (``None`` if unknown)."""

    how: How
    by: PersonId | None
    by_name: str | None
    at: datetime | None

    def sentence(self, group: str) -> str:
        """In words: "you were removed from Family by Alice", "you left Family", ..."""
        who = self.by_name or "an admin"
        if self.how == "removed":
            return f"you were removed from {group} by {who}"
        if self.how == "left":
            return f"you left {group}"
        return f"this device was revoked from {group} (by {self.by_name or 'your person key'})"


def exit_of(replica: GroupReplica) -> GroupExit | None:
    """How this device came to be out of ``replica``'s group; ``None`` while it is a member.
    An exit whose operation this device does not hold reads as removed, by nobody known."""
    if replica.is_member:
        return None
    found = replica.exit_record()
    if found is None:
        return GroupExit(how="removed", by=None, by_name=None, at=None)
    record, hlc = found
    how = _HOW.get(record.op.kind, "revoked")
    author = replica.resolution.authors.get(record.id)
    name = None if author is None else replica.name_of(author)
    return GroupExit(how=how, by=author, by_name=name, at=when(hlc))
