"""Resolution: membership as a deterministic function of the SET of operations.

Operations are ordered topologically (ties by entry id); an operation is causally valid when
its author was allowed it in the state of exactly its causal past; reductions that are valid
and not cut off take effect, and void the concurrent operations whose authority they take;
cut-off lines in force are decided outwards from the operations nothing cuts
(``docs/membership.md``, :mod:`microsync.group.membership`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from microsync.feed.entry import EntryId, GroupId
from microsync.group.moderators import close_admin
from microsync.group.ops import OpKind, Role
from microsync.group.recovery_rule import force_recovery
from microsync.group.rules import (
    _EXITS,
    _MEMBER_REDUCTIONS,
    ADMIN_KINDS,
    Cut,
    _apply,
    _exit,
    _is_reduction,
    _voids,
    authorize,
    cuts_of,
    joiners,
    opens_of,
)
from microsync.group.state import (
    GroupState,
    OpRecord,
    Resolution,
)
from microsync.identity import (
    DeviceId,
    PersonId,
)

__all__ = ["note_seen", "resolve", "topological_order"]


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
        named = dict(rec.op.positions)
        close_admin(state, [(d, named.get(d)) for d in state.members[rec.op.person].devices])
    elif rec.op.kind is OpKind.ADD_DEVICE:
        force_recovery(state, rec, cuts_of(rec))


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
