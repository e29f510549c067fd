"""``Device.create_group``: check what a new group is asked to be, found it, remember it."""

from __future__ import annotations

from microsync.group.ops import HISTORY_SETTINGS, MAX_MEMBERS_CAP
from microsync.group.replica import GroupReplica, LocalMember
from microsync.node.profile import remember_group
from microsync.storage.sqlite import SqliteStore

__all__ = ["found_group"]


def found_group(
    store: SqliteStore,
    member: LocalMember,
    name: str,
    history: str,
    max_members: int | None,
    now: int,
) -> GroupReplica:
    """Found a group in ``store`` (``ValueError`` for a bad name, history or cap) and remember
    it in the profile, in one transaction."""
    if history not in HISTORY_SETTINGS:
        raise ValueError(f"history must be one of {HISTORY_SETTINGS}, not {history!r}")
    if not 0 < len(name) <= 128:
        raise ValueError("a group name is 1 to 128 characters")
    if max_members is not None and not 1 <= max_members <= MAX_MEMBERS_CAP:
        raise ValueError(f"max_members is 1 to {MAX_MEMBERS_CAP} (or None: no cap)")
    with store.transaction():
        replica = GroupReplica.create(
            store, member, name, history=history, max_members=max_members, now=now
        )
        remember_group(store, replica.id)
    return replica
