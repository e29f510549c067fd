"""The recovery rule: who may add a device of which person (``docs/devices.md``, "The
rule"), and what a recovery does to the state (it revokes the person's other devices). Pure
functions of the group state; :mod:`microsync.group.rules` applies them to every
``ADD_DEVICE``."""

from __future__ import annotations

from collections.abc import Iterable

from microsync.group.moderators import close_admin
from microsync.group.state import GroupState, MemberInfo, OpRecord
from microsync.group.windows import close_window
from microsync.identity import DeviceId, PersonId, RecoveryCertificate

__all__ = ["force_recovery", "may_add_device", "may_recover", "revoke_all_but"]

Cut = tuple[DeviceId, int, bool]  # as rules.Cut


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


def revoke_all_but(
    state: GroupState, cuts: Iterable[Cut], member: MemberInfo, kept: DeviceId
) -> None:
    """A recovery's revocations: every device it names stops counting after its position
    there (as REVOKE_DEVICE's cut-off); a device of the person it could not see (admitted
    concurrently, by a racing recovery) stops counting after nothing. All are revoked."""
    for device, cutoff, _ in cuts:
        close_window(state, device, cutoff)
        close_admin(state, [(device, cutoff)])
        state.revoked[device] = min(cutoff, state.revoked.get(device, cutoff))
    for device in set(member.devices) - {kept}:
        if device not in state.revoked:
            close_window(state, device, None)
            close_admin(state, [(device, None)])
            windows = state.windows.get(device, ((0, 0),))
            state.revoked[device] = windows[-1][1] or 0
        member.devices.pop(device, None)


def force_recovery(state: GroupState, rec: OpRecord, cuts: Iterable[Cut]) -> None:
    """What a recovery caught in a cycle of cut-offs still does (least privilege): the
    devices it revokes are out; its new device is not admitted."""
    member = state.members.get(rec.grants[0].person) if rec.grants else None
    if member is not None and rec.recovery is not None:
        revoke_all_but(state, cuts, member, rec.grants[0].device)
        member.devices.pop(rec.grants[0].device, None)
