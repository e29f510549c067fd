"""Membership as a deterministic function of the SET of operations. Sans-IO, pure.

The rules are written out, with the concurrent cases, in ``docs/membership.md``. In short:

1. Operations form a DAG through ``deps`` (an operation names the membership heads its author
   had seen). They are ordered topologically, ties broken by entry id: a total order that
   depends only on the set.
2. An operation is **causally valid** when its author was allowed to make it in the state
   resolved from exactly its causal past (its ancestors).
3. **Least privilege wins under concurrency.** A *reduction* (remove, leave, demote, revoke an
   invite or a device) that is causally valid and not cut off always takes effect. Any other
   operation is void when such a reduction concurrent with it (neither is an ancestor of the
   other) takes the authority it needed: its author removed / left / demoted (for admin
   operations), its target removed (an add racing a remove), its invite revoked, or its target
   demoted (a promote racing a demote).
4. **Cut-offs.** A removal, leave, revocation or demotion names, in the op itself, the feed
   positions of the devices it ends (:func:`cuts_of`); every operation of those devices past
   them is void whatever deps or timestamp it declares, and :meth:`GroupState.counts` tells
   every layer above which entries count at all. Lines in force are decided outwards from the
   ops nothing cuts (:meth:`_Resolver.acting_cutters`).
5. **Ranks.** An admin may remove or demote only members and admins of a higher rank (the
   founder is rank 0; whoever rank ``r`` makes admin gets ``r + 1``), so no two admins can take
   each other's rights and a removed admin's backdated ops can reach nobody who removed it.
6. The state is the fold of the effective operations in the total order. An invite admits
   once: the first consuming add in the order wins, later ones are void.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from microsync.crypto import X25519PublicKey, labelled_hash, labels
from microsync.errors import DecodeError, MicrosyncError
from microsync.feed.entry import EntryId, GroupId
from microsync.group.ops import DeviceGrant, Op, OpKind, Role, recipients_digest
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    PersonId,
    PrekeyCertificate,
)

__all__ = [
    "INVITE_CLOCK_TOLERANCE_MS",
    "MAX_GROUP_DEVICES",
    "DeviceInfo",
    "EpochInfo",
    "GroupState",
    "InviteInfo",
    "MemberInfo",
    "OpRecord",
    "Resolution",
    "group_id_for",
    "parse_grant",
    "resolve",
]

MAX_GROUP_DEVICES: Final = 4000
"""At most this many member devices: a rotation wraps to each (~61 bytes a wrap) in one entry
whose body is capped at 256 KiB (``feed.MAX_BODY_SIZE``), so a larger group could no longer
remove anyone."""

INVITE_CLOCK_TOLERANCE_MS: Final = 120_000
"""How far past its expiry (by the redeeming admin's clock) an invite is still honoured."""


def group_id_for(founder: DeviceId, nonce: bytes) -> GroupId:
    """A group's id: binds the founding device and a random nonce, so no one else can claim
    to have founded it."""
    return GroupId(labelled_hash(labels.GROUP_ID, founder, nonce))


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device: DeviceId
    person: PersonId
    name: str
    prekey_id: int
    prekey: X25519PublicKey
    certificate: bytes


def parse_grant(grant: DeviceGrant) -> DeviceInfo:
    """Verify a device grant: the certificate signed by its person, the prekey by its device."""
    cert = DeviceCertificate.from_bytes(grant.certificate)
    cert.verify()
    prekey = PrekeyCertificate.from_bytes(grant.prekey_certificate)
    prekey.verify()
    if prekey.device != cert.device:
        raise DecodeError("prekey certificate names another device")
    return DeviceInfo(
        device=cert.device,
        person=cert.person,
        name=cert.device_name,
        prekey_id=prekey.prekey_id,
        prekey=prekey.key,
        certificate=grant.certificate,
    )


@dataclass(frozen=True, slots=True)
class OpRecord:
    """A decrypted membership operation with the header fields the rules need."""

    id: EntryId
    device: DeviceId
    seq: int
    deps: tuple[EntryId, ...]
    op: Op
    grants: tuple[DeviceInfo, ...] = ()  # ``op.devices`` verified; empty if any failed
    revocation: DeviceRevocation | None = None
    malformed: bool = False  # a grant or revocation did not verify: never valid

    @classmethod
    def build(
        cls, id: EntryId, device: DeviceId, seq: int, deps: Iterable[EntryId], op: Op
    ) -> OpRecord:
        try:
            grants = tuple(parse_grant(g) for g in op.devices)
            revocation = None
            if op.revocation is not None:
                revocation = DeviceRevocation.from_bytes(op.revocation)
                revocation.verify()
        except MicrosyncError:
            return cls(id, device, seq, tuple(deps), op, malformed=True)
        return cls(id, device, seq, tuple(deps), op, grants, revocation)


@dataclass(slots=True)
class MemberInfo:
    """A member. ``rank``: how far from the founder the op that gave this member its role was
    (the founder is 0; whoever an admin of rank ``r`` adds or promotes gets ``r + 1``). An admin
    may remove or demote only members and admins of a higher rank (``docs/membership.md``)."""

    person: PersonId
    name: str
    role: Role
    devices: dict[DeviceId, DeviceInfo]
    rank: int = 0


Window = tuple[int, int | None]
"""The positions of one device's feed that count: ``start < seq <= end`` (``None``: open)."""


@dataclass(slots=True)
class InviteInfo:
    invite_id: bytes
    expires_at: int
    role: Role
    issuer: PersonId
    op: EntryId
    revoked: bool = False
    consumed_by: EntryId | None = None


@dataclass(frozen=True, slots=True)
class EpochInfo:
    """An announced epoch.

    ``recipients``: the devices its key was wrapped to (entitled in its author's view).
    ``exposed``: every device that may hold its key by any route: the recipients, plus every
    device a later history bundle gave keys to (an add or a linked device that was allowed in
    its author's view, whether or not it took effect: a voided add still delivered its keys).
    ``superseded``: a removal, leave or revocation happened that this epoch did not see, so a
    device that lost its entitlement may hold the key.
    """

    number: int
    commitment: bytes
    recipients: frozenset[DeviceId]
    op: EntryId
    author: DeviceId
    exposed: frozenset[DeviceId] = frozenset()
    superseded: bool = False

    def usable(self, entitled: frozenset[DeviceId]) -> bool:
        """May new content be written under this epoch's key?"""
        return not self.superseded and self.exposed <= entitled


@dataclass(slots=True)
class GroupState:
    """Who is in the group, with which devices and roles, and the epoch lineage."""

    genesis: EntryId | None = None
    founder: DeviceId | None = None
    name: str = ""
    history: str = "shared"
    members: dict[PersonId, MemberInfo] = field(default_factory=dict)
    revoked: dict[DeviceId, int] = field(default_factory=dict)  # device -> cut-off seq
    invites: dict[bytes, InviteInfo] = field(default_factory=dict)
    epochs: dict[tuple[int, bytes], EpochInfo] = field(default_factory=dict)
    windows: dict[DeviceId, tuple[Window, ...]] = field(default_factory=dict)
    """For every device ever admitted: the stretches of its feed that count."""
    seen: dict[DeviceId, int] = field(default_factory=dict)
    """The highest ``seq`` of each device's membership operations folded here (valid or not):
    an operation may not draw a device's line below what its own causal past holds."""

    def copy(self) -> GroupState:
        return GroupState(
            genesis=self.genesis,
            founder=self.founder,
            name=self.name,
            history=self.history,
            members={p: replace(m, devices=dict(m.devices)) for p, m in self.members.items()},
            revoked=dict(self.revoked),
            invites={i: replace(v) for i, v in self.invites.items()},
            epochs=dict(self.epochs),
            windows=dict(self.windows),
            seen=dict(self.seen),
        )

    def counts(self, device: DeviceId, seq: int) -> bool:
        """Does entry ``seq`` of ``device``'s feed count, of any entry type? Only while a
        membership operation had admitted the device and before any cut-off drawn by its
        removal, its person's leaving or its revocation (``docs/membership.md``, rule 4)."""
        return any(
            start < seq and (end is None or seq <= end)
            for start, end in self.windows.get(device, ())
        )

    def admitted(self, device: DeviceId) -> bool:
        """Was ``device`` ever admitted to the group (whatever happened since)?"""
        return device in self.windows

    def person_of(self, device: DeviceId) -> PersonId | None:
        """The member whose active device ``device`` is, or ``None``."""
        for member in self.members.values():
            if device in member.devices:
                return member.person
        return None

    def device(self, device: DeviceId) -> DeviceInfo | None:
        for member in self.members.values():
            found = member.devices.get(device)
            if found is not None:
                return found
        return None

    def entitled_devices(self) -> frozenset[DeviceId]:
        """Every active device of every member: the devices a new epoch must be wrapped to."""
        return frozenset(d for m in self.members.values() for d in m.devices)

    @property
    def max_epoch(self) -> int:
        return max((n for n, _ in self.epochs), default=-1)

    def current_epoch(self) -> EpochInfo | None:
        """The epoch to write in: of the highest-numbered epochs, those wrapped only to devices
        still entitled, the one with the smallest commitment. ``None`` means a rotation is due
        (someone left, or racing rotations each kept a device that is no longer entitled)."""
        top = self.max_epoch
        entitled = self.entitled_devices()
        candidates = [e for (n, _), e in self.epochs.items() if n == top and e.usable(entitled)]
        return min(candidates, key=lambda e: e.commitment) if candidates else None

    def signature(self) -> tuple[object, ...]:
        """A comparable summary: equal for two replicas that resolved the same operations."""
        return (
            self.genesis,
            self.name,
            self.history,
            tuple(
                (
                    p,
                    m.name,
                    int(m.role),
                    m.rank,
                    sorted((d, i.prekey_id) for d, i in m.devices.items()),
                )
                for p, m in sorted(self.members.items(), key=lambda item: item[0])
            ),
            tuple(sorted(self.revoked.items())),
            tuple(sorted(self.windows.items())),
            tuple(
                (i, v.expires_at, int(v.role), v.revoked, v.consumed_by)
                for i, v in sorted(self.invites.items())
            ),
            tuple(
                (k, sorted(e.recipients), e.op, e.usable(self.entitled_devices()))
                for k, e in sorted(self.epochs.items())
            ),
        )


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of :func:`resolve`: the state and which operations took effect."""

    state: GroupState
    order: tuple[EntryId, ...]
    effective: frozenset[EntryId]
    authors: Mapping[EntryId, PersonId]
    valid: frozenset[EntryId] = frozenset()  # causally valid, whether or not effective

    def void_epochs(self, records: Mapping[EntryId, OpRecord]) -> set[tuple[int, bytes]]:
        """Epochs announced by causally valid operations that did not take effect (their
        author was concurrently removed, for example). Ops may be sealed under such a key by
        an author who had not seen the voiding yet, so replicas keep these keys and hand out
        their control keys; nobody writes new content under them."""
        out = set()
        for op_id in self.valid - self.effective:
            rec = records.get(op_id)
            if rec is not None and rec.op.epoch is not None:
                out.add((rec.op.epoch.number, rec.op.epoch.commitment))
        return out - set(self.state.epochs)


# --------------------------------------------------------------------------- rules

ADMIN_KINDS = frozenset(
    {OpKind.ADD, OpKind.REMOVE, OpKind.SET_ROLE, OpKind.INVITE, OpKind.REVOKE_INVITE}
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
        if op.person in state.members or not rec.grants:
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
        return (
            len(rec.grants) == 1
            and len(state.entitled_devices()) < MAX_GROUP_DEVICES
            and rec.grants[0].person == author
            and state.device(rec.grants[0].device) is None
            and rec.grants[0].device not in state.revoked
            and _covers(rec, {rec.grants[0].device}, state)
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
    entitled = _after(state, rec, author).entitled_devices()
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
    if kind is OpKind.CREATE:
        g = rec.grants[0]
        assert op.name is not None and op.group_name is not None and op.history is not None
        state.genesis, state.founder = rec.id, rec.device
        state.name, state.history = op.group_name, op.history
        state.members[g.person] = MemberInfo(g.person, op.name, Role.ADMIN, {g.device: g})
        _open_window(state, g.device, 0)
    elif kind is OpKind.ADD:
        assert op.person is not None and op.role is not None and op.name is not None
        if op.invite_id is not None:
            invite = state.invites.get(op.invite_id)
            if invite is None or invite.consumed_by is not None or invite.revoked:
                return False
            invite.consumed_by = rec.id
        existing = state.members.get(op.person)
        if existing is None:
            devices = {g.device: g for g in rec.grants if g.device not in state.revoked}
            rank = _rank_after(state, author)
            state.members[op.person] = MemberInfo(op.person, op.name, op.role, devices, rank)
        else:  # racing adds of one person: keep the first's name and role, join the devices
            for g in rec.grants:
                if g.device not in state.revoked:
                    existing.devices.setdefault(g.device, g)
        _open_windows(state, rec, state.members[op.person].devices)
    elif kind in _EXITS:
        _exit(state, rec, author)
    elif kind is OpKind.SET_ROLE:
        assert op.person is not None and op.role is not None
        target = state.members.get(op.person)
        if target is not None:
            if op.role is Role.ADMIN:
                target.rank = _rank_after(state, author)
            target.role = op.role
    elif kind is OpKind.ADD_DEVICE:
        g = rec.grants[0]
        member = state.members.get(g.person)
        if member is not None and g.device not in state.revoked:
            member.devices.setdefault(g.device, g)
            _open_windows(state, rec, member.devices)
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


def _open_window(state: GroupState, device: DeviceId, start: int) -> None:
    windows = state.windows.get(device, ())
    if windows and windows[-1][1] is None:
        return  # already counting (racing adds of one device)
    state.windows[device] = (*windows, (start, None))


def _open_windows(state: GroupState, rec: OpRecord, admitted: Mapping[DeviceId, object]) -> None:
    positions = dict(rec.op.positions)
    for g in rec.grants:
        if g.device in admitted:
            _open_window(state, g.device, positions.get(g.device, 0))


def _close_window(state: GroupState, device: DeviceId, end: int | None) -> None:
    """Stop counting ``device`` after ``end`` (``None``: after nothing new). A second exit
    (two admins removing one person at once) can only move the line earlier."""
    windows = state.windows.get(device, ())
    if not windows:
        return
    start, current = windows[-1]
    end = start if end is None else max(start, end)
    if current is not None:
        end = min(current, end)
    state.windows[device] = (*windows[:-1], (start, end))


def _exit(state: GroupState, rec: OpRecord, author: PersonId | None) -> None:
    """A removal, a leave or a device revocation: the devices it puts out stop counting at
    the cut-off the operation itself names (see :func:`cuts_of`)."""
    op = rec.op
    for device, cutoff, full in cuts_of(rec):
        if full:
            _close_window(state, device, cutoff)
    if op.kind is OpKind.REVOKE_DEVICE:
        r = rec.revocation
        assert r is not None and op.cutoff is not None
        state.revoked[r.device] = min(op.cutoff, state.revoked.get(r.device, op.cutoff))
        for member in state.members.values():
            member.devices.pop(r.device, None)
        return
    person = op.person if op.kind is OpKind.REMOVE else author
    gone = state.members.pop(person, None) if person is not None else None
    for device in () if gone is None else gone.devices:
        named = {d for d, _, _ in cuts_of(rec)}
        if device not in named:  # joined concurrently: nothing of it after its start counts
            _close_window(state, device, None)


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
        return tuple((d, seq, True) for d, seq in op.positions)
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


# ------------------------------------------------------------------------ resolution


def topological_order(records: Mapping[EntryId, OpRecord]) -> list[EntryId]:
    """Kahn's algorithm, smallest entry id first among the ready: depends only on the set.

    Records whose ``deps`` are not all in ``records`` are left out (with their descendants).
    """
    children: dict[EntryId, list[EntryId]] = {}
    missing: dict[EntryId, int] = {}
    for rec in records.values():
        deps = set(rec.deps)
        missing[rec.id] = len(deps)
        for dep in deps:
            children.setdefault(dep, []).append(rec.id)
    ready = [i for i, n in missing.items() if n == 0]
    heapq.heapify(ready)
    order: list[EntryId] = []
    while ready:
        current = heapq.heappop(ready)
        order.append(current)
        for child in children.get(current, ()):
            missing[child] -= 1
            if missing[child] == 0:
                heapq.heappush(ready, child)
    return order


@dataclass(slots=True)
class _Resolver:
    group: GroupId
    recs: list[OpRecord]
    anc: list[int]
    valid: list[bool] = field(default_factory=list)
    author: list[PersonId | None] = field(default_factory=list)
    recipients: list[frozenset[DeviceId]] = field(default_factory=list)
    memo: dict[int, _Fold] = field(default_factory=dict)
    cuts: list[tuple[Cut, ...]] = field(default_factory=list)
    opens: list[tuple[Cut, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cuts = [cuts_of(r) for r in self.recs]
        self.opens = [opens_of(r) for r in self.recs]

    def fold(self, subset: int) -> _Fold:
        """The state of a causally closed subset (bitset over the order), its effective ops
        (bitset) and the cut-offs in force in it."""
        cached = self.memo.get(subset)
        if cached is not None:
            return cached
        members = list(_bits(subset))
        acting, forced = self.acting_cutters(members)
        cut = {i for i in members if self.is_cut(i, acting, members)}
        reductions = [
            i
            for i in members
            if self.valid[i] and _is_reduction(self.recs[i].op) and (i not in cut or i in forced)
        ]
        state = GroupState()
        effective = 0
        for i in members:
            note_seen(state, self.recs[i])
            if i in cut or not self.effective_in(i, reductions):
                if i in forced:
                    _force(state, self.recs[i], self.author[i])
                continue
            if _apply(state, self.recs[i], self.author[i], self.recipients[i]):
                effective |= 1 << i
        result = _Fold(state, effective, acting, reductions)
        self.memo[subset] = result
        return result

    def acting_cutters(self, members: Sequence[int]) -> tuple[list[int], set[int]]:
        """Which valid cut-drawing ops of ``members`` are in force: those no op in force cuts
        off (grounded: decided from the ops nothing cuts, outwards). Ops that cut each other in
        a cycle (two devices of one person revoking each other) all act, least privilege: their
        targets are out, and none of them takes effect itself (``forced``)."""
        cutters = [i for i in members if self.valid[i] and self.cuts[i]]
        attackers = {i: [r for r in cutters if self.attacks(r, i, members)] for i in cutters}
        status: dict[int, bool] = {}
        changed = True
        while changed:
            changed = False
            for i in cutters:
                if i in status:
                    continue
                if any(status.get(a) is True for a in attackers[i]):
                    status[i], changed = False, True
                elif all(status.get(a) is False for a in attackers[i]):
                    status[i], changed = True, True
        forced = {i for i in cutters if i not in status}
        return [i for i in cutters if status.get(i, True)], forced

    def attacks(self, r: int, i: int, members: Sequence[int]) -> bool:
        """Does cutter ``r`` cut op ``i`` off (``i`` lies past a line ``r`` draws through its
        author's feed, and no later admission that ``i`` follows started again before it)?"""
        if r == i:
            return False
        rec = self.recs[i]
        for device, cutoff, total in self.cuts[r]:
            if device != rec.device or rec.seq <= cutoff:
                continue
            if not total and rec.op.kind not in ADMIN_KINDS:
                continue
            if not self.readmitted(r, i, total, members):
                return True
        return False

    def readmitted(self, r: int, i: int, total: bool, members: Sequence[int]) -> bool:
        """Did a valid admission after ``r`` in the total order (as the fold reopens the
        device's stretch) start again before op ``i``, and had ``i`` seen it? (A re-admitted
        device's operations count again once they follow its re-admission; what it wrote
        while out, claiming older deps, stays cut.)"""
        rec = self.recs[i]
        for a in members:
            if a <= r or not self.valid[a] or not (self.anc[i] >> a) & 1:
                continue
            for device, start, whole in self.opens[a]:
                if device == rec.device and start < rec.seq and (whole or not total):
                    return True
        return False

    def is_cut(self, i: int, acting: list[int], members: Sequence[int]) -> bool:
        return any(self.attacks(r, i, members) for r in acting)

    def effective_in(self, i: int, reductions: list[int]) -> bool:
        """Is valid op ``i`` left standing by the valid reductions concurrent with it?"""
        if not self.valid[i]:
            return False
        rec = self.recs[i]
        if _is_reduction(rec.op):
            return True
        for r in reductions:
            concurrent = not (self.anc[i] >> r) & 1 and not (self.anc[r] >> i) & 1
            if concurrent and r != i and _voids(self.recs[r], self.author[r], rec, self.author[i]):
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Fold:
    state: GroupState
    effective: int
    acting: list[int]  # cut-drawing ops in force
    reductions: list[int]  # reductions that may void concurrent ops


def _force(state: GroupState, rec: OpRecord, author: PersonId | None) -> None:
    """What a cut-drawing op caught in a cycle still does: its target loses what it took."""
    if rec.op.kind in _EXITS:
        _exit(state, rec, author)
    elif rec.op.kind is OpKind.SET_ROLE and rec.op.person in state.members:
        state.members[rec.op.person].role = Role.MEMBER


def note_seen(state: GroupState, rec: OpRecord) -> None:
    state.seen[rec.device] = max(rec.seq, state.seen.get(rec.device, 0))


def _bits(value: int) -> Iterable[int]:
    i = 0
    while value:
        if value & 1:
            yield i
        value >>= 1
        i += 1


def resolve(group: GroupId, records: Mapping[EntryId, OpRecord]) -> Resolution:
    """Resolve a set of operations into the group state (see the module docstring).

    A pure function of the set: any delivery order gives an equal result.
    """
    order = topological_order(records)
    index = {op_id: i for i, op_id in enumerate(order)}
    recs = [records[op_id] for op_id in order]
    anc: list[int] = []
    for rec in recs:
        bits = 0
        for dep in rec.deps:
            j = index[dep]
            bits |= anc[j] | (1 << j)
        anc.append(bits)
    resolver = _Resolver(group, recs, anc)
    # running fold of the prefix, for the common case where an op has seen everything before it
    running = _Fold(GroupState(), 0, [], [])
    cut_devices: set[DeviceId] = set()
    for i, rec in enumerate(recs):
        prefix = (1 << i) - 1
        past = running.state if anc[i] == prefix else resolver.fold(anc[i]).state
        verdict = authorize(group, rec, past)
        resolver.valid.append(verdict.ok)
        resolver.author.append(verdict.author)
        resolver.recipients.append(verdict.recipients)
        # extend the running fold by op i. An op that draws cut-offs, a reduction that did not
        # see everything, or an admission of a device some op cut off may change what ops
        # already folded count for: refold.
        draws = verdict.ok and bool(resolver.cuts[i])
        cut_devices.update(d for d, _, _ in resolver.cuts[i])
        reduction = verdict.ok and _is_reduction(rec.op)
        readmits = any(d in cut_devices for d, _, _ in resolver.opens[i])
        if draws or readmits or (reduction and anc[i] != prefix):
            running = resolver.fold(prefix | (1 << i))
            running = replace(running, state=running.state.copy())
            continue
        note_seen(running.state, rec)
        if reduction:  # a revoked invite voids what consumes it concurrently, later in order
            running = replace(running, reductions=[*running.reductions, i])
        if resolver.is_cut(i, running.acting, range(i + 1)) or not resolver.effective_in(
            i, running.reductions
        ):
            continue
        if _apply(running.state, rec, verdict.author, verdict.recipients):
            running = replace(running, effective=running.effective | (1 << i))
    state = running.state
    _expose(state, resolver, running.effective)
    effective = frozenset(order[i] for i in _bits(running.effective))
    authors = {order[i]: a for i, a in enumerate(resolver.author) if a is not None}
    valid = frozenset(order[i] for i, ok in enumerate(resolver.valid) if ok)
    return Resolution(state, tuple(order), effective, authors, valid)


def _expose(state: GroupState, resolver: _Resolver, effective: int) -> None:
    """Mark, for every epoch, who may hold its key and whether a loss of entitlement happened
    that it did not see (see :class:`EpochInfo`)."""
    recs, anc = resolver.recs, resolver.anc
    index = {rec.id: i for i, rec in enumerate(recs)}
    reductions = [i for i in _bits(effective) if recs[i].op.kind in _MEMBER_REDUCTIONS]
    for key, epoch in list(state.epochs.items()):
        e = index[epoch.op]
        superseded = any(r != e and not (anc[e] >> r) & 1 for r in reductions)
        exposed = set(epoch.exposed)
        for j, rec in enumerate(recs):
            if j != e and (anc[j] >> e) & 1 and resolver.valid[j]:
                exposed |= joiners(rec)
        state.epochs[key] = replace(epoch, superseded=superseded, exposed=frozenset(exposed))
