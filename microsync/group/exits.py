"""Former members and key requests: who put a device out, and which keys a device is owed.

Pure functions of the resolved membership (``res``), the opened operations (``records``) and
the keyring. A device a valid operation admitted but that is out now (removed, revoked, or its
admission voided by a concurrent reduction) may lack the key that seals the very operation that
put it out, and would then believe it is still in: :func:`former_grants` gives it the control
keys (never content keys) of the epochs started in the causal past of those operations, enough
to open them and their past and nothing from after its exit. A current member's device gets
what :func:`member_grants` allows: control keys always, content keys only when
:func:`entitled_to_content`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from microsync.errors import NotAMember
from microsync.feed import EntryId
from microsync.group.keyring import Keyring, Slot
from microsync.group.keys import EpochKey, KeyGrant
from microsync.group.membership import (
    DeviceInfo,
    GroupState,
    OpRecord,
    Resolution,
    _is_reduction,
    _voids,
)
from microsync.group.ops import OpKind
from microsync.identity import DeviceId

__all__ = [
    "ancestors",
    "entitled_to_content",
    "exits",
    "former",
    "former_grants",
    "member_grants",
]

Records = Mapping[EntryId, OpRecord]
_ADMITTING = (OpKind.CREATE, OpKind.ADD, OpKind.ADD_DEVICE)


def ancestors(records: Records, op_id: EntryId) -> set[EntryId]:
    """The causal past of ``op_id`` (the ops it names in ``deps``, transitively)."""
    seen: set[EntryId] = set()
    stack = list(records[op_id].deps)
    while stack:
        current = stack.pop()
        if current not in seen and current in records:
            seen.add(current)
            stack.extend(records[current].deps)
    return seen


def former(
    res: Resolution, records: Records, device: DeviceId
) -> tuple[list[OpRecord], DeviceInfo] | None:
    """The valid operations that admitted ``device`` and its latest grant (admissions and the
    prekeys it published while in); ``None`` if nothing admitted it."""
    admitted = [
        r
        for r in records.values()
        if r.id in res.valid
        and r.op.kind in _ADMITTING
        and any(g.device == device for g in r.grants)
    ]
    if not admitted:
        return None
    known = [g for r in admitted for g in r.grants if g.device == device]
    for r in records.values():  # a prekey it published while it was in
        if r.id in res.effective and r.op.kind is OpKind.PREKEY:
            known.extend(g for g in r.grants if g.device == device)
    return admitted, max(known, key=lambda g: g.prekey_id)


def exits(
    res: Resolution, records: Records, info: DeviceInfo, admitted: list[OpRecord]
) -> list[EntryId]:
    """The effective reductions that put ``info.device`` out: the removal or departure of
    its person, its revocation, and whatever voided an operation that admitted it."""
    out: list[EntryId] = []
    reductions = [
        records[i] for i in res.effective if i in records and _is_reduction(records[i].op)
    ]
    for r in reductions:
        op = r.op
        revoked = r.revocation.device if r.revocation is not None else None
        if (
            (op.kind is OpKind.REMOVE and op.person == info.person)
            or (op.kind is OpKind.LEAVE and res.authors.get(r.id) == info.person)
            or revoked == info.device
        ):
            out.append(r.id)
    for j in admitted:
        if j.id not in res.effective:
            out += _voiders(res, records, j, reductions)
    return out


def _voiders(
    res: Resolution, records: Records, j: OpRecord, reductions: list[OpRecord]
) -> list[EntryId]:
    """The reductions that voided the admitting operation ``j``."""
    out: list[EntryId] = []
    past = ancestors(records, j.id)
    for r in reductions:
        if r.id in past:
            continue
        cut = r.op.cutoff
        if r.revocation is not None and r.revocation.device == j.device:
            if cut is not None and j.seq > cut:  # its author's revocation cut it off
                out.append(r.id)
        elif j.id not in ancestors(records, r.id) and _voids(
            r, res.authors.get(r.id), j, res.authors.get(j.id)
        ):
            out.append(r.id)
    return out


def entitled_to_content(state: GroupState, info: DeviceInfo, key: EpochKey) -> bool:
    """May ``info``'s device hold ``key``'s content key? Always with shared history; with
    ``"none"``, only for epochs its person's devices (or it) were wrapped."""
    epoch = state.epochs.get((key.number, key.commitment))
    if epoch is None:
        return False  # a void epoch: its content is owed to no one
    if state.history == "shared":
        return True
    member = state.members.get(info.person)
    devices = set(member.devices) if member is not None else set()
    return bool(epoch.recipients & (devices | {info.device}))


def member_grants(
    state: GroupState, ring: Keyring, info: DeviceInfo, wanted: Iterable[Slot]
) -> list[KeyGrant]:
    """The requested keys held here for a current member's device ``info``."""
    grants = []
    for number, ref in wanted:
        key = ring.key_for(number, ref[:16])
        if key is None:
            continue
        full = key.root is not None and entitled_to_content(state, info, key)
        grants.append(KeyGrant.of(key, full))
    return grants


def former_grants(
    res: Resolution, records: Records, ring: Keyring, requester: DeviceId, wanted: Iterable[Slot]
) -> tuple[DeviceInfo, list[KeyGrant]]:
    """For a device that is out: its grant, and the control keys of the requested epochs
    started in the causal past of what put it out (module doc). :class:`NotAMember` if
    nothing ever admitted it, or none of what it asks for is owed to it."""
    found = former(res, records, requester)
    if found is None:
        raise NotAMember("keys are only given to members' devices")
    admitted, info = found
    allowed: set[Slot] = set()
    for exit_id in exits(res, records, info, admitted):
        for op_id in ancestors(records, exit_id):
            started = records[op_id].op.epoch
            if started is not None:
                allowed.add((started.number, started.commitment))
    grants = []
    for number, ref in wanted:
        key = ring.key_for(number, ref[:16])
        if key is not None and (key.number, key.commitment) in allowed:
            grants.append(KeyGrant.of(key, False))
    if not grants:
        raise NotAMember("keys are only given to members' devices")
    return info, grants
