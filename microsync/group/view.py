"""The membership view of one group on this device: opened operations, keys, resolution.

:class:`MembershipView` holds every membership entry this device stored (its envelope, the key
grants addressed to this device, and the operation once a key opens it), the keyring, and the
resolution of the opened operations (:func:`~microsync.group.membership.resolve`). Sealed
operations are opened through the one content fold (:mod:`microsync.group.fold`): those no key
opens yet wait there and are retried whenever an opened operation brings keys (a fixed point)
or a key response arrives. A key enters the ring only when a valid operation announced its
commitment. An operation that saw every operation before it is folded into the live state
(the fast path); any other resolves the whole set again.

Invariant: on any failure inside :meth:`MembershipView.atomic` the view is put back as it was,
so memory and the store never disagree. Sans-IO: the store and ``rng`` are the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from microsync.errors import DecodeError, DecryptionError
from microsync.feed import Entry, EntryId, GroupId
from microsync.group.envelope import Bundle, decode_envelope, sealed_ref
from microsync.group.exits import entitled_to_content
from microsync.group.fold import ContentFold
from microsync.group.keyring import Keyring, Slot
from microsync.group.keys import (
    EpochKey,
    KeyGrant,
    Purpose,
    body_ref,
    decrypt_content,
    open_bundle,
)
from microsync.group.membership import (
    GroupState,
    OpRecord,
    Resolution,
    _apply,
    authorize,
    note_appended,
    note_seen,
    resolve,
)
from microsync.group.ops import Op, OpKind
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.group.member import GroupStore, LocalMember

__all__ = ["MembershipView"]


@dataclass(slots=True)
class _Opened:
    entry: Entry
    record: OpRecord | None  # None while no key opens it
    bundles: list[Bundle]
    grants: list[KeyGrant] = field(repr=False)  # what the bundles held for this device


class MembershipView:
    """The opened membership of one group (module doc). ``store``: where keys are kept."""

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
        self._forks: dict[DeviceId, int] = {}  # device -> fork point, as of the last check

    def __repr__(self) -> str:
        return f"MembershipView({self.id.hex()[:8]}, {len(self._opened)} ops)"

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> GroupState:
        return self._resolution.state

    @property
    def resolution(self) -> Resolution:
        return self._resolution

    @resolution.setter
    def resolution(self, value: Resolution) -> None:
        self._resolution = value

    @property
    def ring(self) -> Keyring:
        return self._ring

    @property
    def heads(self) -> frozenset[EntryId]:
        """The membership operations no other resolved one names in its deps."""
        return frozenset(self._heads)

    def operation(self, op_id: EntryId) -> OpRecord | None:
        """The opened membership operation with entry id ``op_id``, if this device holds it."""
        opened = self._opened.get(op_id)
        return None if opened is None else opened.record

    def entry(self, op_id: EntryId) -> Entry | None:
        """The membership entry with id ``op_id``, if this device holds it (opened or not)."""
        opened = self._opened.get(op_id)
        return None if opened is None else opened.entry

    def hlc_of(self, op_id: EntryId) -> int:
        """The ``hlc`` the author of operation ``op_id`` (held here) signed."""
        return self._opened[op_id].entry.header.hlc

    def locked(self) -> list[EntryId]:
        """Stored membership entries no key held here opens yet."""
        return list(self._ops.locked)

    def locked_slots(self) -> set[Slot]:
        """The keys sealing the stored membership entries no key held here opens."""
        wanted: set[Slot] = set()
        for entry in self._ops.locked.values():
            try:
                wanted.add((entry.header.epoch, sealed_ref(self._bodies[entry.id])))
            except (DecodeError, DecryptionError):
                continue
        return wanted

    def exit_record(self) -> tuple[OpRecord, int] | None:
        """The effective operation, last in resolution order, that put this device out, with
        the ``hlc`` its author signed (:meth:`GroupReplica.exit_record`)."""
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
        return None if found is None else (found, self.hlc_of(found.id))

    def missing_slots(self) -> set[Slot]:
        """Epochs announced here (or sealing stored ops) this device lacks, and epochs whose
        content key it is entitled to but holds only the control key of."""
        wanted = {slot for slot in self.state.epochs if slot not in self._ring.keys}
        me = self.state.device(self.me.device)
        wanted |= {
            slot
            for slot, key in self._ring.keys.items()
            if key.root is None and me is not None and entitled_to_content(self.state, me, key)
        }
        return wanted | self.locked_slots()

    def name_of(self, person: PersonId) -> str | None:
        """``person``'s name as a member now, else as the operation that founded the group
        with them or added them last named them (``None`` if none did)."""
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

    # ------------------------------------------------------------------ changing

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One store transaction; on any failure the view is put back as it was, so memory
        and disk never disagree."""
        held = self._opened.items()
        saved = (
            dict(self._ring.keys),
            # every opened op, copied: each batch (one live entry too) pays this, so not
            # through dataclasses.replace (about 3x the cost of the constructor)
            {i: _Opened(o.entry, o.record, o.bundles, list(o.grants)) for i, o in held},
            dict(self._bodies),
            list(self._offered),
            set(self._heads),
            dict(self._ops.locked),
        )
        try:
            with self.store.transaction():
                yield
        except BaseException:
            keys, opened, bodies, offered, heads, locked = saved
            self._ring.keys, self._opened, self._bodies = keys, opened, bodies
            self._offered, self._heads, self._ops.locked = offered, heads, locked
            # the fast path folds into the live state: rebuild it from the restored ops
            self._resolution = resolve(self.id, self.records())
            raise

    def copy(self, store: GroupStore) -> MembershipView:
        """A copy of this view over ``store`` (a trial: what it absorbs changes only it)."""
        trial = MembershipView(store, self.me, self.id)
        trial._ring.keys = dict(self._ring.keys)
        trial._ops.locked = dict(self._ops.locked)
        trial._opened = {i: replace(o, grants=list(o.grants)) for i, o in self._opened.items()}
        trial._bodies = dict(self._bodies)
        trial._offered = list(self._offered)
        trial._resolution = replace(self._resolution, state=self._resolution.state.copy())
        trial._heads = set(self._heads)
        return trial

    def offer(self, grants: Sequence[KeyGrant]) -> None:
        """Keys from a key response: locked ops may open with them, and they are kept once
        a valid operation announced them."""
        self._offered.extend(grants)
        self.open_all()
        self._resolve([])

    def accept_response(self, sender: DeviceId, response: Bundle) -> int:
        """Keep the keys in a key response that match announced epochs; how many were new
        (:meth:`GroupReplica.accept_key_response`). ``DecryptionError`` if it is forged or
        not addressed to this device."""
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
        # locked ops may open with these keys; then their announcements count too
        before = {slot: key.root is not None for slot, key in self._ring.keys.items()}
        self.offer(grants)
        return sum(
            1
            for slot, key in self._ring.keys.items()
            if before.get(slot) is None or (key.root is not None and not before[slot])
        )

    def add_keys(self, keys: Sequence[EpochKey]) -> None:
        """Keep epoch keys this device made for an operation it wrote (and save the ring)."""
        self._ring.add(keys)
        self._ring.save(self.store)

    def absorb(self, entries: Iterable[tuple[Entry, bytes]]) -> None:
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
        self.open_all(fresh)
        self._resolve([e.id for e in fresh])

    def absorb_own(
        self, entry: Entry, body: bytes, op: Op, bundles: list[Bundle], keys: Sequence[EpochKey]
    ) -> None:
        """This device's own membership entry, sealed just now from ``op`` with ``bundles``:
        resolved as :meth:`absorb` would, without decoding the body back or opening the wraps
        (what they hold for this device is at most ``keys``, the keys it made, already kept)."""
        h = entry.header
        record = OpRecord.build(entry.id, h.device, h.seq, h.deps, op)
        grants = [KeyGrant.of(key, True) for key in keys]
        self._opened[entry.id] = _Opened(entry, record, list(bundles), grants)
        self._bodies[entry.id] = body
        self._resolve([entry.id])

    def open_all(self, fresh: Sequence[Entry] = ()) -> None:
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

    def records(self) -> dict[EntryId, OpRecord]:
        """Every opened operation, but none of a forked device from its fork on."""
        forks = self._forks
        return {
            i: o.record
            for i, o in self._opened.items()
            if o.record is not None and o.record.seq < forks.get(o.record.device, o.record.seq + 1)
        }

    def refork(self, forks: dict[DeviceId, int]) -> None:
        """Resolve again without what forked devices wrote from their fork on (``forks``:
        device -> fork point): ops already folded from past a fork stop counting."""
        self._forks = forks
        self._resolution = resolve(self.id, self.records())
        ordered = set(self._resolution.order)
        records = self.records()
        referenced = {d for r in records.values() if r.id in ordered for d in r.deps}
        self._heads = ordered - referenced
        self.accept_keys()

    def _resolve(self, fresh: list[EntryId]) -> None:
        records = self.records()
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
        self.accept_keys()

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

    def accept_keys(self) -> None:
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
        return self._resolution.void_epochs(self.records())
