"""The hostile-member kit: a member's device (or a bare identity) under an attacker's control.

Every check microsync makes on the way *in* assumes nothing about the device on the other end:
a member's own device can be modified to write whatever it likes into its own feed, signed
with its own device key and encrypted with keys it holds. This kit is that modified client,
for tests. It writes straight into the device's store, bypassing every rule of the authoring
path (current epoch, membership, strictly increasing timestamps, deps, positions), so a test
can check that every *receiving* device refuses what it must.

>>> from microsync.testing import SimNetwork
>>> from microsync.testing.hostile import Hostile
>>> net = SimNetwork(seed=3)
>>> mallory = net.add_device("mallory")
>>> group = net.create_group(mallory, "Den")
>>> evil = Hostile.of_sim(mallory, group)
>>> entry = evil.append_content(2, b"anything", hlc=2**62, deps=())
>>> entry.header.hlc == 2**62
True

What it can do:

- :meth:`Hostile.craft` any entry of this device's feed: any type, epoch number, ``hlc``,
  ``deps``, position (``seq``/``prev``: a second entry at a taken position is a fork) and body;
  :meth:`Hostile.append` stores it as the feed's new head (the store does not check it).
- :meth:`Hostile.seal_content` / :meth:`Hostile.append_content`: a body encrypted under any
  epoch key the device holds (:meth:`Hostile.keys`), not only the current one.
- :meth:`Hostile.append_op`: a membership operation of any kind with any fields (cut-offs,
  positions, epoch announcements), sealed under any control key held, with any key wraps.
- :meth:`Hostile.backdated_op`: a removal, demotion, promotion, rotation or leave made as an
  honest device would have made it in an older causal past (announcement and wraps computed
  there), appended now: what a removed admin writes to pretend it had not heard.
- :meth:`Hostile.read_content`: the plaintext of every content entry of a type it can open
  (to copy and re-announce another member's entry).
- :meth:`Hostile.forge_identity`: a made-up person and device (a certificate that verifies),
  and :meth:`Hostile.plant_certificate` to make this device hand it to peers at sync.

Use it with :class:`~microsync.testing.SimNetwork` devices (:meth:`Hostile.of_sim`) or with a
real :class:`microsync.Group` (:meth:`Hostile.of_group`): what it appends there is sent by the
device's ordinary sync, live push included. ``docs/security.md`` lists the attacks the library
is tested against with it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from microsync.errors import DecryptionError
from microsync.feed.entry import Entry, EntryId, GroupId, Header, body_hash, sign_entry
from microsync.feed.trust import add_certificate
from microsync.group.keys import EpochKey, Purpose, encrypt_content
from microsync.group.membership import resolve
from microsync.group.ops import MEMBERSHIP_TYPE, Op, OpKind, Role
from microsync.group.replica import GroupReplica, _encode_envelope
from microsync.identity import DeviceCertificate, LocalIdentity, PersonId

if TYPE_CHECKING:
    from microsync.encoding import Value
    from microsync.node import Group
    from microsync.testing.device import SimDevice

__all__ = ["Hostile"]


class Hostile:
    """A device of ``replica``'s group that writes whatever it likes into its own feed."""

    def __init__(self, replica: GroupReplica, *, signer: LocalIdentity | None = None) -> None:
        self.replica = replica
        self.identity = signer or replica.me.identity
        self.rng = random.Random(os.urandom(16))

    @classmethod
    def of_sim(cls, device: SimDevice, group: GroupId) -> Hostile:
        """The kit on a simulated device's replica of ``group``."""
        return cls(device.replica(group))

    @classmethod
    def of_group(cls, group: Group) -> Hostile:
        """The kit on a real device's group: appended entries go out with its next sync (and
        at once to connected peers)."""
        return cls(group._replica)

    def as_device(self, identity: LocalIdentity) -> Hostile:
        """The same group and store, signing as ``identity`` (a forged or another device the
        attacker holds the key of): its entries form that device's feed here."""
        return Hostile(self.replica, signer=identity)

    # ------------------------------------------------------------------ keys and identities

    def keys(self) -> list[EpochKey]:
        """Every epoch key the device holds, oldest first (control-only ones included)."""
        return sorted(self.replica.epoch_keys().values(), key=lambda k: (k.number, k.commitment))

    def newest_key(self) -> EpochKey:
        """The highest-numbered full key held."""
        full = [k for k in self.keys() if k.root is not None]
        if not full:
            raise LookupError("this device holds no full epoch key")
        return full[-1]

    def forge_identity(self, name: str, *, now: int = 1) -> LocalIdentity:
        """A made-up person with one device: its certificate verifies (it is self-made)."""
        return LocalIdentity.create(name, self._rng, now)

    def plant_certificate(self, certificate: DeviceCertificate) -> None:
        """Keep ``certificate`` in this device's store and treat its device as admitted here,
        so this (modified) device serves that device's feed and hands the certificate to peers
        at sync, as an honest device does only for devices its group admitted."""
        with self.replica.store.transaction():
            add_certificate(self.replica.store, certificate)
        self.replica.vouch(certificate)  # as the modified client it is

    def _rng(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # ------------------------------------------------------------------ entries

    def head(self) -> tuple[int, EntryId | None]:
        """(seq, id) of this signer's feed head in the store."""
        status = self.replica.store.feed_status(self.replica.id, self.identity.device_id)
        return status.head_seq, status.head_id

    def craft(
        self,
        *,
        type: int,
        body: bytes,
        epoch: int = 0,
        hlc: int = 1,
        deps: Sequence[EntryId] = (),
        seq: int | None = None,
        prev: EntryId | None = None,
        chain: bool = True,
    ) -> Entry:
        """Sign an entry of this signer's feed without storing it. ``seq`` defaults to the next
        position; with ``chain`` (the default) ``prev`` is the id stored just before ``seq``,
        else the ``prev`` given (to break the chain on purpose)."""
        head_seq, _ = self.head()
        seq = head_seq + 1 if seq is None else seq
        if chain:
            before = self.replica.store.entry_at(self.replica.id, self.identity.device_id, seq - 1)
            prev = None if before is None else before.entry.id
        header = Header(
            group=self.replica.id,
            device=self.identity.device_id,
            seq=seq,
            prev=prev,
            epoch=epoch,
            type=type,
            hlc=hlc,
            deps=tuple(deps),
            body_hash=body_hash(body),
            body_len=len(body),
        )
        return sign_entry(self.identity.device_key, header)

    def append(self, entry: Entry, body: bytes) -> Entry:
        """Store ``entry`` as its feed's new head, unchecked, and tell live sync about it."""
        with self.replica.store.transaction():
            self.replica.store.insert_entry(entry, body)
        if self.replica.on_append is not None:
            self.replica.on_append(self.replica.id)
        return entry

    def seal_content(
        self, type: int, plaintext: bytes, *, key: EpochKey | None = None, seq: int | None = None
    ) -> tuple[int, bytes]:
        """(epoch number, body): ``plaintext`` encrypted as content under ``key`` (default:
        the newest full key held) for position ``seq`` (default: the next)."""
        key = key or self.newest_key()
        content = key.content
        if content is None:
            raise LookupError("a control-only key cannot seal content")
        seq = self.head()[0] + 1 if seq is None else seq
        body = encrypt_content(
            self._rng,
            content,
            key.ref,
            plaintext,
            group=self.replica.id,
            epoch=key.number,
            device=self.identity.device_id,
            seq=seq,
            type=type,
        )
        return key.number, body

    def append_content(
        self,
        type: int,
        plaintext: bytes,
        *,
        key: EpochKey | None = None,
        hlc: int = 1,
        deps: Sequence[EntryId] = (),
    ) -> Entry:
        """Encrypt and append a content entry of any type, under any full key held."""
        epoch, body = self.seal_content(type, plaintext, key=key)
        entry = self.craft(type=type, body=body, epoch=epoch, hlc=hlc, deps=deps)
        return self.append(entry, body)

    def seal_op(
        self,
        op: Op,
        *,
        key: EpochKey | None = None,
        bundles: Sequence[tuple[Purpose, int, Value]] = (),
        seq: int | None = None,
    ) -> tuple[int, bytes]:
        """(epoch number, body): a membership envelope carrying ``op`` sealed under ``key``'s
        control key (default: the newest key held) and the given key wraps."""
        key = key or self.keys()[-1]
        seq = self.head()[0] + 1 if seq is None else seq
        sealed = encrypt_content(
            self._rng,
            key.control,
            key.ref,
            op.to_bytes(),
            group=self.replica.id,
            epoch=key.number,
            device=self.identity.device_id,
            seq=seq,
            type=MEMBERSHIP_TYPE,
        )
        return key.number, _encode_envelope(list(bundles), sealed)

    def append_op(
        self,
        op: Op,
        *,
        key: EpochKey | None = None,
        bundles: Sequence[tuple[Purpose, int, Value]] = (),
        hlc: int = 1,
        deps: Sequence[EntryId] = (),
    ) -> Entry:
        """Append a membership operation with any fields and any deps (for example, only the
        operations from before this device was removed)."""
        epoch, body = self.seal_op(op, key=key, bundles=bundles)
        entry = self.craft(type=MEMBERSHIP_TYPE, body=body, epoch=epoch, hlc=hlc, deps=deps)
        return self.append(entry, body)

    def backdated_op(
        self,
        kind: OpKind,
        *,
        deps: Sequence[EntryId],
        person: PersonId | None = None,
        role: Role | None = None,
        hlc: int = 1,
    ) -> Entry:
        """Append, now, a membership operation made exactly as an honest device would have
        made it had it seen only ``deps`` and their causal past: a valid removal, demotion,
        promotion, rotation or leave as of before this device lost its rights (its epoch
        announcement and key wraps are computed in that past), with those ``deps``."""
        replica = self.replica
        past = _closure(replica, deps)
        records = {i: r for i in past if (r := replica.operation(i)) is not None}
        saved = replica._resolution
        replica._resolution = resolve(replica.id, records)
        try:
            op, bundles, key = self._author_in_past(kind, person, role)
        finally:
            replica._resolution = saved
        return self.append_op(op, key=key, bundles=bundles, hlc=hlc, deps=deps)

    def _author_in_past(
        self, kind: OpKind, person: PersonId | None, role: Role | None
    ) -> tuple[Op, list[tuple[Purpose, int, Value]], EpochKey]:
        replica = self.replica
        state = replica.state
        target = state.members.get(person) if person is not None else None
        own = state.person_of(replica.me.device)
        mine = state.members[own].devices if own is not None else {}
        devices = target.devices if target is not None else mine
        if kind is OpKind.LEAVE:
            devices = {d: i for d, i in mine.items() if d != replica.me.device}
        positions = tuple((d, state.seen.get(d, 0)) for d in sorted(devices))
        if kind is OpKind.REMOVE:
            op = Op(kind=kind, person=person, positions=positions)
        elif kind is OpKind.SET_ROLE:
            op = Op(kind=kind, person=person, role=role, positions=positions)
        elif kind is OpKind.LEAVE:
            op = Op(kind=kind, positions=positions)
        else:
            op = Op(kind=kind)
        author = replica._authoring()
        seal = author.seal_key()
        bundles: list[tuple[Purpose, int, Value]] = []
        if kind in (OpKind.REMOVE, OpKind.ROTATE):
            after = author.preview(op) if kind is OpKind.REMOVE else state
            _, announcement, rotation = author.new_epoch(after)
            op = replace(op, epoch=announcement)
            bundles.append(rotation)
        return op, bundles, seal

    def read_content(self, type: int) -> list[tuple[Entry, bytes]]:
        """Every content entry of ``type`` this device holds that it can open, with its
        plaintext (what a member reads to copy, tweak and re-announce someone's entry)."""
        store, found = self.replica.store, []
        for device in store.feeds(self.replica.id):
            for stored in store.entries(self.replica.id, device, 0):
                if stored.entry.header.type == type and stored.body is not None:
                    with contextlib.suppress(DecryptionError):
                        found.append((stored.entry, self.replica.decrypt(stored)))
        return found

    def membership_ops(self) -> list[EntryId]:
        """The ids of the membership operations this device holds, in resolution order (to
        pick backdated deps from)."""
        return list(self.replica.resolution.order)


def _closure(replica: GroupReplica, heads: Sequence[EntryId]) -> set[EntryId]:
    """``heads`` and every membership operation in their causal past."""
    out: set[EntryId] = set()
    todo = list(heads)
    while todo:
        op_id = todo.pop()
        record = replica.operation(op_id)
        if op_id in out or record is None:
            continue
        out.add(op_id)
        todo.extend(record.deps)
    return out
