"""One device's replica of one group: the face the node layer uses. Sans-IO: the store, the
clock (``now``) and randomness (``rng``) are passed in.

:class:`GroupReplica` composes the parts, each in its own module:

* :mod:`~microsync.group.intake` — receiving: which entries may be stored, what waits (held)
  until an operation admits its device, one transaction per batch; :meth:`receive_batch`
  returns what it accepted, with bodies, so nothing is read back.
* :mod:`~microsync.group.view` — the opened membership: envelopes (:mod:`.envelope`), sealed
  operations opened through the one content fold (:mod:`.fold`), the keyring
  (:mod:`.keyring`) and the resolution (:mod:`.membership`).
* :mod:`~microsync.group.authoring` — pure builders of the ten operations; the replica seals,
  appends and folds what they build.
* :mod:`~microsync.group.exits` — former members: what put a device out, which keys it is owed.

Content entries are encrypted here (:meth:`write_content`) and opened by the layers above
through :meth:`content_fold`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from microsync.errors import (
    MicrosyncError,
    NotAMember,
)
from microsync.feed import (
    MAX_DEPS,
    Entry,
    EntryId,
    GroupId,
    Ingested,
    append,
)
from microsync.feed.entry import MAX_HLC
from microsync.feed.store import StoredEntry
from microsync.group import authoring, exits
from microsync.group.authoring import Authoring, Draft
from microsync.group.envelope import Bundle, decode_envelope, encode_envelope
from microsync.group.fold import ContentFold
from microsync.group.held import HeldLimits
from microsync.group.intake import CUT_OFF_SLACK as CUT_OFF_SLACK
from microsync.group.intake import GROUP_PENDING_QUOTA as GROUP_PENDING_QUOTA
from microsync.group.intake import Intake, Received
from microsync.group.keyring import Keyring, Slot
from microsync.group.keys import (
    EpochKey,
    Purpose,
    encrypt_content,
)
from microsync.group.member import GroupStore, LocalMember
from microsync.group.membership import (
    DeviceInfo,
    GroupState,
    OpRecord,
    Resolution,
)
from microsync.group.ops import (
    MEMBERSHIP_TYPE,
    DeviceGrant,
    History,
    Role,
)
from microsync.group.own_feed import OwnFeed
from microsync.group.settings import SettingsChange
from microsync.group.view import MembershipView
from microsync.group.view import _Opened as _Opened
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    PersonId,
    PrekeyCertificate,
    RecoveryCertificate,
)

__all__ = ["GroupReplica", "GroupStore", "HeldLimits", "LocalMember", "Received"]

_Recovery = RecoveryCertificate | None  # a recovery certificate, for an add by the words

T = TypeVar("T")


_encode_envelope = encode_envelope  # the names tests and testing kits used before the split
_decode_envelope = decode_envelope


class GroupReplica:
    """This device's view of one group. Build it with :meth:`create`, :meth:`load` or
    :meth:`join` (a group this device was added to)."""

    def __init__(self, store: GroupStore, me: LocalMember, group: GroupId) -> None:
        self.me = me
        self.id = group
        self._view = MembershipView(store, me, group)
        self._intake = Intake(self._view)
        self._own = OwnFeed(group, me.device)
        self.on_append: Callable[[GroupId], None] | None = None
        """Called (with the group id) once this device has stored an entry it wrote, inside the
        writing transaction: live sync, which only schedules a push for the next turn of the
        event loop, when the transaction has committed (a rolled-back write pushes nothing
        new: the push sends what the store holds then)."""
        self._view.ring.load(store)

    def __repr__(self) -> str:
        return f"GroupReplica({self.id.hex()[:8]}, {self._view!r}, {self._intake!r})"

    @property
    def store(self) -> GroupStore:
        """The profile's store this replica reads and writes."""
        return self._view.store

    @store.setter
    def store(self, store: GroupStore) -> None:
        self._view.store = store

    @property
    def held_limits(self) -> HeldLimits:
        """Bounds on the entries of not-yet-admitted devices waiting in memory (a member's)."""
        return self._intake.held_limits

    @held_limits.setter
    def held_limits(self, limits: HeldLimits) -> None:
        self._intake.held_limits = limits

    @property
    def joining_limits(self) -> HeldLimits:
        """The same bounds while this device is not in the group (it bootstraps)."""
        return self._intake.joining_limits

    @joining_limits.setter
    def joining_limits(self, limits: HeldLimits) -> None:
        self._intake.joining_limits = limits

    @property
    def released(self) -> list[Entry]:
        """Entries held by an earlier :meth:`receive` that the last one stored."""
        return self._intake.released

    # the parts the test kits and benches reach for by their old names
    @property
    def _ring(self) -> Keyring:
        return self._view.ring

    @property
    def _resolution(self) -> Resolution:
        return self._view.resolution

    @_resolution.setter
    def _resolution(self, value: Resolution) -> None:
        self._view.resolution = value

    @property
    def _heads(self) -> frozenset[EntryId]:
        return self._view.heads

    def _records(self) -> dict[EntryId, OpRecord]:
        return self._view.records()

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        store: GroupStore,
        me: LocalMember,
        name: str,
        *,
        history: History | str = History.SHARED,
        max_members: int | None = None,
        now: int,
    ) -> GroupReplica:
        """Found a group: this device's person is its first admin, epoch 0 is wrapped to it."""
        group, draft = authoring.found(
            me.identity, name, history=history, rng=me.rng, max_members=max_members
        )
        replica = cls(store, me, group)
        replica._author(draft, now)
        return replica

    @classmethod
    def load(cls, store: GroupStore, me: LocalMember, group: GroupId) -> GroupReplica:
        """Rebuild this device's view of ``group`` from the store."""
        replica = cls(store, me, group)
        feeds = store.feeds(group)
        replica._view._forks = {d: s.forked_at for d, s in feeds.items() if s.forked_at is not None}
        replica._view.absorb(
            (s.entry, s.body)
            for device in feeds
            for s in store.entries(group, device)
            if s.entry.header.type == MEMBERSHIP_TYPE and s.body is not None
        )
        return replica

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> GroupState:
        return self._resolution.state

    @property
    def resolution(self) -> Resolution:
        return self._resolution

    @property
    def is_member(self) -> bool:
        return self.state.person_of(self.me.device) is not None

    def epoch_keys(self) -> dict[tuple[int, bytes], EpochKey]:
        """The epoch keys this device holds, by (number, commitment)."""
        return dict(self._ring.keys)

    def current_epoch_key(self) -> EpochKey | None:
        epoch = self.state.current_epoch()
        if epoch is None:
            return None
        return self._ring.keys.get((epoch.number, epoch.commitment))

    def operation(self, op_id: EntryId) -> OpRecord | None:
        """The opened membership operation with entry id ``op_id``, if this device holds it."""
        return self._view.operation(op_id)

    def exit_record(self) -> tuple[OpRecord, int] | None:
        """Read-only: the effective operation, last in resolution order, that put this device
        out (its person's REMOVE or LEAVE, or a REVOKE_DEVICE of this device), with the ``hlc``
        its author signed; ``None`` while a member or if this device holds no such operation
        (it was put out by an operation voiding the one that admitted it, for example)."""
        return None if self.is_member else self._view.exit_record()

    def name_of(self, person: PersonId) -> str | None:
        """Read-only: ``person``'s name as a member now, else as the operation that founded
        the group with them or added them last named them (``None`` if none did)."""
        return self._view.name_of(person)

    def locked(self) -> list[EntryId]:
        """Membership entries this device holds but cannot open (no key yet), stored or held
        in memory until their author is admitted."""
        held = [i for i, _ in self._intake._held_sealed()]
        return [*self._view.locked(), *held]

    def content_fold(self, decode: Callable[[bytes], T]) -> ContentFold[T]:
        """A :class:`~microsync.group.fold.ContentFold` of this group's content entries:
        gated on :meth:`GroupState.counts`, bodies decrypted with :meth:`decrypt` and decoded
        by ``decode``, bodies not handed in read once from the store, authors' persons from
        their certificates. The app and the vault each keep one."""

        def open_body(entry: Entry, body: bytes) -> T:
            return decode(self.decrypt(StoredEntry(entry=entry, body=body)))

        def read(entry: Entry) -> StoredEntry | None:
            return self.store.entry_at(self.id, entry.header.device, entry.header.seq)

        def person_of(device: DeviceId) -> PersonId | None:
            certificate = self.store.certificate(device)
            return None if certificate is None else certificate.person

        return ContentFold(open_body, state=lambda: self.state, read=read, person_of=person_of)

    def decrypt(self, stored: StoredEntry) -> bytes:
        """The plaintext of a content entry (``DecryptionError`` if this device holds no key
        for it, or the body was tampered with, moved, or purged)."""
        return self._ring.decrypt(stored)

    def key_for(self, number: int, ref: bytes) -> EpochKey | None:
        """The key this device holds for epoch ``number`` whose commitment starts with
        ``ref`` (a key ref), or ``None``."""
        return self._key_for(number, ref)

    def _key_for(self, number: int, ref: bytes) -> EpochKey | None:
        return self._ring.key_for(number, ref)

    # ------------------------------------------------------------------ receiving

    def receive(
        self, items: Sequence[tuple[bytes, bytes | None]], *, peer: DeviceId | None = None
    ) -> list[Ingested | MicrosyncError]:
        """:meth:`receive_batch`, returning only the result of each item."""
        return self.receive_batch(items, peer=peer).results

    def receive_batch(
        self, items: Sequence[tuple[bytes, bytes | None]], *, peer: DeviceId | None = None
    ) -> Received:
        """Validate and store a batch of entries of this group, then update membership and keys.
        Returns each item's result and every entry that joined a feed, with its body, so the
        layers above fold what was accepted without reading it back.

        Only entries of devices this replica :meth:`admits` are stored. The others wait in
        memory, checked and bounded per group and per ``peer`` (:class:`HeldLimits`), until an
        operation admits their device (in this batch or a later one); they come back as
        ``Outcome.HELD``, or :class:`HeldQuotaExceeded` when there is no room.
        Rejected items come back as errors in their place; storage is unchanged by them.
        Entries held from earlier batches that join a feed now are listed in the ``accepted``
        of the first item stored (or in :attr:`released` when no item of this batch was).
        (:mod:`microsync.group.intake` has the rules.)
        """
        return self._intake.receive(items, peer=peer)

    def admits(self, device: DeviceId, seq: int) -> bool:
        """May the entry at ``seq`` of ``device``'s feed be stored, shown and forwarded?
        (:meth:`Intake.admits <microsync.group.intake.Intake.admits>`)"""
        return self._intake.admits(device, seq)

    def vouch(self, certificate: DeviceCertificate) -> None:
        """Admit ``certificate``'s device here until this replica can check for itself
        (:meth:`Intake.vouch <microsync.group.intake.Intake.vouch>`)."""
        self._intake.vouch(certificate)

    def forget_forked(self) -> None:
        """Resolve again without what forked devices wrote from their fork on (called when a
        fork is learnt: ops already folded from past the fork stop counting)."""
        forks = {
            device: status.forked_at
            for device, status in self.store.feeds(self.id).items()
            if status.forked_at is not None
        }
        with self._view.atomic():
            self._view.refork(forks)

    # ------------------------------------------------------------------ authoring

    def _authoring(self) -> Authoring:
        """The builder of this device's operations, over what it holds now."""
        return Authoring(
            self.id, self.me.identity, self.state, self._ring.keys, self.me.rng, self._head
        )

    def _head(self, device: DeviceId) -> int:
        return self.store.feed_status(self.id, device).head_seq

    def _next(self) -> tuple[int, int]:
        """The seq of this device's next entry and the least ``hlc`` it may carry
        (:mod:`~microsync.group.own_feed`: one past the previous entry's)."""
        return self._own.next(self.store, self._view.entry)

    def _append(
        self, type: int, body: bytes, epoch: int, hlc: int, deps: Sequence[EntryId] = ()
    ) -> Entry:
        """Sign and store the next entry of this device's feed in the group, at ``hlc``
        clamped to what an entry may carry (this device never signs an entry that it, or a
        peer, cannot decode)."""
        entry = append(
            self.store,
            self.me.identity.device_key,
            group=self.id,
            type=type,
            body=body,
            epoch=epoch,
            hlc=min(max(hlc, 0), MAX_HLC),
            deps=deps,
        )
        self._own.last = entry
        if self.on_append is not None:
            self.on_append(self.id)  # told once the entry is stored, never before
        return entry

    def _author(self, draft: Draft, now: int) -> Entry:
        """Seal and append ``draft``, keep the keys it made, and fold it; ``NotAMember``
        (and nothing written) if it does not take effect."""
        with self._view.atomic():
            seq, least = self._next()
            body = authoring.seal(
                draft, group=self.id, device=self.me.device, seq=seq, rng=self.me.rng
            )
            deps = sorted(self._view.heads)[:MAX_DEPS]
            entry = self._append(MEMBERSHIP_TYPE, body, draft.seal.number, max(now, least), deps)
            if draft.new_keys:
                self._view.add_keys(draft.new_keys)
            self._view.absorb_own(entry, body, draft.op, draft.bundles, draft.new_keys)
            if entry.id not in self._resolution.effective:
                raise authoring.refusal(draft.op, self.state, self.me.person)
        return entry

    def _require_member(self) -> PersonId:
        person = self.state.person_of(self.me.device)
        if person is None:
            raise NotAMember("this device is not a member of the group")
        return person

    def add(
        self,
        person: PersonId,
        name: str,
        devices: Sequence[DeviceGrant],
        *,
        role: Role = Role.MEMBER,
        invite_id: bytes | None = None,
        now: int,
        recovery_key: bytes | None = None,
    ) -> Entry:
        """Admit ``person`` with ``devices`` and its ``recovery_key`` (admin only); the joiner
        gets every key held here (``"shared"``), or a new epoch and older control keys only."""
        self._require_member()
        draft = self._authoring().add(
            person, name, devices, role=role, invite_id=invite_id, now=now, recovery=recovery_key
        )
        return self._author(draft, now)

    def remove(self, person: PersonId, *, now: int) -> Entry:
        """Remove ``person`` (admin only; removing oneself is leaving) and start a new epoch
        wrapped to every remaining device."""
        self._require_member()
        return self._author(self._authoring().remove(person), now)

    def leave(self, *, now: int) -> Entry:
        """Leave the group. The leaver cannot choose the next key; the next member to write
        starts a new epoch without it."""
        person = self._require_member()
        return self._author(self._authoring().leave(person), now)

    def set_role(self, person: PersonId, role: Role, *, now: int) -> Entry:
        """Promote or demote ``person`` (admin only, and only a member or an admin of a
        higher rank than this device's person: see ``docs/membership.md``)."""
        self._require_member()
        return self._author(self._authoring().set_role(person, role), now)

    def rotate(self, *, now: int) -> Entry:
        """Start a new epoch wrapped to every entitled device (any member may)."""
        self._require_member()
        return self._author(self._authoring().rotate(), now)

    def add_device(self, grant: DeviceGrant, *, now: int, recovery: _Recovery = None) -> Entry:
        """Add a device of this person, or (``recovery``) another member's, by the words."""
        person = self._require_member()
        return self._author(self._authoring().add_device(grant, person, recovery), now)

    def revoke_device(self, revocation: DeviceRevocation, *, now: int) -> Entry:
        """Revoke one of this person's other devices and start an epoch without it. Its
        operations after the cut-off (its feed head as seen here) are void everywhere."""
        self._require_member()
        return self._author(self._authoring().revoke_device(revocation), now)

    def update_prekey(self, certificate: PrekeyCertificate, *, now: int) -> Entry:
        """Publish this device's new signed prekey (future wraps go to it)."""
        self._require_member()
        return self._author(self._authoring().update_prekey(certificate), now)

    def create_invite(self, invite_id: bytes, *, expires_at: int, role: Role, now: int) -> Entry:
        self._require_member()
        draft = self._authoring().create_invite(invite_id, expires_at=expires_at, role=role)
        return self._author(draft, now)

    def revoke_invite(self, invite_id: bytes, *, now: int) -> Entry:
        self._require_member()
        return self._author(self._authoring().revoke_invite(invite_id), now)

    def change_settings(self, change: SettingsChange, *, now: int) -> Entry:
        """Change group settings such as the keepers (admin only)."""
        self._require_member()
        return self._author(self._authoring().change_settings(change), now)

    def ensure_writable(self, *, now: int) -> EpochKey:
        """The key to write content under, rotating first when no valid epoch is held here."""
        self._require_member()
        key = self.current_epoch_key()
        if key is None or key.root is None:
            self.rotate(now=now)
            key = self.current_epoch_key()
        assert key is not None and key.root is not None
        return key

    def append_content(
        self, type: int, plaintext: bytes, *, now: int, deps: Sequence[EntryId] = ()
    ) -> Entry:
        """Encrypt ``plaintext`` under the current epoch and append it to this device's feed
        (``deps``: the entries of the content layer this one follows causally)."""
        return self.write_content(type, plaintext, now=now, deps=deps).entry

    def write_content(
        self, type: int, plaintext: bytes, *, now: int, deps: Sequence[EntryId] = ()
    ) -> StoredEntry:
        """:meth:`append_content`, returning the entry with the body it stored: the author
        folds what it wrote (:meth:`ContentFold.accept`) without reading it back."""
        if type == MEMBERSHIP_TYPE:
            raise ValueError("content cannot use the membership entry type")
        with self.store.transaction():
            key = self.ensure_writable(now=now)
            content = key.content
            assert content is not None
            seq, least = self._next()
            body = encrypt_content(
                self.me.rng,
                content,
                key.ref,
                plaintext,
                group=self.id,
                epoch=key.number,
                device=self.me.device,
                seq=seq,
                type=type,
            )
            entry = self._append(type, body, key.number, max(now, least), deps)
            return StoredEntry(entry=entry, body=body)

    # ------------------------------------------------------------------ key requests

    def missing_keys(self) -> list[tuple[int, bytes]]:
        """Epochs announced in this group (or sealing ops here) that this device lacks, and
        epochs whose content key it is entitled to but holds only the control key of (see
        :meth:`answer_key_request`)."""
        wanted = self._view.missing_slots() | self._intake._held_key_slots()
        return sorted(wanted)

    def answer_key_request(self, requester: DeviceId, wanted: Iterable[Slot]) -> Bundle:
        """Wrap the requested keys this device holds to ``requester``'s current prekey.

        Refused with :class:`NotAMember` unless ``requester`` is an active device of a current
        member, or a former one owed the keys that seal what put it out
        (:mod:`microsync.group.exits`). Content keys go only to devices entitled to them
        (always with shared history; with ``"none"``, only for epochs the requester's person
        was wrapped); control keys go to every member device.
        """
        info = self.state.device(requester)
        extra: list[DeviceInfo] = []
        if info is None:
            res, records = self._resolution, self._records()
            former, grants = exits.former_grants(res, records, self._ring, requester, wanted)
            extra.append(former)
        else:
            grants = exits.member_grants(self.state, self._ring, info, wanted)
        epoch = self.state.max_epoch
        return self._authoring().bundle(Purpose.KEY_RESPONSE, epoch, [requester], grants, extra)

    def exits_of(self, device: DeviceId) -> list[EntryId]:
        """The effective operations that put ``device`` out of the group, if a valid
        operation ever admitted it (else none)."""
        if self.state.device(device) is not None:
            return []
        records = self._records()
        found = exits.former(self._resolution, records, device)
        if found is None:
            return []
        admitted, info = found
        return exits.exits(self._resolution, records, info, admitted)

    def causal_past(self, op_id: EntryId) -> set[EntryId]:
        """The membership operations ``op_id`` names in its deps, transitively."""
        return exits.ancestors(self._records(), op_id)

    def records(self) -> dict[EntryId, OpRecord]:
        """Every opened operation that counts (none of a forked device from its fork on)."""
        return self._records()

    def accept_key_response(self, sender: DeviceId, response: Bundle) -> int:
        """Keep the keys in a response that match announced epochs. Returns how many were new.

        A forged or misaddressed response raises :class:`DecryptionError`; keys that match no
        announced epoch are ignored, so no one can inject a key of their own. The sender need
        not be a member any more: a key is checked against the commitment a valid operation
        announced, not against who passed it on, and the only devices holding the key that
        seals an operation may have left or been revoked since.
        """
        with self.store.transaction():
            return self._view.accept_response(sender, response)
