"""Membership rules: whether an operation was allowed in its causal past, and what it does
to the state. Pure functions of ``(group, record, state)``; ``docs/membership.md`` has the
rules, :mod:`microsync.group.membership` the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from microsync.feed.entry import GroupId
from microsync.group.moderators import close_admin, open_admin
from microsync.group.ops import Op, OpKind, Role, recipients_digest
from microsync.group.recovery_rule import may_add_device, may_recover, revoke_all_but
from microsync.group.settings import apply_keepers
from microsync.group.state import (
    INVITE_CLOCK_TOLERANCE_MS,
    MAX_GROUP_DEVICES,
    EpochInfo,
    GroupState,
    InviteInfo,
    MemberInfo,
    OpRecord,
    group_id_for,
)
from microsync.group.windows import close_window as _close_window
from microsync.group.windows import open_window as _open_window
from microsync.group.windows import open_windows as _open_windows
from microsync.group.windows import starts as _starts
from microsync.identity import (
    DeviceId,
    PersonId,
)

__all__ = [
    "ADMIN_KINDS",
    "Cut",
    "Verdict",
    "authorize",
    "cuts_of",
    "entitled_after",
    "joiners",
    "may_add_device",
    "may_recover",
    "note_appended",
    "opens_of",
]


# --------------------------------------------------------------------------- rules

ADMIN_KINDS = frozenset(
    {
        OpKind.ADD,
        OpKind.REMOVE,
        OpKind.SET_ROLE,
        OpKind.INVITE,
        OpKind.REVOKE_INVITE,
        OpKind.SETTINGS,
    }
)
_EPOCH_KINDS = frozenset({OpKind.CREATE, OpKind.REMOVE, OpKind.REVOKE_DEVICE, OpKind.ROTATE})


def _is_reduction(op: Op) -> bool:
    return op.kind in {
        OpKind.REMOVE,
        OpKind.LEAVE,
        OpKind.REVOKE_INVITE,
        OpKind.REVOKE_DEVICE,
    } or (op.kind is OpKind.SET_ROLE and op.role is Role.MEMBER)


def _after(state: GroupState, rec: OpRecord, author: PersonId | None) -> GroupState:
    """The state ``rec`` would produce (used to check an epoch's recipients)."""
    trial = state.copy()
    _apply(trial, rec, author)
    return trial


def entitled_after(
    state: GroupState, rec: OpRecord, author: PersonId | None
) -> frozenset[DeviceId]:
    """``_after(state, rec, author).entitled_devices()`` without copying the state for the
    two kinds a rotation follows most (``tests/test_rekey_entitled.py`` holds the two equal):
    a rotation changes no member; a removal takes out its person, unless its author's entry
    does not count (``_apply`` then changes nothing). Other kinds: the copy."""
    kind = rec.op.kind
    if kind is OpKind.ROTATE:
        return state.entitled_devices()
    if kind is OpKind.REMOVE:
        counts = not rec.seq or state.counts(rec.device, rec.seq)
        gone = rec.op.person if counts else None
        return frozenset(d for p, m in state.members.items() if p != gone for d in m.devices)
    return _after(state, rec, author).entitled_devices()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an op was allowed in its causal past, who made it, and (for an op starting an
    epoch) the devices its key was wrapped to."""

    ok: bool
    author: PersonId | None
    recipients: frozenset[DeviceId] = frozenset()


def authorize(group: GroupId, rec: OpRecord, state: GroupState) -> Verdict:
    """Is ``rec`` allowed in ``state`` (the state of its causal past)?"""
    op = rec.op
    if rec.malformed:
        return Verdict(False, None)
    if op.kind is OpKind.CREATE:
        person = rec.grants[0].person if rec.grants else None
        ok = _authorized_create(group, rec, state)
        return Verdict(ok, person, frozenset({rec.device}) if ok else frozenset())
    if state.genesis is None:
        return Verdict(False, None)
    author = state.person_of(rec.device)
    if author is None:
        return Verdict(False, None)
    member = state.members[author]
    if op.kind in ADMIN_KINDS and member.role is not Role.ADMIN:
        return Verdict(False, author)
    if not _kind_rule(rec, state, author):
        return Verdict(False, author)
    if op.epoch is not None:
        recipients = _epoch_recipients(rec, state, author)
        if recipients is None:
            return Verdict(False, author)
        return Verdict(True, author, recipients)
    if op.kind in _EPOCH_KINDS or (op.kind is OpKind.ADD and state.history == "none"):
        return Verdict(False, author)  # this kind must start an epoch
    return Verdict(True, author)


def _authorized_create(group: GroupId, rec: OpRecord, state: GroupState) -> bool:
    op = rec.op
    if state.genesis is not None or rec.seq != 1 or rec.deps or op.nonce is None:
        return False
    if group_id_for(rec.device, op.nonce) != group:
        return False
    if len(rec.grants) != 1 or rec.grants[0].device != rec.device:
        return False
    epoch = op.epoch
    return (
        epoch is not None
        and epoch.number == 0
        and epoch.recipients_digest == recipients_digest([rec.device])
    )


def _kind_rule(rec: OpRecord, state: GroupState, author: PersonId) -> bool:
    op = rec.op
    kind = op.kind
    if kind is OpKind.ADD:
        assert op.person is not None and op.role is not None
        if op.person in state.members or not rec.grants or state.full():
            return False
        if len(state.entitled_devices()) + len(rec.grants) > MAX_GROUP_DEVICES:
            return False
        if any(g.person != op.person or g.device in state.revoked for g in rec.grants):
            return False
        if op.invite_id is not None:
            invite = state.invites.get(op.invite_id)
            assert op.time is not None
            if invite is None or invite.revoked or invite.consumed_by is not None:
                return False
            late = op.time > invite.expires_at + INVITE_CLOCK_TOLERANCE_MS
            if late or op.role is not invite.role:
                return False
        return _covers(rec, {g.device for g in rec.grants}, state)
    if kind is OpKind.REMOVE:
        target = state.members.get(op.person) if op.person is not None else None
        return (
            target is not None
            and _outranks(state.members[author], target)
            and _covers(rec, set(target.devices), state)
        )
    if kind is OpKind.LEAVE:
        return _covers(rec, set(state.members[author].devices) - {rec.device}, state)
    if kind is OpKind.SET_ROLE:
        target = state.members.get(op.person) if op.person is not None else None
        return (
            target is not None
            and target.role is not op.role
            and _outranks(state.members[author], target)
            and _covers(rec, set(target.devices), state)
        )
    if kind is OpKind.ADD_DEVICE:
        if len(rec.grants) != 1:
            return False
        g = rec.grants[0]
        if not may_add_device(state, author, g.person, g.device, rec.recovery):
            return False
        # a recovery names (and revokes) every other device of the person, as REVOKE_DEVICE
        others = set(state.members[g.person].devices) if rec.recovery is not None else set()
        return (
            len(state.entitled_devices()) < MAX_GROUP_DEVICES
            and state.device(g.device) is None
            and g.device not in state.revoked
            and _covers(rec, {g.device} | others, state)
        )
    if kind is OpKind.REVOKE_DEVICE:
        r = rec.revocation
        return (
            r is not None
            and r.person == author
            and r.device != rec.device
            and r.device in state.members[author].devices
            and op.cutoff is not None
            and op.cutoff >= state.seen.get(r.device, 0)
        )
    if kind is OpKind.PREKEY:
        if len(rec.grants) != 1 or rec.grants[0].device != rec.device:
            return False
        current = state.members[author].devices[rec.device]
        return rec.grants[0].certificate == current.certificate and (
            rec.grants[0].prekey_id > current.prekey_id
        )
    if kind is OpKind.ROTATE:
        return True
    if kind is OpKind.INVITE:
        return op.invite_id not in state.invites
    if kind is OpKind.REVOKE_INVITE:
        invite = state.invites.get(op.invite_id) if op.invite_id is not None else None
        return invite is not None and not invite.revoked
    if kind is OpKind.SETTINGS:
        return op.settings is not None  # admin only (ADMIN_KINDS); the decoder checked values
    raise AssertionError(kind)  # pragma: no cover - every kind is listed


def _outranks(author: MemberInfo, target: MemberInfo) -> bool:
    """May ``author`` (an admin) remove or demote ``target``? Itself, any member, and admins of
    a higher rank: never an admin of its own rank or lower, so two admins can never take each
    other's rights at once, and a removed admin's backdated operations have no one to remove who
    could have removed it."""
    return author.person == target.person or target.role is Role.MEMBER or target.rank > author.rank


def _covers(rec: OpRecord, devices: set[DeviceId], state: GroupState) -> bool:
    """Does ``rec`` name the feed position of exactly ``devices``, none below what its own
    causal past holds of that device?"""
    positions = dict(rec.op.positions)
    return set(positions) == devices and all(
        seq >= state.seen.get(device, 0) for device, seq in positions.items()
    )


def _epoch_recipients(
    rec: OpRecord, state: GroupState, author: PersonId
) -> frozenset[DeviceId] | None:
    """The devices a new epoch must be wrapped to (entitled after the op, in its author's
    view), or ``None`` when the announcement does not match them or skips a number."""
    epoch = rec.op.epoch
    assert epoch is not None
    if epoch.number != state.max_epoch + 1:
        return None
    entitled = entitled_after(state, rec, author)
    return entitled if epoch.recipients_digest == recipients_digest(entitled) else None


_MEMBER_REDUCTIONS = frozenset({OpKind.REMOVE, OpKind.LEAVE, OpKind.REVOKE_DEVICE})
_HISTORY_KINDS = frozenset({OpKind.ADD, OpKind.ADD_DEVICE})


def joiners(rec: OpRecord) -> frozenset[DeviceId]:
    """Devices an op's history bundle gave keys to (an add or a linked device)."""
    if rec.op.kind not in _HISTORY_KINDS:
        return frozenset()
    return frozenset(g.device for g in rec.grants)


def note_appended(state: GroupState, rec: OpRecord, verdict: Verdict, effective: bool) -> None:
    """Update epoch exposure after folding an op that saw every op before it (the fast path
    of :func:`resolve`; equal to what a full resolution computes)."""
    own = (rec.op.epoch.number, rec.op.epoch.commitment) if rec.op.epoch is not None else None
    reduction = effective and rec.op.kind in _MEMBER_REDUCTIONS
    exposed = joiners(rec) if verdict.ok else frozenset()
    if not reduction and not exposed:
        return
    for key, epoch in list(state.epochs.items()):
        if key == own:
            continue
        state.epochs[key] = replace(
            epoch, superseded=epoch.superseded or reduction, exposed=epoch.exposed | exposed
        )


def _apply(
    state: GroupState,
    rec: OpRecord,
    author: PersonId | None,
    recipients: frozenset[DeviceId] = frozenset(),
) -> bool:
    """Fold ``rec`` into ``state``. Returns ``False`` when it had no effect (a second
    redemption of one invite)."""
    op = rec.op
    kind = op.kind
    if kind is not OpKind.CREATE and rec.seq and not state.counts(rec.device, rec.seq):
        # authorised in its causal past, but the admission of its author's device did not
        # stand here (it was cut off, or voided): nothing the device did then takes effect,
        # so a link made by a void device is void too (no device admitted by hearsay).
        # (seq 0: a draft being tried before it is appended; its real seq is checked then)
        return False
    if kind is OpKind.CREATE:
        g = rec.grants[0]
        assert op.name is not None and op.group_name is not None and op.history is not None
        state.genesis, state.founder = rec.id, rec.device
        state.name, state.history = op.group_name, op.history
        state.max_members = op.max_members
        state.members[g.person] = MemberInfo(
            g.person, op.name, Role.ADMIN, {g.device: g}, recovery_key=op.recovery_key
        )
        _open_window(state, g.device, 0)
        open_admin(state, [(g.device, 0)])
    elif kind is OpKind.ADD:
        assert op.person is not None and op.role is not None and op.name is not None
        if op.person not in state.members and state.full():
            return False  # the cap, in fold order: the add that would exceed it is void
        if op.invite_id is not None:
            invite = state.invites.get(op.invite_id)
            if invite is None or invite.consumed_by is not None or invite.revoked:
                return False
            invite.consumed_by = rec.id
        existing = state.members.get(op.person)
        if existing is None:
            devices = {g.device: g for g in rec.grants if g.device not in state.revoked}
            rank = _rank_after(state, author)
            state.members[op.person] = MemberInfo(
                op.person, op.name, op.role, devices, rank, op.recovery_key
            )
        else:  # racing adds of one person: keep the first's name and role, join the devices
            for g in rec.grants:
                if g.device not in state.revoked:
                    existing.devices.setdefault(g.device, g)
        _open_windows(state, rec, state.members[op.person].devices)
        if state.members[op.person].role is Role.ADMIN:
            open_admin(state, _starts(rec, state.members[op.person].devices))
    elif kind in _EXITS:
        _exit(state, rec, author)
    elif kind is OpKind.SET_ROLE:
        assert op.person is not None and op.role is not None
        target = state.members.get(op.person)
        if target is not None:
            if op.role is Role.ADMIN:
                target.rank = _rank_after(state, author)
                open_admin(state, [(d, seq) for d, seq in op.positions if d in target.devices])
            else:
                named = dict(op.positions)
                close_admin(state, [(d, named.get(d)) for d in target.devices])
            target.role = op.role
    elif kind is OpKind.ADD_DEVICE:
        g = rec.grants[0]
        member = state.members.get(g.person)
        if member is None or g.device in state.revoked:
            return True  # the person left, or the device was revoked, concurrently
        if rec.recovery is not None:
            if rec.recovery.recovery_key != member.recovery_key:
                return False  # the person left and joined again with other words
            revoke_all_but(state, cuts_of(rec), member, g.device)
        member.devices.setdefault(g.device, g)
        _open_windows(state, rec, member.devices)
        if member.role is Role.ADMIN:
            open_admin(state, _starts(rec, {g.device: g}))
    elif kind is OpKind.PREKEY:
        g = rec.grants[0]
        member = state.members.get(g.person)
        known = member.devices.get(g.device) if member is not None else None
        if member is not None and known is not None and g.prekey_id > known.prekey_id:
            member.devices[g.device] = g
    elif kind is OpKind.INVITE:
        assert op.invite_id is not None and op.time is not None and op.role is not None
        if author is not None:
            state.invites.setdefault(
                op.invite_id, InviteInfo(op.invite_id, op.time, op.role, author, rec.id)
            )
    elif kind is OpKind.REVOKE_INVITE:
        assert op.invite_id is not None
        invite = state.invites.get(op.invite_id)
        if invite is not None:
            invite.revoked = True
    elif kind is OpKind.SETTINGS:
        assert op.settings is not None
        state.keepers = apply_keepers(state.keepers, op.settings)
        if op.settings.keeper_originals is not None:  # the last in resolved order wins
            state.keeper_originals = op.settings.keeper_originals
    if op.epoch is not None:
        key = (op.epoch.number, op.epoch.commitment)
        state.epochs.setdefault(
            key,
            EpochInfo(
                op.epoch.number,
                op.epoch.commitment,
                recipients,
                rec.id,
                rec.device,
                exposed=recipients,
            ),
        )
    return True


_EXITS = frozenset({OpKind.REMOVE, OpKind.LEAVE, OpKind.REVOKE_DEVICE})


def _rank_after(state: GroupState, author: PersonId | None) -> int:
    granter = state.members.get(author) if author is not None else None
    return 0 if granter is None else granter.rank + 1


def _exit(state: GroupState, rec: OpRecord, author: PersonId | None) -> None:
    """A removal, a leave or a device revocation: the devices it puts out stop counting at
    the cut-off the operation itself names (see :func:`cuts_of`)."""
    op = rec.op
    for device, cutoff, full in cuts_of(rec):
        if full:
            _close_window(state, device, cutoff)
            close_admin(state, [(device, cutoff)])
    if op.kind is OpKind.REVOKE_DEVICE:
        r = rec.revocation
        assert r is not None and op.cutoff is not None
        state.revoked[r.device] = min(op.cutoff, state.revoked.get(r.device, op.cutoff))
        for member in state.members.values():
            member.devices.pop(r.device, None)
        return
    person = op.person if op.kind is OpKind.REMOVE else author
    gone = state.members.pop(person, None) if person is not None else None
    named = {d for d, _, _ in cuts_of(rec)} if gone is not None else set()
    for device in () if gone is None else gone.devices:
        if device not in named:  # joined concurrently: nothing of it after its start counts
            _close_window(state, device, None)
            close_admin(state, [(device, None)])


Cut = tuple[DeviceId, int, bool]
"""(device, last seq that counts, whether the cut is total or only of admin operations)."""


def cuts_of(rec: OpRecord) -> tuple[Cut, ...]:
    """The lines an operation draws through other feeds: a removal through the removed
    person's devices, a leave through the leaver's (its own entry is the last that counts), a
    revocation through the revoked device, a demotion through the demoted person's devices
    (for admin operations only). Positions are the author's view, named in the op itself."""
    op = rec.op
    if op.kind is OpKind.REVOKE_DEVICE:
        if rec.revocation is None or op.cutoff is None:
            return ()
        return ((rec.revocation.device, op.cutoff, True),)
    named = tuple((d, seq, op.kind is not OpKind.SET_ROLE) for d, seq in op.positions)
    if op.kind is OpKind.ADD_DEVICE and rec.recovery is not None:  # revokes all but the new
        return tuple(c for c in named if c[0] != rec.recovery.device)
    if op.kind is OpKind.REMOVE or (op.kind is OpKind.SET_ROLE and op.role is Role.MEMBER):
        return named
    if op.kind is OpKind.LEAVE:
        return ((rec.device, rec.seq, True), *named)
    return ()


def opens_of(rec: OpRecord) -> tuple[Cut, ...]:
    """The admissions an operation starts: (device, position it starts after, total?). An add
    or a linked device admits wholly; a promotion gives back admin rights."""
    op = rec.op
    if op.kind in _HISTORY_KINDS:
        new = {g.device for g in rec.grants}  # a recovery also names devices it revokes
        return tuple((d, seq, True) for d, seq in op.positions if d in new)
    if op.kind is OpKind.SET_ROLE and op.role is Role.ADMIN:
        return tuple((d, seq, False) for d, seq in op.positions)
    return ()


def _voids(r: OpRecord, r_author: PersonId | None, j: OpRecord, j_author: PersonId | None) -> bool:
    """Does reduction ``r`` take the authority concurrent op ``j`` needed?"""
    rk, jo = r.op.kind, j.op
    if rk is OpKind.REMOVE:
        return r.op.person == j_author or (jo.kind is OpKind.ADD and jo.person == r.op.person)
    if rk is OpKind.LEAVE:
        return r_author is not None and r_author == j_author
    if rk is OpKind.SET_ROLE:  # a demote
        return (r.op.person == j_author and jo.kind in ADMIN_KINDS) or (
            jo.kind is OpKind.SET_ROLE and jo.person == r.op.person
        )
    if rk is OpKind.REVOKE_INVITE:
        return jo.kind is OpKind.ADD and jo.invite_id == r.op.invite_id
    return False
