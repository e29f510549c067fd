"""Membership state: who is in a group, with which devices and roles, the epoch lineage,
and which stretch of each device's feed counts. Plain data, sans-IO and pure.

:class:`GroupState` is what the rules (:mod:`microsync.group.rules`) fold operations into;
:class:`Resolution` is what :func:`~microsync.group.resolver.resolve` returns. The rules are
written out in ``docs/membership.md``; :mod:`microsync.group.membership` keeps every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from microsync.crypto import X25519PublicKey, labelled_hash, labels
from microsync.errors import DecodeError, MicrosyncError
from microsync.feed.entry import EntryId, GroupId
from microsync.group.ops import DeviceGrant, History, Op, Role
from microsync.group.settings import DEFAULT_KEEPER_ORIGINALS
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    PersonId,
    PrekeyCertificate,
    RecoveryCertificate,
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
    "Window",
    "group_id_for",
    "parse_grant",
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
    recovery: RecoveryCertificate | None = None  # verified by its own key; the rule checks it

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
            recovery = None
            if op.recovery is not None:
                recovery = RecoveryCertificate.from_bytes(op.recovery)
                recovery.verify()
        except MicrosyncError:
            return cls(id, device, seq, tuple(deps), op, malformed=True)
        return cls(id, device, seq, tuple(deps), op, grants, revocation, recovery=recovery)


@dataclass(slots=True)
class MemberInfo:
    """A member. ``rank``: how far from the founder the op that gave this member its role was
    (the founder is 0; whoever an admin of rank ``r`` adds or promotes gets ``r + 1``). An admin
    may remove or demote only members and admins of a higher rank (``docs/membership.md``).
    ``recovery_key``: the public recovery key registered when the member joined (``None``: the
    words cannot take this member back); the first registered stays for good."""

    person: PersonId
    name: str
    role: Role
    devices: dict[DeviceId, DeviceInfo]
    rank: int = 0
    recovery_key: bytes | None = None


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
    history: History = History.SHARED
    members: dict[PersonId, MemberInfo] = field(default_factory=dict)
    revoked: dict[DeviceId, int] = field(default_factory=dict)  # device -> cut-off seq
    invites: dict[bytes, InviteInfo] = field(default_factory=dict)
    epochs: dict[tuple[int, bytes], EpochInfo] = field(default_factory=dict)
    windows: dict[DeviceId, tuple[Window, ...]] = field(default_factory=dict)
    """For every device ever admitted: the stretches of its feed that count."""
    max_members: int | None = None
    """The member cap the CREATE set (``None``: none but :data:`MAX_GROUP_DEVICES`)."""
    admin_windows: dict[DeviceId, tuple[Window, ...]] = field(default_factory=dict)
    """For every device that ever acted as an admin: the stretches of its feed written while
    its person was an admin (``microsync.group.moderators``; moderation counts only there)."""
    seen: dict[DeviceId, int] = field(default_factory=dict)
    """The highest ``seq`` of each device's membership operations folded here (valid or not):
    an operation may not draw a device's line below what its own causal past holds."""
    keepers: tuple[str, ...] = ()
    """The group's keepers (canonical URLs, at most four), as admins' ``SETTINGS`` ops set
    them (:mod:`microsync.group.settings`)."""
    keeper_originals: int = DEFAULT_KEEPER_ORIGINALS
    """Vault files up to this many bytes are pushed whole to the keepers (admins set it)."""

    def copy(self) -> GroupState:
        """A copy whose members and invites can change without touching this one (through
        the constructors: ``dataclasses.replace`` costs about three times as much)."""
        members = {
            p: MemberInfo(m.person, m.name, m.role, dict(m.devices), m.rank, m.recovery_key)
            for p, m in self.members.items()
        }
        invites = {
            i: InviteInfo(
                v.invite_id, v.expires_at, v.role, v.issuer, v.op, v.revoked, v.consumed_by
            )
            for i, v in self.invites.items()
        }
        return GroupState(
            genesis=self.genesis,
            founder=self.founder,
            name=self.name,
            history=self.history,
            members=members,
            revoked=dict(self.revoked),
            invites=invites,
            epochs=dict(self.epochs),
            windows=dict(self.windows),
            max_members=self.max_members,
            admin_windows=dict(self.admin_windows),
            seen=dict(self.seen),
            keepers=self.keepers,
            keeper_originals=self.keeper_originals,
        )

    def counts(self, device: DeviceId, seq: int) -> bool:
        """Does entry ``seq`` of ``device``'s feed count, of any entry type? Only while a
        membership operation had admitted the device and before any cut-off drawn by its
        removal, its person's leaving or its revocation (``docs/membership.md``, rule 4)."""
        return any(
            start < seq and (end is None or seq <= end)
            for start, end in self.windows.get(device, ())
        )

    def full(self) -> bool:
        """Does the group hold as many members as its cap allows (no add can take effect)?"""
        return self.max_members is not None and len(self.members) >= self.max_members

    def moderates(self, device: DeviceId, seq: int) -> bool:
        """Was entry ``seq`` of ``device``'s feed written while the device counted and its
        person was an admin (by the same cut-off lines as membership operations)?"""
        return self.counts(device, seq) and any(
            start < seq and (end is None or seq <= end)
            for start, end in self.admin_windows.get(device, ())
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
            self.max_members,
            tuple(sorted(self.admin_windows.items())),
            tuple(
                (
                    p,
                    m.name,
                    int(m.role),
                    m.rank,
                    sorted((d, i.prekey_id) for d, i in m.devices.items()),
                    m.recovery_key,
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
            self.keepers,
            self.keeper_originals,
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
