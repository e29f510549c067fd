"""Checks over a simulated network: did the views converge, and who can read what.

``check_convergence`` trusts the *informed* replicas: those that can open every membership
entry they hold. A device that was removed, left or was revoked can no longer open operations
sealed after it went, so its view legitimately stops where it was cut off; it is compared only
while it is still informed. Every device an informed view lists as a member must hold an
identical view.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from microsync.errors import DecryptionError
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.group.keys import KEY_REF_SIZE
from microsync.group.membership import GroupState, resolve
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.group.replica import GroupReplica
from microsync.testing.device import SimDevice

__all__ = [
    "Readability",
    "check_convergence",
    "check_resolution",
    "entitlement_report",
    "forget_key",
    "member_devices",
    "render_view",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Readability:
    """Who can decrypt one content entry.

    ``epoch`` and ``key_ref`` name the key it was written under (the key ref is the first 16
    bytes of the epoch's commitment); ``readers`` are the names of the devices whose replica
    decrypts it; ``plaintext`` is what they read (``None`` if nobody can).
    """

    entry: Entry
    author: str
    epoch: int
    key_ref: bytes
    readers: frozenset[str]
    plaintext: bytes | None


def forget_key(replica: GroupReplica, slot: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
    """Drop one epoch key from ``replica``'s keyring in memory, as if it had never reached
    this device (the newest one when ``slot`` is not given); returns its slot. What the
    profile stores is unchanged, so reloading the replica brings it back."""
    keys = replica._ring.keys
    slot = max(keys) if slot is None else slot
    del keys[slot]
    return slot


def _labels(devices: Sequence[SimDevice]) -> dict[bytes, str]:
    """Readable names for device ids and person ids (a person is named after its first
    device)."""
    labels: dict[bytes, str] = {}
    for device in devices:
        labels[device.device_id] = device.name
        labels.setdefault(device.person_id, f"person:{device.name}")
    return labels


def _name(labels: Mapping[bytes, str], value: bytes | None) -> str:
    if value is None:
        return "-"
    return labels.get(value, value[:4].hex())


def _render_state(state: GroupState, labels: Mapping[bytes, str]) -> list[str]:
    lines = [f"group {state.name!r} history={state.history} genesis={_name(labels, state.genesis)}"]
    for member in sorted(state.members.values(), key=lambda m: _name(labels, m.person)):
        devices = ", ".join(
            sorted(f"{_name(labels, d)}#{i.prekey_id}" for d, i in member.devices.items())
        )
        lines.append(
            f"member {_name(labels, member.person)} ({member.name}) {member.role}: {devices}"
        )
    for device, cutoff in sorted(state.revoked.items()):
        lines.append(f"revoked {_name(labels, device)} after seq {cutoff}")
    for invite in sorted(state.invites.values(), key=lambda i: i.invite_id):
        lines.append(
            f"invite {invite.invite_id[:4].hex()} {invite.role} expires={invite.expires_at} "
            f"revoked={invite.revoked} consumed={invite.consumed_by is not None}"
        )
    entitled = state.entitled_devices()
    for (number, commitment), epoch in sorted(state.epochs.items()):
        recipients = ", ".join(sorted(_name(labels, d) for d in epoch.recipients))
        lines.append(
            f"epoch {number}/{commitment[:4].hex()} by {_name(labels, epoch.author)} "
            f"to [{recipients}] usable={epoch.usable(entitled)}"
        )
    return lines


def render_view(replica: GroupReplica, devices: Sequence[SimDevice]) -> list[str]:
    """One replica's view as readable lines: members, roles, devices, revocations, invites,
    epochs, then the effective operations (author#seq kind)."""
    labels = _labels(devices)
    lines = _render_state(replica.state, labels)
    effective = []
    for op_id in replica.resolution.effective:
        record = replica.operation(op_id)
        assert record is not None  # an effective op was opened
        effective.append(f"op {_name(labels, record.device)}#{record.seq} {record.op.kind.name}")
    return lines + sorted(effective)


def member_devices(devices: Sequence[SimDevice], group: GroupId) -> list[SimDevice]:
    """The member devices of ``group`` as the *informed* replicas see it: those that can open
    every membership entry they hold (after :meth:`SimNetwork.settle` their view is the
    resolution of every operation). With no informed replica: every device that counts itself
    in, and every device such a view lists."""
    return [d for d in devices if d.device_id in _listed(devices, group)]


def _informed(devices: Sequence[SimDevice], group: GroupId) -> list[SimDevice]:
    return [d for d in devices if d.holds(group) and not d.replica(group).locked()]


def _listed(devices: Sequence[SimDevice], group: GroupId) -> set[bytes]:
    views = _informed(devices, group)
    if not views:
        views = [d for d in devices if d.holds(group) and d.replica(group).is_member]
    listed: set[bytes] = set()
    for device in views:
        listed |= device.replica(group).state.entitled_devices()
    return listed


def _subjects(devices: Sequence[SimDevice], group: GroupId) -> tuple[list[SimDevice], list[str]]:
    """The devices to compare (informed replicas and listed members), and the names of stale
    devices: they count themselves in, but are neither informed nor listed."""
    listed = _listed(devices, group)
    informed = {d.device_id for d in _informed(devices, group)}
    subjects = [d for d in devices if d.device_id in listed | informed]
    stale = [
        d.name
        for d in devices
        if d.holds(group) and d.replica(group).is_member and d not in subjects
    ]
    return subjects, stale


def _effective(replica: GroupReplica) -> frozenset[EntryId]:
    return replica.resolution.effective


def check_resolution(replica: GroupReplica) -> None:
    """Raise ``AssertionError`` unless ``replica``'s view (kept up to date incrementally) equals
    :func:`~microsync.group.membership.resolve` run afresh on the operations it has opened:
    membership must be a function of the set of operations."""
    records = {}
    for op_id in replica.resolution.order:
        record = replica.operation(op_id)
        assert record is not None  # only opened ops are ordered
        records[op_id] = record
    fresh = resolve(replica.id, records)
    if fresh.effective != replica.resolution.effective:
        gained = len(replica.resolution.effective - fresh.effective)
        lost = len(fresh.effective - replica.resolution.effective)
        raise AssertionError(
            f"{replica.me.identity.name}: the live view counts {gained} op(s) effective and "
            f"{lost} void that resolving its operations afresh does not"
        )
    if fresh.state.signature() != replica.state.signature():
        raise AssertionError(f"{replica.me.identity.name}: the live state differs from resolve()")


def check_convergence(
    devices: Sequence[SimDevice], group: GroupId, *, strict: bool = False
) -> None:
    """Raise ``AssertionError`` unless every member device of ``group`` has the same view.

    The devices compared are the member devices (:func:`member_devices`) and every *informed*
    replica (member or not) that can open every membership entry it holds. Each one's live view
    must first equal a fresh resolution of the operations it holds (:func:`check_resolution`). Their
    ``state.signature()`` (members, roles, devices, revocations, invites, epoch lineage) and
    their sets of effective operations must be identical. The message shows each differing
    view as a unified diff against the first.

    A device that still counts itself in but is neither informed nor listed is *stale*: it
    cannot open the operation that put it out (for example its own admission was voided by a
    concurrent removal before it received a key). Stale devices fail the check only when
    ``strict``.
    """
    subjects, stale = _subjects(devices, group)
    for device in subjects:
        if device.holds(group):
            check_resolution(device.replica(group))
    if strict and stale:
        raise AssertionError(f"devices count themselves in but no member lists them: {stale}")
    absent = [d.name for d in subjects if not d.holds(group)]
    if absent:
        raise AssertionError(f"member devices hold no replica of the group: {absent}")
    if len(subjects) < 2:
        return
    first = subjects[0].replica(group)
    problems = []
    for other in subjects[1:]:
        replica = other.replica(group)
        same_state = replica.state.signature() == first.state.signature()
        if same_state and _effective(replica) == _effective(first):
            continue
        diff = difflib.unified_diff(
            render_view(first, devices),
            render_view(replica, devices),
            fromfile=subjects[0].name,
            tofile=other.name,
            lineterm="",
        )
        problems.append("\n".join(diff))
    if problems:
        names = ", ".join(d.name for d in subjects)
        header = f"views of the group differ (members: {names})"
        raise AssertionError("\n".join([header, *problems]))


def entitlement_report(devices: Sequence[SimDevice], group: GroupId) -> list[Readability]:
    """For every content entry any device stores, the devices whose replica decrypts it.

    A device that does not store the entry (or holds no replica) cannot read it. Raises
    ``AssertionError`` if two readers decrypt one entry to different plaintexts.
    """
    labels = _labels(devices)
    entries: dict[EntryId, Entry] = {}
    for device in devices:
        for author in device.store.feeds(group):
            for stored in device.store.entries(group, author):
                if stored.entry.header.type != MEMBERSHIP_TYPE:
                    entries.setdefault(stored.entry.id, stored.entry)
    report = []
    for entry in sorted(entries.values(), key=lambda e: (e.header.device, e.header.seq)):
        report.append(_readability(devices, group, entry, labels))
    return report


def _readability(
    devices: Sequence[SimDevice], group: GroupId, entry: Entry, labels: Mapping[bytes, str]
) -> Readability:
    h = entry.header
    readers: set[str] = set()
    texts: set[bytes] = set()
    ref = b""
    for device in devices:
        stored = device.store.entry_at(group, h.device, h.seq)
        if stored is None or stored.entry.id != entry.id or not device.holds(group):
            continue
        if stored.body is not None:
            ref = stored.body[:KEY_REF_SIZE]
        try:
            texts.add(device.replica(group).decrypt(stored))
        except DecryptionError:
            continue
        readers.add(device.name)
    if len(texts) > 1:
        raise AssertionError(f"readers of {entry!r} decrypt different plaintexts")
    return Readability(
        entry=entry,
        author=_name(labels, h.device),
        epoch=h.epoch,
        key_ref=ref,
        readers=frozenset(readers),
        plaintext=next(iter(texts), None),
    )
