"""Receiving: which entries of a group may be stored, and what waits until it may.

:meth:`Intake.receive` validates and stores a batch. Only entries of devices a valid operation
admitted (:meth:`Intake.admits`) are stored; the others wait in memory, checked and bounded
(:class:`~microsync.group.held.HeldLimits`), until an operation admits their device, in this
batch or a later one. Membership entries that join a feed are handed to the
:class:`~microsync.group.view.MembershipView`, which opens and resolves them; a new resolution
may admit more devices, so storing repeats until nothing changes (:meth:`Intake._settle`).
When nothing held is admitted, the held membership operations are tried in a copy of the view
that writes nothing (:meth:`Intake._vouch`): that is how a founder's create and a joiner's own
add, sealed under keys only the add brings, admit each other. A batch commits in one
transaction; on failure memory is put back as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, cast

from microsync.crypto import SIGNATURE_SIZE
from microsync.errors import (
    BadSignature,
    DecodeError,
    DecryptionError,
    HeldQuotaExceeded,
    MicrosyncError,
    VerificationError,
)
from microsync.feed import Entry, EntryId, GroupId, Ingested, Outcome, ingest_many
from microsync.feed.entry import feed_position, parse_entry
from microsync.feed.store import AuthorStatus, StoredEntry
from microsync.feed.trust import add_certificate
from microsync.feed.validate import check_body, check_group
from microsync.group.envelope import decode_envelope, sealed_ref
from microsync.group.held import (
    JOINING,
    DryStore,
    Held,
    HeldBuffer,
    HeldLimits,
    Pooled,
    Waiting,
    bad_signatures,
)
from microsync.group.keys import open_bundle
from microsync.group.membership import DeviceInfo, GroupState, Resolution
from microsync.group.ops import MEMBERSHIP_TYPE, OpKind
from microsync.group.view import MembershipView
from microsync.identity import DeviceCertificate, DeviceId

if TYPE_CHECKING:
    from microsync.group.member import GroupStore, LocalMember

__all__ = ["CUT_OFF_SLACK", "GROUP_PENDING_QUOTA", "Intake", "Received"]

CUT_OFF_SLACK: Final = 64
"""How many entries past the cut-off of a device that is out are still stored (what it wrote
before it knew, and room for a line that is lifted later); beyond, it is held or refused."""
GROUP_PENDING_QUOTA: Final = 16_384
"""At most this many entries of a group's admitted devices wait ahead of gaps in their feeds
(besides ``feed.DEFAULT_PENDING_QUOTA`` per feed): only members' signed entries can wait there,
so one peer can fill it only with what members really wrote."""
_ADMITTING: Final = (OpKind.CREATE, OpKind.ADD, OpKind.ADD_DEVICE)
_ANY_SEQ: Final = 2**64  # past any seq a feed can hold


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """What :meth:`GroupReplica.receive_batch` did: each item's result, in its place, and
    every entry that joined a feed (with its body; ``None`` if it came without one), in the
    order they joined, those held from earlier batches included."""

    results: list[Ingested | MicrosyncError]
    accepted: tuple[StoredEntry, ...]
    forked: bool = False
    """Whether the batch found a fork (recorded its evidence): fork points change only then."""


class Intake:
    """What may be stored of one group, and what waits (module doc)."""

    def __init__(self, view: MembershipView) -> None:
        self.view = view
        self.held_limits = HeldLimits()
        """Bounds on the entries of not-yet-admitted devices waiting in memory (a member's)."""
        self.joining_limits = JOINING
        """The same bounds while this device is not in the group (it bootstraps)."""
        self.released: list[Entry] = []
        """Entries held by an earlier :meth:`receive` that the last one stored."""
        self._joined: list[StoredEntry] = []  # what the batch being received stored
        self._buffer = HeldBuffer(self.held_limits)
        self._held = self._buffer.entries  # in the order they came
        self._held_of = self._buffer.by_device
        self._held_ops = self._buffer.ops  # the membership entries among them
        self._forked = False
        self._vouched: dict[DeviceId, DeviceInfo] = {}
        self._admission: tuple[Resolution, dict[DeviceId, DeviceInfo]] | None = None
        self._tried: tuple[frozenset[EntryId], int] | None = None  # held ops, keys

    def __repr__(self) -> str:
        return f"Intake({len(self._held)} held, {len(self._vouched)} vouched)"

    @property
    def store(self) -> GroupStore:
        return self.view.store

    @property
    def id(self) -> GroupId:
        return self.view.id

    @property
    def me(self) -> LocalMember:
        return self.view.me

    @property
    def state(self) -> GroupState:
        return self.view.state

    @property
    def is_member(self) -> bool:
        return self.state.person_of(self.me.device) is not None

    def receive(
        self, items: Sequence[tuple[bytes, bytes | None]], *, peer: DeviceId | None = None
    ) -> Received:
        """What ``GroupReplica.receive_batch`` promises (its docstring is the contract):
        validate and store the admitted, hold the rest (bounded), report what joined a feed
        with its body."""
        results: list[Ingested | MicrosyncError | None] = [None] * len(items)
        vouched = dict(self._vouched)
        self.released, self._joined, self._forked = [], [], False
        waiting = Waiting(self._held_of)
        try:
            with self.view.atomic():
                first, devices = self._admitted_positions(items)
                self._store_items([(i, *items[i]) for i in first], results, devices)
                for item in self._screen(items, results, peer):
                    waiting.add(item)
                self._settle(waiting, results)
        except BaseException:
            self._vouched, self._admission, self.released, self._joined = vouched, None, [], []
            raise
        self._keep_held(waiting, results)
        self._report_released(results)
        assert all(r is not None for r in results)
        joined, self._joined = tuple(self._joined), []
        return Received(
            results=cast(list[Ingested | MicrosyncError], results),
            accepted=joined,
            forked=self._forked,
        )

    def _report_released(self, results: list[Ingested | MicrosyncError | None]) -> None:
        """List the held entries this batch released as unblocked by its first stored item
        (as pending entries an entry unblocks are); :attr:`released` keeps the rest."""
        if not self.released:
            return
        for i, result in enumerate(results):
            if isinstance(result, Ingested) and result.accepted:
                results[i] = replace(result, accepted=(*result.accepted, *self.released))
                self.released = []
                return

    # ------------------------------------------------------------------ who may be stored

    def admits(self, device: DeviceId, seq: int) -> bool:
        """May the entry at ``seq`` of ``device``'s feed be stored, shown and forwarded?

        Yes when a causally valid operation of this group held here (the founder's create, an
        add, an added device) granted ``device``, or a trial resolution that includes the
        held operations did (:meth:`_vouch`). Past the cut-off of the device's last exit,
        only :data:`CUT_OFF_SLACK` more entries are stored: they count nowhere
        (:meth:`GroupState.counts` decides that where entries are read) unless the line is
        lifted, by a re-admission for example; the rest wait, bounded, in the held buffer. So
        a removed member cannot make every member store and forward an endless feed."""
        return 1 <= seq <= self._admitted_up_to(device)

    def _admitted_up_to(self, device: DeviceId) -> int:
        """The last seq of ``device``'s feed that :meth:`admits` allows (0: none)."""
        if device not in self._admitted():
            return 0
        windows = self.state.windows.get(device)
        if not windows or windows[-1][1] is None:
            return _ANY_SEQ  # counting now, or vouched for while joining
        return windows[-1][1] + CUT_OFF_SLACK

    def vouch(self, certificate: DeviceCertificate) -> None:
        """Admit ``certificate``'s device here until this replica can check for itself: for a
        device joining by invite, the peer that proved it holds the joiner's own add (so the
        founder's feed up to that add is stored as it streams, not held in memory). Only the
        device's feed is affected; membership is still resolved from its operations."""
        prekey = self.me.identity.prekey_certificate  # never wrapped to: a vouch is no grant
        self._vouched[certificate.device] = DeviceInfo(
            certificate.device,
            certificate.person,
            certificate.device_name,
            prekey.prekey_id,
            prekey.key,
            certificate.to_bytes(),
        )
        self._admission = None

    def _admitted(self) -> dict[DeviceId, DeviceInfo]:
        """Every device a valid operation granted (with its grant), cached per resolution."""
        res = self.view.resolution
        if self._admission is None or self._admission[0] is not res:
            records = self.view.records()
            found = dict(self._vouched)
            for op_id in res.valid:
                rec = records.get(op_id)
                if rec is not None and rec.op.kind in _ADMITTING:
                    found.update((g.device, g) for g in rec.grants)
            self._admission = (res, found)
        return self._admission[1]

    def _admitted_positions(
        self, items: Sequence[tuple[bytes, bytes | None]]
    ) -> tuple[list[int], set[DeviceId]]:
        """Indices of the items whose device and seq :meth:`admits` (malformed ones too: the
        feed layer names their error), and their devices."""
        found = []
        devices = set()
        limits: dict[DeviceId, int] = {}  # admits() per device, asked once per batch
        for i, (wire, _) in enumerate(items):
            try:
                device, seq = feed_position(wire[:-SIGNATURE_SIZE])
            except (DecodeError, IndexError):
                found.append(i)
                continue
            limit = limits.get(device)
            if limit is None:
                limit = limits[device] = self._admitted_up_to(device)
            if 1 <= seq <= limit:
                found.append(i)
                devices.add(device)
        return found, devices

    def _store_items(
        self,
        batch: Sequence[tuple[int | None, bytes, bytes | None]],
        results: list[Ingested | MicrosyncError | None],
        devices: set[DeviceId],
        verified: frozenset[EntryId] = frozenset(),
    ) -> None:
        """Ingest admitted items of ``devices`` (their certificates taken from their grants
        when missing) and absorb the membership entries that joined a feed. Index ``None``: an
        entry held earlier. ``verified``: entries whose signature was checked already."""
        if not batch:
            return
        self._trust_grants(devices)
        admitted = self._admitted()

        def room() -> int:  # asked only if an entry is to wait ahead of a gap
            return GROUP_PENDING_QUOTA - sum(
                self.store.feed_status(self.id, d).pending for d in admitted
            )

        out = ingest_many(
            self.store,
            self.id,
            [(w, b) for _, w, b in batch],
            group_pending_room=room,
            verify=self.me.verify,
            verified=verified,
        )
        accepted: list[tuple[Entry, bytes]] = []
        bodies: dict[bytes, bytes | None] | None = None  # by wire, built only if asked
        for (index, _, body), result in zip(batch, out, strict=True):
            if index is not None:
                results[index] = result
            if not isinstance(result, Ingested):
                continue
            self._forked |= result.outcome is Outcome.FORK
            if index is None:
                self.released.extend(result.accepted)
            for entry in result.accepted:
                if entry is result.entry:  # stored by this item, with the body it came with
                    stored = StoredEntry(entry=entry, body=body)
                else:  # a pending entry it unblocked
                    bodies = _stored_bodies(batch, out) if bodies is None else bodies
                    stored = self._joined_body(entry, bodies)
                self._joined.append(stored)
                if entry.header.type == MEMBERSHIP_TYPE and stored.body is not None:
                    accepted.append((entry, stored.body))
        if accepted:
            self.view.absorb(accepted)

    def _joined_body(self, entry: Entry, bodies: Mapping[bytes, bytes | None]) -> StoredEntry:
        """``entry``, a pending entry that just joined its feed, with the body stored with it:
        the one this batch stored it with, or else the one stored then (read once, here)."""
        if entry.wire in bodies:
            return StoredEntry(entry=entry, body=bodies[entry.wire])
        h = entry.header
        stored = self.store.entry_at(self.id, h.device, h.seq)
        return StoredEntry(entry=entry, body=None if stored is None else stored.body)

    def _trust_grants(self, devices: set[DeviceId]) -> None:
        """Keep the certificate an admitting grant carries for devices the store lacks one of
        (a joiner never needs a peer to hand it the certificates of the members)."""
        admitted = self._admitted()
        for device in devices:
            info = admitted.get(device)
            if info is None or self.store.author_status(device) is not AuthorStatus.UNKNOWN:
                continue
            try:
                add_certificate(self.store, DeviceCertificate.from_bytes(info.certificate))
            except MicrosyncError:
                continue  # another person certified this key: the feed layer refuses it

    def _screen(
        self,
        items: Sequence[tuple[bytes, bytes | None]],
        results: list[Ingested | MicrosyncError | None],
        peer: DeviceId | None,
    ) -> list[Pooled]:
        """Check the shape, group and body of the items not stored yet, and the signature of
        membership entries (a trial may open them); content is verified if it is to wait
        (:meth:`_keep_held`), or by the feed layer if it is stored in this batch."""
        found: list[Pooled] = []
        for i, (wire, body) in enumerate(items):
            if results[i] is not None:
                continue
            try:
                entry = parse_entry(wire)
                check_group(entry.header, self.id)
                if body is not None:
                    check_body(entry.header, body)
                if entry.header.type == MEMBERSHIP_TYPE:  # a trial may open it
                    entry.verify_signature()
            except (DecodeError, VerificationError) as error:
                results[i] = error
                continue
            found.append((i, Held(entry, body, peer, len(wire) + len(body or b""))))
        return found

    def _settle(self, waiting: Waiting, results: list[Ingested | MicrosyncError | None]) -> None:
        """Store waiting entries as operations admit their devices, until nothing changes.
        Each round asks each waiting device once whether it is admitted; only an admitted
        device's entries are looked at."""
        while True:
            ready = self._ready(waiting)
            if not ready and self._vouch(waiting):
                ready = self._ready(waiting)
            if not ready:
                return
            ready.sort(key=lambda p: (p[1].entry.header.device, p[1].entry.header.seq))
            devices = {h.entry.header.device for _, h in ready}
            verified = frozenset(  # held earlier (verified to be kept), or an operation
                h.entry.id for i, h in ready if i is None or h.entry.header.type == MEMBERSHIP_TYPE
            )
            batch = [(i, h.entry.wire, h.body) for i, h in ready]
            self._store_items(batch, results, devices, verified)

    def _ready(self, waiting: Waiting) -> list[Pooled]:
        """Take the waiting entries :meth:`admits` allows now."""
        ready: list[Pooled] = []
        for device in waiting.devices():
            up_to = self._admitted_up_to(device)
            if up_to:
                ready += waiting.take(device, up_to)
        return ready

    def _admits_held(self, held: Held) -> bool:
        return self.admits(held.entry.header.device, held.entry.header.seq)

    def _vouch(self, waiting: Waiting) -> bool:
        """Open the waiting membership operations in a trial copy of this replica (nothing is
        written): devices the trial admits are admitted here too. This is how a founder's
        create and a joiner's own add, sealed under keys that only the add's wraps bring,
        admit each other. Returns whether any device was newly admitted."""
        ops = [
            (h.entry, h.body)
            for h in self._held_ops.values()
            if h.body is not None and h.entry.id not in waiting.gone
        ]
        ops += [
            (h.entry, h.body)
            for pooled in waiting.fresh.values()
            for _, h in pooled
            if h.entry.header.type == MEMBERSHIP_TYPE and h.body is not None
        ]
        if not ops or not self._worth_a_trial(ops):
            return False
        self._tried = (frozenset(e.id for e, _ in ops), len(self.view.ring.keys))
        trial = self._trial(ops)
        vouched = False
        for device in waiting.devices():
            if trial._admitted_up_to(device) <= self._admitted_up_to(device):
                continue  # the trial admits nothing more of this device
            if any(
                not self._admits_held(held) and trial._admits_held(held)
                for held in waiting.of(device)
            ):
                self._vouched[device] = trial._admitted()[device]
                vouched = True
        if vouched:
            self._admission = None
        return vouched

    def _worth_a_trial(self, ops: list[tuple[Entry, bytes]]) -> bool:
        """A trial costs a resolution of every operation, so it runs only when it may admit
        someone new: a key arrived, the held operations doubled since the last trial, or (on a
        device not in the group yet, which may be bootstrapping) a new one is a feed's first
        entry or wraps keys to this device. A member flooded with forged operations thus pays
        for a number of trials logarithmic in the flood, not one per batch."""
        tried, keys = self._tried or (frozenset(), -1)
        if keys != len(self.view.ring.keys) or len(ops) >= 2 * len(tried) > 0:
            return True
        if self.is_member:
            return False
        fresh = [(e, b) for e, b in ops if e.id not in tried]
        return any(e.header.seq == 1 or _wraps_to(self.me, self.id, e, b) for e, b in fresh)

    def _trial(self, ops: list[tuple[Entry, bytes]]) -> Intake:
        """A copy of this view that has also absorbed ``ops``; it writes nothing."""
        trial = Intake(self.view.copy(cast("GroupStore", DryStore(self.store))))
        trial._vouched = dict(self._vouched)
        trial.view.absorb(ops)
        return trial

    def _keep_held(self, waiting: Waiting, results: list[Ingested | MicrosyncError | None]) -> None:
        """Forget what this batch stored of the held entries and keep this batch's waiting
        entries within :attr:`held_limits` (:attr:`joining_limits` while this device is not in
        the group); each new one that does not fit is refused with
        :class:`HeldQuotaExceeded`. What stays held was verified: it is not verified again."""
        for entry_id in waiting.gone:
            self._buffer.forget(entry_id)
        limits = self.held_limits if self.is_member else self.joining_limits
        if limits != self._buffer.limits:
            self._buffer.recount(limits)
        fresh = sorted(
            (p for pooled in waiting.fresh.values() for p in pooled), key=lambda p: p[0] or 0
        )
        unverified = [h.entry for _, h in fresh if h.entry.header.type != MEMBERSHIP_TYPE]
        bad = bad_signatures(unverified, self.me.verify)
        for index, held in fresh:
            assert index is not None
            result: Ingested | MicrosyncError
            if held.entry.id in bad:
                results[index] = BadSignature("signature does not verify")
                continue
            if held.entry.id in self._held or self._buffer.usage.add(held, limits):
                self._buffer.hold(held)
                result = Ingested(outcome=Outcome.HELD, entry=held.entry)
            else:
                result = HeldQuotaExceeded("too many entries wait for their devices' admission")
            results[index] = result

    def _held_key_slots(self) -> set[tuple[int, bytes]]:
        """The keys sealing the held membership entries that no key held here opens yet."""
        return {slot for _, slot in self._held_sealed()}

    def _held_sealed(self) -> list[tuple[EntryId, tuple[int, bytes]]]:
        """Held membership entries sealed under a key not held here, with that key's slot."""
        found = []
        for held in self._held_ops.values():
            h = held.entry.header
            if held.body is None:
                continue
            try:
                ref = sealed_ref(held.body)
            except (DecodeError, DecryptionError):
                continue
            if self.view.ring.key_for(h.epoch, ref) is None:
                found.append((held.entry.id, (h.epoch, ref)))
        return found


def _stored_bodies(
    batch: Sequence[tuple[int | None, bytes, bytes | None]], out: Sequence[object]
) -> dict[bytes, bytes | None]:
    """The body each item that stored its entry (accepted or pending: not a duplicate, nor a
    refused item, whose body may not match its header) stored it with, by wire."""
    placed, pairs = (Outcome.ACCEPTED, Outcome.PENDING), zip(batch, out, strict=True)
    return {w: b for (_, w, b), r in pairs if isinstance(r, Ingested) and r.outcome in placed}


def _wraps_to(me: LocalMember, group: GroupId, entry: Entry, body: bytes) -> bool:
    """Does a bundle of ``entry`` wrap keys to ``me``?"""
    try:
        bundles, _ = decode_envelope(body)
    except DecodeError:
        return False
    for purpose, epoch, bundle in bundles:
        try:
            if open_bundle(
                bundle,
                group=group,
                epoch=epoch,
                sender=entry.header.device,
                purpose=purpose,
                me=me.device,
                prekeys=me.prekeys,
            ):
                return True
        except (DecryptionError, DecodeError):
            continue
    return False
