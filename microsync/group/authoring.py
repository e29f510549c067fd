"""Pure builders of the ten membership operations: ``(state, keys, rng) -> Draft``.

A :class:`Draft` is an operation ready to be sealed and appended: the :class:`~.ops.Op`, the
epoch key to seal it under, the key bundles it carries, and the epoch keys this device made
for it (kept only once the operation is written). :class:`Authoring` reads this device's
identity, the group's resolved state and keyring, randomness, and the feed heads as this
device holds them; it writes nothing and keeps no state between calls. The replica checks
membership first, appends the draft (:func:`seal`), folds it, and explains a refusal with
:func:`refusal`.

Randomness is drawn in a fixed order per operation (a new epoch's root, then each bundle's
wraps, then the sealing nonce), so a seeded ``rng`` gives the same bytes every time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from microsync.crypto.random import Rng
from microsync.errors import NotAMember
from microsync.feed import EntryId, GroupId
from microsync.group.envelope import Bundle, encode_envelope
from microsync.group.keyring import Slot
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    encrypt_content,
    seal_bundle,
)
from microsync.group.membership import (
    ADMIN_KINDS,
    DeviceInfo,
    GroupState,
    OpRecord,
    _apply,
    group_id_for,
    parse_grant,
)
from microsync.group.ops import (
    MEMBERSHIP_TYPE,
    DeviceGrant,
    EpochAnnouncement,
    History,
    Op,
    OpKind,
    Role,
    recipients_digest,
)
from microsync.group.rules import entitled_after, may_add_device
from microsync.group.settings import SettingsChange
from microsync.identity import (
    DeviceId,
    DeviceRevocation,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
    RecoveryCertificate,
)

__all__ = ["Authoring", "Draft", "Positions", "found", "refusal", "seal"]

Positions = tuple[tuple[DeviceId, int], ...]
"""Feed heads ``(device, seq)``: the line an operation that admits or cuts devices draws."""

_NO_ID = EntryId(b"\0" * 32)  # a preview's record: it is never stored


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """An operation to seal under ``seal`` and append, with its bundles and new keys."""

    op: Op
    seal: EpochKey
    bundles: list[Bundle]
    new_keys: tuple[EpochKey, ...] = ()


def seal(draft: Draft, *, group: GroupId, device: DeviceId, seq: int, rng: Rng) -> bytes:
    """The body of the membership entry ``seq`` of ``device`` carrying ``draft``."""
    key = draft.seal
    sealed = encrypt_content(
        rng,
        key.control,
        key.ref,
        draft.op.to_bytes(),
        group=group,
        epoch=key.number,
        device=device,
        seq=seq,
        type=MEMBERSHIP_TYPE,
    )
    return encode_envelope(draft.bundles, sealed)


def found(
    identity: LocalIdentity,
    name: str,
    *,
    history: History | str,
    rng: Rng,
    max_members: int | None = None,
) -> tuple[GroupId, Draft]:
    """A new group's id and its create: this device's person is the first admin, epoch 0 is
    wrapped to this device only; ``max_members`` caps the group's size (``None``: no cap)."""
    nonce = rng(32)
    group = group_id_for(identity.device_id, nonce)
    genesis = EpochKey.from_root(group, 0, rng(32))
    op = Op(
        kind=OpKind.CREATE,
        group_name=name,
        history=History(history),
        max_members=max_members,
        nonce=nonce,
        name=identity.name,
        devices=(
            DeviceGrant(identity.certificate.to_bytes(), identity.prekey_certificate.to_bytes()),
        ),
        epoch=EpochAnnouncement(0, genesis.commitment, recipients_digest([identity.device_id])),
        recovery_key=identity.recovery_key,
    )
    author = Authoring(group, identity, GroupState(), {}, rng, lambda _: 0)
    bundle = author.bundle(Purpose.ROTATION, 0, [identity.device_id], [KeyGrant.of(genesis, True)])
    return group, Draft(op=op, seal=genesis, bundles=[bundle], new_keys=(genesis,))


def refusal(op: Op, state: GroupState, person: PersonId) -> NotAMember:
    """Why ``person`` may not make ``op`` in ``state``, as the error the author gets."""
    verb = op.kind.name.lower().replace("_", " ")
    mine = state.members.get(person)
    if op.kind in ADMIN_KINDS and mine is not None and mine.role is not Role.ADMIN:
        return NotAMember(f"only admins may {verb} (you are a {mine.role})")
    target = state.members.get(op.person) if op.person is not None else None
    if (
        op.kind in (OpKind.REMOVE, OpKind.SET_ROLE)
        and mine is not None
        and target is not None
        and target.role is Role.ADMIN
        and target.person != mine.person
        and target.rank <= mine.rank
    ):
        return NotAMember(
            f"cannot {verb} {target.name}: an admin may {verb} only members and "
            "admins ranked below it (made admin further from the founder)"
        )
    return NotAMember(f"this device may not {verb} in this group now")


class Authoring:
    """Builds this device's operations from what it holds (module doc). ``head(device)``:
    the seq of ``device``'s feed head as this device holds it."""

    __slots__ = ("group", "head", "identity", "keys", "rng", "state")

    def __init__(
        self,
        group: GroupId,
        identity: LocalIdentity,
        state: GroupState,
        keys: Mapping[Slot, EpochKey],
        rng: Rng,
        head: Callable[[DeviceId], int],
    ) -> None:
        self.group = group
        self.identity = identity
        self.state = state
        self.keys = keys
        self.rng = rng
        self.head = head

    # ------------------------------------------------------------------ the ten operations

    def add(
        self,
        person: PersonId,
        name: str,
        devices: Sequence[DeviceGrant],
        *,
        role: Role,
        invite_id: bytes | None,
        now: int,
        recovery: bytes | None = None,
    ) -> Draft:
        """Admit ``person`` (``recovery``: its public key): with shared history the joiner
        gets every key held here; with ``"none"`` a new epoch starts and it gets only the
        control keys of earlier ones."""
        infos = [parse_grant(g) for g in devices]
        op = Op(
            kind=OpKind.ADD,
            person=person,
            name=name,
            role=role,
            devices=tuple(devices),
            invite_id=invite_id,
            time=now if invite_id is not None else None,
            positions=self.positions(i.device for i in infos),
            recovery_key=recovery,
        )
        seal_key = self.seal_key()
        full = self.state.history == "shared"
        history = [KeyGrant.of(k, full and k.root is not None) for k in self.keys.values()]
        bundles: list[Bundle] = []
        new_keys: tuple[EpochKey, ...] = ()
        if not full:
            key, announcement, rotation = self.new_epoch(self.preview(op, infos), infos)
            op = replace(op, epoch=announcement)
            bundles.append(rotation)
            new_keys = (key,)
        joiners = [i.device for i in infos]
        bundles.append(self.bundle(Purpose.HISTORY, seal_key.number, joiners, history, infos))
        return Draft(op=op, seal=seal_key, bundles=bundles, new_keys=new_keys)

    def remove(self, person: PersonId) -> Draft:
        """Remove ``person`` and start an epoch wrapped to every remaining device."""
        target = self.state.members.get(person)
        positions = self.positions(target.devices if target is not None else ())
        op = Op(kind=OpKind.REMOVE, person=person, positions=positions)
        return self._rotating(op, self.entitled_after(op))

    def leave(self, person: PersonId) -> Draft:
        """``person`` (this device's) leaves; the next member to write starts an epoch."""
        others = set(self.state.members[person].devices) - {self.identity.device_id}
        return self._plain(Op(kind=OpKind.LEAVE, positions=self.positions(others)))

    def set_role(self, person: PersonId, role: Role) -> Draft:
        """Promote or demote ``person``."""
        target = self.state.members.get(person)
        positions = self.positions(target.devices if target is not None else ())
        return self._plain(Op(kind=OpKind.SET_ROLE, person=person, role=role, positions=positions))

    def rotate(self) -> Draft:
        """A new epoch wrapped to every entitled device."""
        return self._rotating(Op(kind=OpKind.ROTATE), self.state.entitled_devices())

    def add_device(
        self, grant: DeviceGrant, person: PersonId, recovery: RecoveryCertificate | None = None
    ) -> Draft:
        """Add a new device of ``person`` (this device's), giving it every key held here; or,
        with a ``recovery`` certificate, of another member (:func:`rules.may_add_device`)."""
        info = parse_grant(grant)
        if not may_add_device(self.state, person, info.person, info.device, recovery):
            raise NotAMember(
                "a person may only add their own devices, or another member's with a "
                "recovery certificate by the recovery key that member registered"
            )
        if recovery is not None:
            return self._recover(grant, info, recovery)
        grants = [KeyGrant.of(k, k.root is not None) for k in self.keys.values()]
        seal_key = self.seal_key()
        bundle = self.bundle(Purpose.HISTORY, seal_key.number, [info.device], grants, [info])
        op = Op(kind=OpKind.ADD_DEVICE, devices=(grant,), positions=self.positions([info.device]))
        return Draft(op=op, seal=seal_key, bundles=[bundle])

    def _recover(
        self, grant: DeviceGrant, info: DeviceInfo, recovery: RecoveryCertificate
    ) -> Draft:
        """A recovery: the new device in, every other device of its person revoked (at its
        feed head here), a new epoch without them; keys per the history setting."""
        others = set(self.state.members[info.person].devices)
        op = Op(
            kind=OpKind.ADD_DEVICE,
            devices=(grant,),
            positions=self.positions({info.device} | others),
            recovery=recovery.to_bytes(),
        )
        rec = OpRecord(_NO_ID, self.identity.device_id, 0, (), op, (info,), recovery=recovery)
        after = self.state.copy()
        _apply(after, rec, self.state.person_of(self.identity.device_id))
        seal_key = self.seal_key()
        key, announcement, rotation = self.new_epoch(after, [info])
        full = self.state.history == "shared"
        history = [KeyGrant.of(k, full and k.root is not None) for k in self.keys.values()]
        bundle = self.bundle(Purpose.HISTORY, seal_key.number, [info.device], history, [info])
        op = replace(op, epoch=announcement)
        return Draft(op=op, seal=seal_key, bundles=[rotation, bundle], new_keys=(key,))

    def revoke_device(self, revocation: DeviceRevocation) -> Draft:
        """Revoke another device of this person; its ops past its feed head here are void."""
        cutoff = self.head(revocation.device)
        op = Op(kind=OpKind.REVOKE_DEVICE, revocation=revocation.to_bytes(), cutoff=cutoff)
        rec = OpRecord.build(_NO_ID, self.identity.device_id, 0, (), op)
        after = self.state.copy()
        _apply(after, rec, self.state.person_of(self.identity.device_id))
        return self._rotating(op, after.entitled_devices())

    def update_prekey(self, certificate: PrekeyCertificate) -> Draft:
        """Publish this device's new signed prekey."""
        grant = DeviceGrant(self.identity.certificate.to_bytes(), certificate.to_bytes())
        return self._plain(Op(kind=OpKind.PREKEY, devices=(grant,)))

    def create_invite(self, invite_id: bytes, *, expires_at: int, role: Role) -> Draft:
        """Announce an invite (its secret stays with the inviter)."""
        return self._plain(Op(kind=OpKind.INVITE, invite_id=invite_id, time=expires_at, role=role))

    def revoke_invite(self, invite_id: bytes) -> Draft:
        """Withdraw an invite."""
        return self._plain(Op(kind=OpKind.REVOKE_INVITE, invite_id=invite_id))

    def change_settings(self, change: SettingsChange) -> Draft:
        """Change group settings (admins only): the keepers, ..."""
        return self._plain(Op(kind=OpKind.SETTINGS, settings=change))

    # ------------------------------------------------------------------ parts

    def _plain(self, op: Op) -> Draft:
        return Draft(op=op, seal=self.seal_key(), bundles=[])

    def _rotating(self, op: Op, entitled: frozenset[DeviceId]) -> Draft:
        """``op`` starting a new epoch for the ``entitled`` devices (after ``op``)."""
        key, announcement, rotation = self.new_epoch_for(entitled)
        op = replace(op, epoch=announcement)
        return Draft(op=op, seal=self.seal_key(), bundles=[rotation], new_keys=(key,))

    def seal_key(self) -> EpochKey:
        """The key to seal an op under: the current epoch's, else the newest held of an epoch
        announced in this view (a void epoch's key only when no other is held)."""
        epoch = self.state.current_epoch()
        current = None if epoch is None else self.keys.get((epoch.number, epoch.commitment))
        if current is not None:
            return current
        if not self.keys:
            raise NotAMember("this device holds no key of the group")
        announced = self.state.epochs
        return max(
            self.keys.values(),
            key=lambda k: ((k.number, k.commitment) in announced, k.number, k.root is not None),
        )

    def new_epoch(
        self, after: GroupState, extra: Iterable[DeviceInfo] = ()
    ) -> tuple[EpochKey, EpochAnnouncement, Bundle]:
        """A fresh epoch key for the devices entitled in ``after``, its announcement, and
        the bundle wrapping it to them (``extra``: devices ``after`` has that this view lacks)."""
        return self.new_epoch_for(after.entitled_devices(), extra)

    def new_epoch_for(
        self, devices: frozenset[DeviceId], extra: Iterable[DeviceInfo] = ()
    ) -> tuple[EpochKey, EpochAnnouncement, Bundle]:
        """:meth:`new_epoch` for the entitled ``devices`` given as a set."""
        number = self.state.max_epoch + 1
        key = EpochKey.from_root(self.group, number, self.rng(32))
        announcement = EpochAnnouncement(number, key.commitment, recipients_digest(devices))
        bundle = self.bundle(Purpose.ROTATION, number, devices, [KeyGrant.of(key, True)], extra)
        return key, announcement, bundle

    def preview(self, op: Op, grants: Sequence[DeviceInfo] = ()) -> GroupState:
        """The state after ``op`` by this device (to compute a new epoch's recipients)."""
        after = self.state.copy()
        rec = OpRecord(_NO_ID, self.identity.device_id, 0, (), op, tuple(grants))
        _apply(after, rec, self.state.person_of(self.identity.device_id))
        return after

    def entitled_after(self, op: Op) -> frozenset[DeviceId]:
        """``preview(op).entitled_devices()``, without copying the state where the rules
        need not (:func:`rules.entitled_after`)."""
        rec = OpRecord(_NO_ID, self.identity.device_id, 0, (), op)
        return entitled_after(self.state, rec, self.state.person_of(self.identity.device_id))

    def positions(self, devices: Iterable[DeviceId]) -> Positions:
        """The feed heads of ``devices`` as this device holds them."""
        return tuple((device, self.head(device)) for device in sorted(set(devices)))

    def bundle(
        self,
        purpose: Purpose,
        epoch: int,
        devices: Iterable[DeviceId],
        grants: list[KeyGrant],
        infos: Iterable[DeviceInfo] = (),
    ) -> Bundle:
        """``grants`` wrapped to ``devices`` (their prekeys from the state, or ``infos``)."""
        recipients = self._recipients(devices, {i.device: i for i in infos})
        sealed = seal_bundle(
            self.rng,
            group=self.group,
            epoch=epoch,
            sender=self.identity.device_id,
            purpose=purpose,
            recipients=recipients,
            grants=grants,
        )
        return purpose, epoch, sealed

    def _recipients(
        self, devices: Iterable[DeviceId], extra: dict[DeviceId, DeviceInfo]
    ) -> list[Recipient]:
        if not self.state.members:  # founding: only this device, from its own identity
            me = self.identity
            extra[me.device_id] = DeviceInfo(
                me.device_id,
                me.person_id,
                me.name,
                me.prekey_certificate.prekey_id,
                me.prekey_certificate.key,
                me.certificate.to_bytes(),
            )
        index = {d: info for m in self.state.members.values() for d, info in m.devices.items()}
        out = []
        for device in sorted(set(devices)):
            info = index.get(device) or extra.get(device)
            if info is None:
                raise NotAMember("no prekey is known for a recipient device")
            out.append(Recipient(device, info.prekey_id, info.prekey))
        return out
