"""One device's replica of one group: receive entries, keep the keyring, author operations and
encrypted content. Sans-IO: the store, the clock (``now``) and randomness (``rng``) are passed in.

Receiving is :meth:`GroupReplica.receive`: the feed layer validates and stores each entry
(signature, chain, author certificate); membership entries are then opened (key wraps addressed
to this device, then the sealed operation), and membership is resolved from the set of
operations (:mod:`microsync.group.membership`). Keys are kept only when the operation that
carried them took effect and their commitment matches an announced epoch. Everything a batch
changes commits in one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Final, Protocol, TypeVar, cast

from microsync.crypto import SIGNATURE_SIZE, X25519SecretKey
from microsync.crypto.random import Rng
from microsync.errors import (
    DecodeError,
    DecryptionError,
    HeldQuotaExceeded,
    MicrosyncError,
    NotAMember,
    VerificationError,
)
from microsync.feed import (
    MAX_DEPS,
    Entry,
    EntryId,
    GroupId,
    Ingested,
    Outcome,
    append,
    ingest_many,
)
from microsync.feed.entry import MAX_HLC, feed_position, parse_entry
from microsync.feed.store import AuthorStatus, FeedStore, StoredEntry
from microsync.feed.trust import TrustStore, add_certificate
from microsync.feed.validate import check_body, check_group
from microsync.group.envelope import Bundle, decode_envelope, encode_envelope, sealed_ref
from microsync.group.fold import ContentFold
from microsync.group.held import JOINING, DryStore, Held, HeldLimits, HeldUsage
from microsync.group.keyring import Keyring, Slot
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    Recipient,
    body_ref,
    decrypt_content,
    encrypt_content,
    open_bundle,
    seal_bundle,
)
from microsync.group.membership import (
    ADMIN_KINDS,
    DeviceInfo,
    GroupState,
    OpRecord,
    Resolution,
    _apply,
    _is_reduction,
    _voids,
    authorize,
    group_id_for,
    note_appended,
    note_seen,
    parse_grant,
    resolve,
)
from microsync.group.ops import (
    MEMBERSHIP_TYPE,
    DeviceGrant,
    EpochAnnouncement,
    Op,
    OpKind,
    Role,
    recipients_digest,
)
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
)

__all__ = ["GroupReplica", "GroupStore", "HeldLimits", "LocalMember", "Received"]

T = TypeVar("T")

CUT_OFF_SLACK: Final = 64
"""How many entries past the cut-off of a device that is out are still stored (what it wrote
before it knew, and room for a line that is lifted later); beyond, it is held or refused."""
GROUP_PENDING_QUOTA: Final = 16_384
"""At most this many entries of a group's admitted devices wait ahead of gaps in their feeds
(besides ``feed.DEFAULT_PENDING_QUOTA`` per feed): only members' signed entries can wait there,
so one peer can fill it only with what members really wrote."""
_ADMITTING: Final = (OpKind.CREATE, OpKind.ADD, OpKind.ADD_DEVICE)


class GroupStore(FeedStore, TrustStore, Protocol):
    """What a replica needs from a profile's store."""

    def get_meta(self, key: str) -> bytes | None: ...

    def put_meta(self, key: str, value: bytes) -> None: ...


@dataclass(slots=True)
class LocalMember:
    """This device as the group layer sees it: its identity and the prekey secrets it holds."""

    identity: LocalIdentity
    prekeys: dict[int, X25519SecretKey]
    rng: Rng = os.urandom

    @classmethod
    def of(cls, identity: LocalIdentity, rng: Rng = os.urandom) -> LocalMember:
        return cls(identity, {identity.prekey_certificate.prekey_id: identity.prekey}, rng)

    @property
    def device(self) -> DeviceId:
        return self.identity.device_id

    @property
    def person(self) -> PersonId:
        return self.identity.person_id

    def grant(self) -> DeviceGrant:
        return DeviceGrant(
            self.identity.certificate.to_bytes(), self.identity.prekey_certificate.to_bytes()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """What :meth:`GroupReplica.receive_batch` did: each item's result, in its place, and
    every entry that joined a feed (with its body; ``None`` if it came without one), in the
    order they joined, those held from earlier batches included."""

    results: list[Ingested | MicrosyncError]
    accepted: tuple[StoredEntry, ...]


@dataclass(slots=True)
class _Opened:
    entry: Entry
    record: OpRecord | None  # None while no key opens it
    bundles: list[Bundle]
    grants: list[KeyGrant] = field(repr=False)  # what the bundles held for this device


_encode_envelope = encode_envelope  # the names tests and testing kits used before the split
_decode_envelope = decode_envelope


class GroupReplica:
    """This device's view of one group. Build it with :meth:`create`, :meth:`load` or
    :meth:`join` (a group this device was added to)."""

    def __init__(self, store: GroupStore, me: LocalMember, group: GroupId) -> None:
        self.store = store
        self.me = me
        self.id = group
        self._ring = Keyring(group)
        self._ops: ContentFold[OpRecord] = ContentFold(self._open_sealed)
        """The membership operations: those no key held here opens yet wait in ``locked``."""
        self._round_keys: dict[Slot, EpochKey] = {}  # what may open a sealed op, this round
        self._opened: dict[EntryId, _Opened] = {}
        self._resolution = Resolution(GroupState(), (), frozenset(), {})
        self._heads: set[EntryId] = set()
        self._bodies: dict[EntryId, bytes] = {}
        self._offered: list[KeyGrant] = []  # keys from key responses, kept once announced
        self._pending_devices: dict[DeviceId, DeviceInfo] = {}
        self._forks: dict[DeviceId, int] = {}  # device -> fork point, as of the last check
        self.on_append: Callable[[GroupId], None] | None = None
        """Called (with the group id) whenever this device appends an entry: live sync."""
        self.held_limits = HeldLimits()
        """Bounds on the entries of not-yet-admitted devices waiting in memory (a member's)."""
        self.joining_limits = JOINING
        """The same bounds while this device is not in the group (it bootstraps)."""
        self.released: list[Entry] = []
        """Entries held by an earlier :meth:`receive` that the last one stored."""
        self._joined: list[StoredEntry] = []  # what the batch being received stored
        self._held: dict[EntryId, Held] = {}
        self._vouched: dict[DeviceId, DeviceInfo] = {}
        self._admission: tuple[Resolution, dict[DeviceId, DeviceInfo]] | None = None
        self._tried: tuple[frozenset[EntryId], int] | None = None  # held ops, keys
        self._ring.load(self.store)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        store: GroupStore,
        me: LocalMember,
        name: str,
        *,
        history: str = "shared",
        now: int,
    ) -> GroupReplica:
        """Found a group: this device's person is its first admin, epoch 0 is wrapped to it."""
        nonce = me.rng(32)
        group = group_id_for(me.device, nonce)
        replica = cls(store, me, group)
        genesis = EpochKey.from_root(group, 0, me.rng(32))
        op = Op(
            kind=OpKind.CREATE,
            group_name=name,
            history=history,
            nonce=nonce,
            name=me.identity.name,
            devices=(me.grant(),),
            epoch=EpochAnnouncement(0, genesis.commitment, recipients_digest([me.device])),
        )
        bundle = replica._bundle(Purpose.ROTATION, 0, [me.device], [KeyGrant.of(genesis, True)])
        replica._author(op, genesis, [bundle], now, extra_keys=[genesis])
        return replica

    @classmethod
    def load(cls, store: GroupStore, me: LocalMember, group: GroupId) -> GroupReplica:
        """Rebuild this device's view of ``group`` from the store."""
        replica = cls(store, me, group)
        entries = [
            s.entry
            for device in store.feeds(group)
            for s in store.entries(group, device)
            if s.entry.header.type == MEMBERSHIP_TYPE and s.body is not None
        ]
        bodies = {
            s.entry.id: s.body
            for device in store.feeds(group)
            for s in store.entries(group, device)
            if s.entry.header.type == MEMBERSHIP_TYPE and s.body is not None
        }
        replica._forks = {
            device: status.forked_at
            for device, status in store.feeds(group).items()
            if status.forked_at is not None
        }
        replica._absorb([(e, bodies[e.id]) for e in entries])
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
        opened = self._opened.get(op_id)
        return None if opened is None else opened.record

    def exit_record(self) -> tuple[OpRecord, int] | None:
        """Read-only: the effective operation, last in resolution order, that put this device
        out (its person's REMOVE or LEAVE, or a REVOKE_DEVICE of this device), with the ``hlc``
        its author signed; ``None`` while a member or if this device holds no such operation
        (it was put out by an operation voiding the one that admitted it, for example)."""
        if self.is_member:
            return None
        res, me = self._resolution, self.me
        found: OpRecord | None = None
        for op_id in res.order:
            rec = self.operation(op_id) if op_id in res.effective else None
            if rec is None:
                continue
            op = rec.op
            if (
                (op.kind is OpKind.REMOVE and op.person == me.person)
                or (op.kind is OpKind.LEAVE and res.authors.get(op_id) == me.person)
                or (rec.revocation is not None and rec.revocation.device == me.device)
            ):
                found = rec
        return None if found is None else (found, self._opened[found.id].entry.header.hlc)

    def name_of(self, person: PersonId) -> str | None:
        """Read-only: ``person``'s name as a member now, else as the operation that founded
        the group with them or added them last named them (``None`` if none did)."""
        member = self.state.members.get(person)
        if member is not None:
            return member.name
        name = None
        for op_id in self._resolution.order:
            rec = self.operation(op_id)
            if rec is None or rec.op.name is None:
                continue
            named = rec.op.person if rec.op.kind is OpKind.ADD else None
            if rec.op.kind is OpKind.CREATE and rec.grants:
                named = rec.grants[0].person
            if named == person:
                name = rec.op.name
        return name

    def locked(self) -> list[EntryId]:
        """Membership entries this device holds but cannot open (no key yet), stored or held
        in memory until their author is admitted."""
        held = [i for i, _ in self._held_sealed()]
        return [*self._ops.locked, *held]

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
        h = stored.entry.header
        if stored.body is None or h.group != self.id:
            raise DecryptionError()
        key = self._key_for(h.epoch, body_ref(stored.body))
        content = None if key is None else key.content
        if content is None:
            raise DecryptionError()
        return decrypt_content(
            content,
            stored.body,
            group=self.id,
            epoch=h.epoch,
            device=h.device,
            seq=h.seq,
            type=h.type,
        )

    def key_for(self, number: int, ref: bytes) -> EpochKey | None:
        """The key this device holds for epoch ``number`` whose commitment starts with
        ``ref`` (a key ref), or ``None``."""
        return self._key_for(number, ref)

    def _key_for(self, number: int, ref: bytes) -> EpochKey | None:
        return self._ring.key_for(number, ref)

    # ------------------------------------------------------------------ receiving

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """One store transaction; on any failure the in-memory view is put back as it was, so
        memory and disk never disagree."""
        saved = (
            dict(self._ring.keys),
            {i: replace(o, grants=list(o.grants)) for i, o in self._opened.items()},
            dict(self._bodies),
            list(self._offered),
            self._resolution,
            set(self._heads),
            dict(self._ops.locked),
        )
        try:
            with self.store.transaction():
                yield
        except BaseException:
            keys, opened, bodies, offered, _, heads, locked = saved
            self._ring.keys, self._opened, self._bodies = keys, opened, bodies
            self._offered = offered
            self._heads, self._ops.locked = heads, locked
            # the fast path folds into the live state: rebuild it from the restored ops
            self._resolution = resolve(self.id, self._records())
            raise

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
        """
        results: list[Ingested | MicrosyncError | None] = [None] * len(items)
        vouched = dict(self._vouched)
        self.released, self._joined = [], []
        try:
            with self._atomic():
                first, devices = self._admitted_positions(items)
                self._store_items([(i, *items[i]) for i in first], results, devices)
                waiting = self._screen(items, results, peer)
                pool = self._settle([*((None, h) for h in self._held.values()), *waiting], results)
        except BaseException:
            self._vouched, self._admission, self.released, self._joined = vouched, None, [], []
            raise
        self._held = self._keep_held(pool, results)
        self._report_released(results)
        assert all(r is not None for r in results)
        joined, self._joined = tuple(self._joined), []
        return Received(results=cast(list[Ingested | MicrosyncError], results), accepted=joined)

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
        if device not in self._admitted() or seq < 1:
            return False
        windows = self.state.windows.get(device)
        if not windows or windows[-1][1] is None:
            return True  # counting now, or vouched for while joining
        return seq <= windows[-1][1] + CUT_OFF_SLACK

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
        res = self._resolution
        if self._admission is None or self._admission[0] is not res:
            records = self._records()
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
        for i, (wire, _) in enumerate(items):
            try:
                device, seq = feed_position(wire[:-SIGNATURE_SIZE])
            except (DecodeError, IndexError):
                found.append(i)
                continue
            if self.admits(device, seq):
                found.append(i)
                devices.add(device)
        return found, devices

    def _store_items(
        self,
        batch: Sequence[tuple[int | None, bytes, bytes | None]],
        results: list[Ingested | MicrosyncError | None],
        devices: set[DeviceId],
    ) -> None:
        """Ingest admitted items of ``devices`` (their certificates taken from their grants
        when missing) and absorb the membership entries that joined a feed. Index ``None``: an
        entry held earlier."""
        if not batch:
            return
        self._trust_grants(devices)
        waiting = sum(self.store.feed_status(self.id, d).pending for d in self._admitted())
        out = ingest_many(
            self.store,
            self.id,
            [(w, b) for _, w, b in batch],
            group_pending_room=GROUP_PENDING_QUOTA - waiting,
        )
        accepted: list[tuple[Entry, bytes]] = []
        bodies = {w: b for _, w, b in batch if b is not None}
        for (index, _, _), result in zip(batch, out, strict=True):
            if index is not None:
                results[index] = result
            if not isinstance(result, Ingested):
                continue
            if index is None:
                self.released.extend(result.accepted)
            for entry in result.accepted:
                stored = self._joined_body(entry, bodies)
                self._joined.append(stored)
                if entry.header.type == MEMBERSHIP_TYPE and stored.body is not None:
                    accepted.append((entry, stored.body))
        if accepted:
            self._absorb(accepted)

    def _joined_body(self, entry: Entry, bodies: Mapping[bytes, bytes]) -> StoredEntry:
        """``entry``, which just joined its feed, with its body: the one it came with, or for a
        pending entry it unblocked, the one stored then (read once, here)."""
        body = bodies.get(entry.wire)
        if body is None:
            h = entry.header
            stored = self.store.entry_at(self.id, h.device, h.seq)
            body = None if stored is None else stored.body
        return StoredEntry(entry=entry, body=body)

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
    ) -> list[tuple[int | None, Held]]:
        """Check the shape, group and body of the items not stored yet, and the signature of
        membership entries (a trial may open them); content is verified if it is to wait
        (:meth:`_keep_held`), or by the feed layer if it is stored in this batch."""
        found: list[tuple[int | None, Held]] = []
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

    def _settle(
        self,
        pool: list[tuple[int | None, Held]],
        results: list[Ingested | MicrosyncError | None],
    ) -> list[tuple[int | None, Held]]:
        """Store waiting entries as operations admit their devices, until nothing changes.
        Returns what still waits."""
        while pool:
            ready = [p for p in pool if self._admits_held(p[1])]
            if not ready and self._vouch(pool):
                ready = [p for p in pool if self._admits_held(p[1])]
            if not ready:
                break
            chosen = {id(p) for p in ready}
            pool = [p for p in pool if id(p) not in chosen]
            ready.sort(key=lambda p: (p[1].entry.header.device, p[1].entry.header.seq))
            devices = {h.entry.header.device for _, h in ready}
            self._store_items([(i, h.entry.wire, h.body) for i, h in ready], results, devices)
        return pool

    def _admits_held(self, held: Held) -> bool:
        return self.admits(held.entry.header.device, held.entry.header.seq)

    def _vouch(self, pool: list[tuple[int | None, Held]]) -> bool:
        """Open the waiting membership operations in a trial copy of this replica (nothing is
        written): devices the trial admits are admitted here too. This is how a founder's
        create and a joiner's own add, sealed under keys that only the add's wraps bring,
        admit each other. Returns whether any device was newly admitted."""
        ops = [
            (h.entry, h.body)
            for _, h in pool
            if h.entry.header.type == MEMBERSHIP_TYPE and h.body is not None
        ]
        if not ops or not self._worth_a_trial(ops):
            return False
        self._tried = (frozenset(e.id for e, _ in ops), len(self._ring.keys))
        trial = self._trial(ops)
        vouched = False
        for _, held in pool:
            h = held.entry.header
            if not self._admits_held(held) and trial._admits_held(held):
                self._vouched[h.device] = trial._admitted()[h.device]
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
        if keys != len(self._ring.keys) or len(ops) >= 2 * len(tried) > 0:
            return True
        if self.is_member:
            return False
        fresh = [(e, b) for e, b in ops if e.id not in tried]
        return any(e.header.seq == 1 or self._wraps_to_me(e, b) for e, b in fresh)

    def _wraps_to_me(self, entry: Entry, body: bytes) -> bool:
        try:
            bundles, _ = decode_envelope(body)
        except DecodeError:
            return False
        for purpose, epoch, bundle in bundles:
            try:
                if open_bundle(
                    bundle,
                    group=self.id,
                    epoch=epoch,
                    sender=entry.header.device,
                    purpose=purpose,
                    me=self.me.device,
                    prekeys=self.me.prekeys,
                ):
                    return True
            except (DecryptionError, DecodeError):
                continue
        return False

    def _trial(self, ops: list[tuple[Entry, bytes]]) -> GroupReplica:
        """A copy of this replica's view that has also absorbed ``ops``; it writes nothing."""
        trial = GroupReplica(cast(GroupStore, DryStore(self.store)), self.me, self.id)
        trial._ring.keys = dict(self._ring.keys)
        trial._ops.locked = dict(self._ops.locked)
        trial._opened = {i: replace(o, grants=list(o.grants)) for i, o in self._opened.items()}
        trial._bodies = dict(self._bodies)
        trial._offered = list(self._offered)
        trial._resolution = replace(self._resolution, state=self._resolution.state.copy())
        trial._heads = set(self._heads)
        trial._vouched = dict(self._vouched)
        trial._absorb(ops)
        return trial

    def _keep_held(
        self,
        pool: list[tuple[int | None, Held]],
        results: list[Ingested | MicrosyncError | None],
    ) -> dict[EntryId, Held]:
        """The entries that go on waiting, within :attr:`held_limits` (:attr:`joining_limits`
        while this device is not in the group); each new one that does not fit is refused with
        :class:`HeldQuotaExceeded`."""
        kept: dict[EntryId, Held] = {}
        usage = HeldUsage()
        limits = self.held_limits if self.is_member else self.joining_limits
        for index, held in pool:
            result: Ingested | MicrosyncError
            if index is not None and held.entry.header.type != MEMBERSHIP_TYPE:
                try:  # content is verified only if it stays: what is stored now, ingest checks
                    held.entry.verify_signature()
                except VerificationError as error:
                    results[index] = error
                    continue
            if held.entry.id in kept or usage.add(held, limits):
                kept[held.entry.id] = held
                result = Ingested(outcome=Outcome.HELD, entry=held.entry)
            else:
                result = HeldQuotaExceeded("too many entries wait for their devices' admission")
            if index is not None:
                results[index] = result
        return kept

    def _absorb(self, entries: Iterable[tuple[Entry, bytes]]) -> None:
        """Open and resolve membership entries new here (their bodies as stored)."""
        fresh: list[Entry] = []
        for entry, body in entries:
            if entry.id in self._opened:
                continue
            try:
                bundles, _ = decode_envelope(body)
            except DecodeError:
                continue  # a malformed envelope can never take effect
            self._opened[entry.id] = _Opened(entry, None, bundles, [])
            fresh.append(entry)
            self._bodies[entry.id] = body
        if not fresh:
            return
        self._open_all(fresh)
        self._resolve([e.id for e in fresh])

    def _open_all(self, fresh: Sequence[Entry] = ()) -> None:
        """Open bundles addressed to this device, then fold every sealed op a key opens (the
        content fold, :mod:`microsync.group.fold`); repeat while newly opened ops bring keys
        that open more. ``fresh``: entries not tried yet."""
        for opened in self._opened.values():
            if not opened.grants and opened.record is None:
                opened.grants.extend(self._open_bundles(opened))
        batch = [*self._ops.locked.values(), *fresh]
        while batch:
            offered = [g for o in self._opened.values() for g in o.grants] + self._offered
            self._round_keys = self._ring.candidates(offered)
            folded = self._ops.fold(batch, self._bodies)
            for item in folded:
                self._opened[item.entry.id].record = item.value
            batch = list(self._ops.locked.values()) if folded else []

    def _open_bundles(self, opened: _Opened) -> list[KeyGrant]:
        """The key grants in ``opened``'s bundles that are addressed to this device."""
        h = opened.entry.header
        found: list[KeyGrant] = []
        for purpose, epoch, bundle in opened.bundles:
            try:
                grants = open_bundle(
                    bundle,
                    group=self.id,
                    epoch=epoch,
                    sender=h.device,
                    purpose=purpose,
                    me=self.me.device,
                    prekeys=self.me.prekeys,
                )
            except (DecryptionError, DecodeError):
                continue
            found += grants or []
        return found

    def _open_sealed(self, entry: Entry, body: bytes) -> OpRecord:
        """The operation sealed in a membership entry, opened with this round's keys
        (``DecryptionError``: no key held here opens it, so it stays locked)."""
        h = entry.header
        try:
            _, sealed = decode_envelope(body)
            ref = body_ref(sealed)
        except (DecodeError, DecryptionError):
            raise DecryptionError() from None
        for (number, digest), key in self._round_keys.items():
            if number != h.epoch or not digest.startswith(ref):
                continue
            try:
                plain = decrypt_content(
                    key.control,
                    sealed,
                    group=self.id,
                    epoch=h.epoch,
                    device=h.device,
                    seq=h.seq,
                    type=h.type,
                )
                op = Op.from_bytes(plain)
            except (DecryptionError, DecodeError):
                continue
            return OpRecord.build(entry.id, h.device, h.seq, h.deps, op)
        raise DecryptionError()

    def _records(self) -> dict[EntryId, OpRecord]:
        """Every opened operation, but none of a forked device from its fork on."""
        forks = self._forks
        return {
            i: o.record
            for i, o in self._opened.items()
            if o.record is not None and o.record.seq < forks.get(o.record.device, o.record.seq + 1)
        }

    def forget_forked(self) -> None:
        """Resolve again without what forked devices wrote from their fork on (called when a
        fork is learnt: ops already folded from past the fork stop counting)."""
        self._forks = {
            device: status.forked_at
            for device, status in self.store.feeds(self.id).items()
            if status.forked_at is not None
        }
        with self._atomic():
            self._resolution = resolve(self.id, self._records())
            ordered = set(self._resolution.order)
            records = self._records()
            referenced = {d for r in records.values() if r.id in ordered for d in r.deps}
            self._heads = ordered - referenced
            self._accept_keys()

    def _resolve(self, fresh: list[EntryId]) -> None:
        records = self._records()
        single = fresh[0] if len(fresh) == 1 else None
        rec = records.get(single) if single is not None else None
        fast = (
            rec is not None
            # an op that saw every op may draw cut-offs (none can reach below what it saw),
            # but a revocation's cut-off is kept on the full path, as it always was
            and rec.op.kind is not OpKind.REVOKE_DEVICE
            and set(rec.deps) == self._heads
            and len(records) == len(self._resolution.order) + 1
        )
        if fast:
            assert rec is not None
            self._fast_path(rec)
        else:
            self._resolution = resolve(self.id, records)
        ordered = set(self._resolution.order)
        referenced = {d for r in records.values() if r.id in ordered for d in r.deps}
        self._heads = ordered - referenced
        self._accept_keys()

    def _fast_path(self, rec: OpRecord) -> None:
        """An op that saw every op before it: authorize against the current state and fold."""
        res = self._resolution
        state = res.state
        verdict = authorize(self.id, rec, state)
        note_seen(state, rec)
        effective = set(res.effective)
        authors = dict(res.authors)
        if verdict.author is not None:
            authors[rec.id] = verdict.author
        applied = verdict.ok and _apply(state, rec, verdict.author, verdict.recipients)
        if applied:
            effective.add(rec.id)
        note_appended(state, rec, verdict, applied)
        valid = res.valid | {rec.id} if verdict.ok else res.valid
        self._resolution = Resolution(
            state, (*res.order, rec.id), frozenset(effective), authors, valid
        )

    def _accept_keys(self) -> None:
        """Keep keys carried by valid ops (or key responses) whose commitment a valid op
        announced: an effective one, or one voided by a concurrent reduction (an author who had
        not seen the voiding may have sealed operations under its key; see
        :meth:`Resolution.void_epochs`)."""
        announced = set(self.state.epochs) | self._void_epochs()
        changed = False
        for op_id in self._resolution.valid:
            for grant in self._opened[op_id].grants:
                changed |= self._ring.keep(grant, announced)
        for grant in self._offered:
            changed |= self._ring.keep(grant, announced)
        if changed:
            self._ring.save(self.store)

    def _void_epochs(self) -> set[tuple[int, bytes]]:
        return self._resolution.void_epochs(self._records())

    # ------------------------------------------------------------------ authoring

    def _recipients(self, devices: Iterable[DeviceId], state: GroupState) -> list[Recipient]:
        out = []
        index = {d: info for m in state.members.values() for d, info in m.devices.items()}
        for device in sorted(set(devices)):
            info = index.get(device)
            if info is None:
                info = self._pending_devices.get(device)
            if info is None:
                raise NotAMember("no prekey is known for a recipient device")
            out.append(Recipient(device, info.prekey_id, info.prekey))
        return out

    def _bundle(
        self,
        purpose: Purpose,
        epoch: int,
        devices: Iterable[DeviceId],
        grants: list[KeyGrant],
        infos: Iterable[DeviceInfo] = (),
    ) -> Bundle:
        self._pending_devices = {i.device: i for i in infos}
        if not self.state.members:  # founding: only this device, from its own identity
            me = self.me.identity
            self._pending_devices[me.device_id] = DeviceInfo(
                me.device_id,
                me.person_id,
                me.name,
                me.prekey_certificate.prekey_id,
                me.prekey_certificate.key,
                me.certificate.to_bytes(),
            )
        recipients = self._recipients(devices, self.state)
        bundle = seal_bundle(
            self.me.rng,
            group=self.id,
            epoch=epoch,
            sender=self.me.device,
            purpose=purpose,
            recipients=recipients,
            grants=grants,
        )
        return purpose, epoch, bundle

    def _seal_key(self) -> EpochKey:
        """The key to seal an op under: the current epoch's, else the newest held of an epoch
        announced in this view (a void epoch's key only when no other is held)."""
        current = self.current_epoch_key()
        if current is not None:
            return current
        if not self._ring.keys:
            raise NotAMember("this device holds no key of the group")
        announced = self.state.epochs
        return max(
            self._ring.keys.values(),
            key=lambda k: ((k.number, k.commitment) in announced, k.number, k.root is not None),
        )

    def _append(
        self, type: int, body: bytes, epoch: int, now: int, deps: Sequence[EntryId] = ()
    ) -> Entry:
        """Sign and store the next entry of this device's feed in the group.

        The entry's ``hlc`` is ``now``, but never less than one past the previous entry of the
        feed: a feed's timestamps strictly increase even when the clock stands still or steps
        back, so "newest first" never contradicts the order a device wrote in. Only this
        device's own entry is read (a peer's timestamps never reach here: the app layer bounds
        what it derives from them), and the result never passes the largest ``hlc`` an entry
        may carry, so this device never signs an entry that it, or a peer, cannot decode."""
        if self.on_append is not None:
            self.on_append(self.id)
        head = self.store.feed_status(self.id, self.me.device)
        if head.head_seq:
            previous = self.store.entry_at(self.id, self.me.device, head.head_seq)
            if previous is not None:
                now = max(now, min(previous.entry.header.hlc + 1, MAX_HLC))
        now = min(max(now, 0), MAX_HLC)
        return append(
            self.store,
            self.me.identity.device_key,
            group=self.id,
            type=type,
            body=body,
            epoch=epoch,
            hlc=now,
            deps=deps,
        )

    def _author(
        self,
        op: Op,
        seal: EpochKey,
        bundles: list[Bundle],
        now: int,
        extra_keys: Sequence[EpochKey] = (),
    ) -> Entry:
        with self._atomic():
            seq = self.store.feed_status(self.id, self.me.device).head_seq + 1
            sealed = encrypt_content(
                self.me.rng,
                seal.control,
                seal.ref,
                op.to_bytes(),
                group=self.id,
                epoch=seal.number,
                device=self.me.device,
                seq=seq,
                type=MEMBERSHIP_TYPE,
            )
            body = encode_envelope(bundles, sealed)
            deps = sorted(self._heads)[:MAX_DEPS]
            entry = self._append(MEMBERSHIP_TYPE, body, seal.number, now, deps)
            self._ring.add(extra_keys)
            if extra_keys:
                self._ring.save(self.store)
            self._absorb([(entry, body)])
            if entry.id not in self._resolution.effective:
                verb = op.kind.name.lower().replace("_", " ")
                mine = self.state.members.get(self.me.person)
                if op.kind in ADMIN_KINDS and mine is not None and mine.role is not Role.ADMIN:
                    raise NotAMember(f"only admins may {verb} (you are a {mine.role})")
                target = self.state.members.get(op.person) if op.person is not None else None
                if (
                    op.kind in (OpKind.REMOVE, OpKind.SET_ROLE)
                    and mine is not None
                    and target is not None
                    and target.role is Role.ADMIN
                    and target.person != mine.person
                    and target.rank <= mine.rank
                ):
                    raise NotAMember(
                        f"cannot {verb} {target.name}: an admin may {verb} only members and "
                        "admins ranked below it (made admin further from the founder)"
                    )
                raise NotAMember(f"this device may not {verb} in this group now")
        return entry

    def _require_member(self) -> PersonId:
        person = self.state.person_of(self.me.device)
        if person is None:
            raise NotAMember("this device is not a member of the group")
        return person

    def _new_epoch(
        self, state_after: GroupState, extra: Iterable[DeviceInfo] = ()
    ) -> tuple[EpochKey, EpochAnnouncement, Bundle]:
        number = self.state.max_epoch + 1
        key = EpochKey.from_root(self.id, number, self.me.rng(32))
        devices = state_after.entitled_devices()
        announcement = EpochAnnouncement(number, key.commitment, recipients_digest(devices))
        bundle = self._bundle(Purpose.ROTATION, number, devices, [KeyGrant.of(key, True)], extra)
        return key, announcement, bundle

    def _preview(self, op: Op, grants: Sequence[DeviceInfo] = ()) -> GroupState:
        """The state after ``op`` by this device (to compute a new epoch's recipients)."""
        trial = self.state.copy()
        rec = OpRecord(EntryId(b"\0" * 32), self.me.device, 0, (), op, tuple(grants))
        _apply(trial, rec, self.state.person_of(self.me.device))
        return trial

    def add(
        self,
        person: PersonId,
        name: str,
        devices: Sequence[DeviceGrant],
        *,
        role: Role = Role.MEMBER,
        invite_id: bytes | None = None,
        now: int,
    ) -> Entry:
        """Admit ``person`` with ``devices`` (admin only). With ``history="shared"`` the joiner
        gets every epoch key this device holds; with ``"none"`` a new epoch starts and the joiner
        gets only the control keys of earlier epochs (it can check membership, not read)."""
        self._require_member()
        infos = [_checked_grant(g) for g in devices]
        op = Op(
            kind=OpKind.ADD,
            person=person,
            name=name,
            role=role,
            devices=tuple(devices),
            invite_id=invite_id,
            time=now if invite_id is not None else None,
            positions=self._positions(i.device for i in infos),
        )
        joiners = [i.device for i in infos]
        seal = self._seal_key()
        bundles = []
        full = self.state.history == "shared"
        history = [KeyGrant.of(k, full and k.root is not None) for k in self._ring.keys.values()]
        extra: list[EpochKey] = []
        if not full:
            after = self._preview(op, infos)
            key, announcement, rotation = self._new_epoch(after, infos)
            op = replace(op, epoch=announcement)
            bundles.append(rotation)
            extra.append(key)
        bundles.append(self._bundle(Purpose.HISTORY, seal.number, joiners, history, infos))
        return self._author(op, seal, bundles, now, extra_keys=extra)

    def remove(self, person: PersonId, *, now: int) -> Entry:
        """Remove ``person`` (admin only; removing oneself is leaving) and start a new epoch
        wrapped to every remaining device."""
        self._require_member()
        target = self.state.members.get(person)
        positions = self._positions(target.devices if target is not None else ())
        op = Op(kind=OpKind.REMOVE, person=person, positions=positions)
        key, announcement, rotation = self._new_epoch(self._preview(op))
        op = replace(op, epoch=announcement)
        return self._author(op, self._seal_key(), [rotation], now, extra_keys=[key])

    def leave(self, *, now: int) -> Entry:
        """Leave the group. The leaver cannot choose the next key; the next member to write
        starts a new epoch without it."""
        person = self._require_member()
        others = set(self.state.members[person].devices) - {self.me.device}
        op = Op(kind=OpKind.LEAVE, positions=self._positions(others))
        return self._author(op, self._seal_key(), [], now)

    def set_role(self, person: PersonId, role: Role, *, now: int) -> Entry:
        """Promote or demote ``person`` (admin only, and only a member or an admin of a
        higher rank than this device's person: see ``docs/membership.md``)."""
        self._require_member()
        target = self.state.members.get(person)
        positions = self._positions(target.devices if target is not None else ())
        op = Op(kind=OpKind.SET_ROLE, person=person, role=role, positions=positions)
        return self._author(op, self._seal_key(), [], now)

    def _positions(self, devices: Iterable[DeviceId]) -> tuple[tuple[DeviceId, int], ...]:
        """The feed heads of ``devices`` in this group as this device holds them: the line
        an op that admits or cuts them off draws."""
        return tuple(
            (device, self.store.feed_status(self.id, device).head_seq)
            for device in sorted(set(devices))
        )

    def rotate(self, *, now: int) -> Entry:
        """Start a new epoch wrapped to every entitled device (any member may)."""
        self._require_member()
        key, announcement, rotation = self._new_epoch(self.state)
        op = Op(kind=OpKind.ROTATE, epoch=announcement)
        return self._author(op, self._seal_key(), [rotation], now, extra_keys=[key])

    def add_device(self, grant: DeviceGrant, *, now: int) -> Entry:
        """Add a new device of this device's own person, giving it every key held here."""
        person = self._require_member()
        info = _checked_grant(grant)
        if info.person != person:
            raise NotAMember("a person may only add their own devices")
        grants = [KeyGrant.of(k, k.root is not None) for k in self._ring.keys.values()]
        seal = self._seal_key()
        bundle = self._bundle(Purpose.HISTORY, seal.number, [info.device], grants, [info])
        op = Op(kind=OpKind.ADD_DEVICE, devices=(grant,), positions=self._positions([info.device]))
        return self._author(op, seal, [bundle], now)

    def revoke_device(self, revocation: DeviceRevocation, *, now: int) -> Entry:
        """Revoke one of this person's other devices and start an epoch without it. Its
        operations after the cut-off (its feed head as seen here) are void everywhere."""
        self._require_member()
        cutoff = self.store.feed_status(self.id, revocation.device).head_seq
        op = Op(kind=OpKind.REVOKE_DEVICE, revocation=revocation.to_bytes(), cutoff=cutoff)
        rec = OpRecord.build(EntryId(b"\0" * 32), self.me.device, 0, (), op)
        trial = self.state.copy()
        _apply(trial, rec, self.state.person_of(self.me.device))
        key, announcement, rotation = self._new_epoch(trial)
        op = replace(op, epoch=announcement)
        return self._author(op, self._seal_key(), [rotation], now, extra_keys=[key])

    def update_prekey(self, certificate: PrekeyCertificate, *, now: int) -> Entry:
        """Publish this device's new signed prekey (future wraps go to it)."""
        self._require_member()
        grant = DeviceGrant(self.me.identity.certificate.to_bytes(), certificate.to_bytes())
        return self._author(Op(kind=OpKind.PREKEY, devices=(grant,)), self._seal_key(), [], now)

    def create_invite(self, invite_id: bytes, *, expires_at: int, role: Role, now: int) -> Entry:
        self._require_member()
        op = Op(kind=OpKind.INVITE, invite_id=invite_id, time=expires_at, role=role)
        return self._author(op, self._seal_key(), [], now)

    def revoke_invite(self, invite_id: bytes, *, now: int) -> Entry:
        self._require_member()
        return self._author(
            Op(kind=OpKind.REVOKE_INVITE, invite_id=invite_id), self._seal_key(), [], now
        )

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
            seq = self.store.feed_status(self.id, self.me.device).head_seq + 1
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
            return StoredEntry(entry=self._append(type, body, key.number, now, deps), body=body)

    # ------------------------------------------------------------------ key requests

    def missing_keys(self) -> list[tuple[int, bytes]]:
        """Epochs announced in this group (or sealing ops here) that this device lacks, and
        epochs whose content key it is entitled to but holds only the control key of (see
        :meth:`answer_key_request`)."""
        wanted = {slot for slot in self.state.epochs if slot not in self._ring.keys}
        me = self.state.device(self.me.device)
        wanted |= {
            slot
            for slot, key in self._ring.keys.items()
            if key.root is None and me is not None and self._entitled_to_content(me, key)
        }
        for entry in self._ops.locked.values():
            try:
                wanted.add((entry.header.epoch, sealed_ref(self._bodies[entry.id])))
            except (DecodeError, DecryptionError):
                continue
        return sorted(wanted | self._held_key_slots())

    def _held_key_slots(self) -> set[tuple[int, bytes]]:
        """The keys sealing the held membership entries that no key held here opens yet."""
        return {slot for _, slot in self._held_sealed()}

    def _held_sealed(self) -> list[tuple[EntryId, tuple[int, bytes]]]:
        """Held membership entries sealed under a key not held here, with that key's slot."""
        found = []
        for held in self._held.values():
            h = held.entry.header
            if h.type != MEMBERSHIP_TYPE or held.body is None:
                continue
            try:
                ref = sealed_ref(held.body)
            except (DecodeError, DecryptionError):
                continue
            if self._key_for(h.epoch, ref) is None:
                found.append((held.entry.id, (h.epoch, ref)))
        return found

    def answer_key_request(
        self, requester: DeviceId, wanted: Iterable[tuple[int, bytes]]
    ) -> Bundle:
        """Wrap the requested keys this device holds to ``requester``'s current prekey.

        Refused with :class:`NotAMember` unless ``requester`` is an active device of a current
        member. Content keys go only to devices entitled to them (always with shared history;
        with ``"none"``, only for epochs the requester's person was wrapped); control keys go
        to every member device.
        """
        info = self.state.device(requester)
        if info is None:
            return self._answer_former_device(requester, wanted)
        grants = []
        for number, ref in wanted:
            key = self._key_for(number, ref[:16])
            if key is None:
                continue
            full = key.root is not None and self._entitled_to_content(info, key)
            grants.append(KeyGrant.of(key, full))
        epoch = self.state.max_epoch
        return self._bundle(Purpose.KEY_RESPONSE, epoch, [requester], grants)

    def exits_of(self, device: DeviceId) -> list[EntryId]:
        """The effective operations that put ``device`` out of the group, if a valid
        operation ever admitted it (else none)."""
        if self.state.device(device) is not None:
            return []
        found = self._former(device)
        if found is None:
            return []
        admitted, info, records = found
        return self._exits(info, admitted, records)

    def _former(
        self, device: DeviceId
    ) -> tuple[list[OpRecord], DeviceInfo, dict[EntryId, OpRecord]] | None:
        """The valid operations that admitted ``device``, its latest grant (admissions and the
        prekeys it published while in), and the records; ``None`` if nothing admitted it."""
        records = self._records()
        admitted = [
            r
            for r in records.values()
            if r.id in self._resolution.valid
            and r.op.kind in (OpKind.CREATE, OpKind.ADD, OpKind.ADD_DEVICE)
            and any(g.device == device for g in r.grants)
        ]
        if not admitted:
            return None
        known = [g for r in admitted for g in r.grants if g.device == device]
        for r in records.values():  # a prekey it published while it was in
            if r.id in self._resolution.effective and r.op.kind is OpKind.PREKEY:
                known.extend(g for g in r.grants if g.device == device)
        return admitted, max(known, key=lambda g: g.prekey_id), records

    def causal_past(self, op_id: EntryId) -> set[EntryId]:
        """The membership operations ``op_id`` names in its deps, transitively."""
        return _ancestors(self._records(), op_id)

    def _answer_former_device(
        self, requester: DeviceId, wanted: Iterable[tuple[int, bytes]]
    ) -> Bundle:
        """A device that a valid operation admitted but that is out now (removed, revoked, or
        its admission voided by a concurrent reduction) may lack the key that seals the very
        operation that put it out, and would then believe it is still in. It gets the control
        keys (never content keys) of the epochs started in the causal past of those
        operations: enough to open them and their past, nothing from after its exit."""
        found = self._former(requester)
        if found is None:
            raise NotAMember("keys are only given to members' devices")
        admitted, info, records = found
        exits = self._exits(info, admitted, records)
        allowed: set[tuple[int, bytes]] = set()
        for exit_id in exits:
            for op_id in _ancestors(records, exit_id):
                started = records[op_id].op.epoch
                if started is not None:
                    allowed.add((started.number, started.commitment))
        grants = []
        for number, ref in wanted:
            key = self._key_for(number, ref[:16])
            if key is not None and (key.number, key.commitment) in allowed:
                grants.append(KeyGrant.of(key, False))
        if not grants:
            raise NotAMember("keys are only given to members' devices")
        epoch = self.state.max_epoch
        return self._bundle(Purpose.KEY_RESPONSE, epoch, [requester], grants, [info])

    def _exits(
        self, info: DeviceInfo, admitted: list[OpRecord], records: dict[EntryId, OpRecord]
    ) -> list[EntryId]:
        """The effective reductions that put ``info.device`` out: the removal or departure of
        its person, its revocation, and whatever voided an operation that admitted it."""
        res = self._resolution
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
            if j.id in res.effective:
                continue
            past = _ancestors(records, j.id)
            for r in reductions:
                if r.id in past:
                    continue
                cut = r.op.cutoff
                if r.revocation is not None and r.revocation.device == j.device:
                    if cut is not None and j.seq > cut:  # its author's revocation cut it off
                        out.append(r.id)
                elif j.id not in _ancestors(records, r.id) and _voids(
                    r, res.authors.get(r.id), j, res.authors.get(j.id)
                ):
                    out.append(r.id)
        return out

    def _entitled_to_content(self, info: DeviceInfo, key: EpochKey) -> bool:
        epoch = self.state.epochs.get((key.number, key.commitment))
        if epoch is None:
            return False  # a void epoch: its content is owed to no one
        if self.state.history == "shared":
            return True
        member = self.state.members.get(info.person)
        devices = set(member.devices) if member is not None else set()
        return bool(epoch.recipients & (devices | {info.device}))

    def accept_key_response(self, sender: DeviceId, response: Bundle) -> int:
        """Keep the keys in a response that match announced epochs. Returns how many were new.

        A forged or misaddressed response raises :class:`DecryptionError`; keys that match no
        announced epoch are ignored, so no one can inject a key of their own. The sender need
        not be a member any more: a key is checked against the commitment a valid operation
        announced, not against who passed it on, and the only devices holding the key that
        seals an operation may have left or been revoked since.
        """
        purpose, epoch, bundle = response
        if purpose is not Purpose.KEY_RESPONSE:
            raise DecryptionError()
        grants = open_bundle(
            bundle,
            group=self.id,
            epoch=epoch,
            sender=sender,
            purpose=purpose,
            me=self.me.device,
            prekeys=self.me.prekeys,
        )
        if not grants:
            return 0
        with self.store.transaction():
            # locked ops may open with these keys; then their announcements count too
            self._offered.extend(grants)
            before = {slot: key.root is not None for slot, key in self._ring.keys.items()}
            self._open_all()
            self._resolve([])
            gained = sum(
                1
                for slot, key in self._ring.keys.items()
                if before.get(slot) is None or (key.root is not None and not before[slot])
            )
            return gained


def _checked_grant(grant: DeviceGrant) -> DeviceInfo:
    return parse_grant(grant)


def _ancestors(records: dict[EntryId, OpRecord], op_id: EntryId) -> set[EntryId]:
    """The causal past of ``op_id`` (the ops it names in ``deps``, transitively)."""
    seen: set[EntryId] = set()
    stack = list(records[op_id].deps)
    while stack:
        current = stack.pop()
        if current not in seen and current in records:
            seen.add(current)
            stack.extend(records[current].deps)
    return seen
