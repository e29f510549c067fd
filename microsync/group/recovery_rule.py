"""The recovery rule: who may add a device of which person (``docs/devices.md``, "The
rule"). Pure functions of the group state; :mod:`microsync.group.rules` applies them to every
``ADD_DEVICE``."""

from __future__ import annotations

from microsync.group.state import GroupState
from microsync.identity import DeviceId, PersonId, RecoveryCertificate

__all__ = ["may_add_device", "may_recover"]


def may_add_device(
    state: GroupState,
    author: PersonId,
    person: PersonId,
    device: DeviceId,
    recovery: RecoveryCertificate | None = None,
) -> bool:
    """May a device of ``author`` add ``device`` of ``person``? Its own person's, always (a
    link, without a certificate). Another member's only with a ``recovery`` certificate of
    exactly that device by the recovery key ``person`` registered when it joined (a recovery:
    the person keeps their entry, so their role, and the add revokes their other devices). The
    person key alone (a thief's, read off a lost phone) never gets a device in by another
    member: only the words make a certificate. (``recovery`` was verified on decoding.)"""
    if person == author:
        return recovery is None
    target = state.members.get(person)
    return (
        target is not None
        and recovery is not None
        and target.recovery_key is not None
        and recovery.recovery_key == target.recovery_key
        and recovery.person == person
        and recovery.device == device
    )


def may_recover(state: GroupState, author: PersonId, person: PersonId) -> bool:
    """Could a device of ``author`` take ``person`` back by the words here (another member
    with a registered recovery key)?"""
    target = state.members.get(person)
    return person != author and target is not None and target.recovery_key is not None
