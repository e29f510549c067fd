"""The one refusal the group face makes itself before an admin operation: taking the last
admin's rights while others remain (every other refusal is the replica's)."""

from __future__ import annotations

from microsync.errors import NotAMember
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.identity import PersonId

__all__ = ["refuse_last_admin"]


def refuse_last_admin(replica: GroupReplica, me: PersonId, person: PersonId, verb: str) -> None:
    """Raise unless taking ``person``'s admin rights leaves the group another admin (or no one
    to administer). Only you (``me``) can take your own rights while you are the last admin:
    any other admin who could would still be one (ranks, ``docs/membership.md``), so this
    looks at your own person only and leaves every other refusal to the replica."""
    members = replica.state.members
    mine = members.get(me)
    if person != me or mine is None or mine.role is not Role.ADMIN:
        return
    admins = [m for m in members.values() if m.role is Role.ADMIN and m.person != person]
    if admins or (len(members) == 1 and verb != "demote"):  # alone: the group ends with you
        return
    raise NotAMember(
        f"cannot {verb}: you are the only admin of {replica.state.name}, and without one "
        "nobody could invite, remove or promote again; promote another member first "
        "(or pass force=True; on the command line, --force)"
    )
