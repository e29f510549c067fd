"""A group's keepers on the Group face: ``keepers()``, ``add_keeper(url)``,
``remove_keeper(url)``, ``keeper_status()`` (methods of :class:`~microsync.node.Group`,
defined here), and the checks made before the ``SETTINGS`` op is appended (the replica's
rules make the same admin check on every replica)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.errors import DecodeError, NotAMember
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.group.settings import MAX_KEEPERS, SettingsChange, keeper_url
from microsync.node.keeper_link import KeeperStatus, keeper_status

if TYPE_CHECKING:
    from microsync.node.group import Group

__all__ = ["GROUP_METHODS", "add_keeper", "remove_keeper"]


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


def _keepers(group: Group) -> list[str]:
    """The keepers (``ws://`` URLs) this group's devices push to and pull from."""
    return list(group._replica.state.keepers)


async def _add_keeper(group: Group, url: str) -> str:
    """Have every member's device keep this group's entries at the keeper at ``url``
    (admins only: :class:`NotAMember` otherwise; :class:`DecodeError` for a URL that is not
    ``ws://`` or ``wss://``, or a fifth keeper); the URL as the group stores it (canonical).
    Running devices connect at once; invites issued from now on carry it."""
    return add_keeper(group._replica, url, now=group._now())


async def _remove_keeper(group: Group, url: str) -> None:
    """Stop using the keeper at ``url`` (admins only; a no-op if the group does not use it)."""
    remove_keeper(group._replica, url, now=group._now())


def _keeper_status(group: Group) -> list[KeeperStatus]:
    """Each keeper: connected now or why not, and how many entries it still lacks."""
    return keeper_status(group)


GROUP_METHODS = (_keepers, _add_keeper, _remove_keeper, _keeper_status)
"""The Group face's keeper methods, in the order it binds them."""
