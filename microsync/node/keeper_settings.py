"""Adding and removing a group's keepers: the checks the Group face makes before it appends
the ``SETTINGS`` op (the replica's rules make the same admin check on every replica)."""

from __future__ import annotations

from microsync.errors import DecodeError, NotAMember
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.group.settings import MAX_KEEPERS, SettingsChange, keeper_url

__all__ = ["add_keeper", "remove_keeper"]


def _require_admin(replica: GroupReplica) -> None:
    person = replica.state.person_of(replica.me.device)
    member = None if person is None else replica.state.members.get(person)
    if member is None:
        raise NotAMember("this device is not a member of the group")
    if member.role is not Role.ADMIN:
        raise NotAMember(f"only admins may change the group's keepers (you are a {member.role})")


def add_keeper(replica: GroupReplica, url: str, *, now: int) -> str:
    """Append the op adding ``url`` (canonicalised; :class:`DecodeError` if it is no keeper
    URL or the group has :data:`MAX_KEEPERS` already); its canonical form. A keeper already
    set is not added twice."""
    canonical = keeper_url(url)
    _require_admin(replica)
    keepers = replica.state.keepers
    if canonical in keepers:
        return canonical
    if len(keepers) >= MAX_KEEPERS:
        raise DecodeError(f"a group has at most {MAX_KEEPERS} keepers: remove one first")
    replica.change_settings(SettingsChange(add_keepers=(canonical,)), now=now)
    return canonical


def remove_keeper(replica: GroupReplica, url: str, *, now: int) -> None:
    """Append the op removing ``url`` (a no-op if the group does not use it)."""
    canonical = keeper_url(url)
    _require_admin(replica)
    if canonical in replica.state.keepers:
        replica.change_settings(SettingsChange(remove_keepers=(canonical,)), now=now)
