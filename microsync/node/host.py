"""The :class:`~microsync.protocol.session.SyncHost` of a :class:`~microsync.node.Device`: the
thin layer between a sync session and the device's store and group replicas.

It is also a :class:`~microsync.protocol.forks.ForkHost`: a forked feed is served and claimed
only up to the entry before its fork (what every device that knows the fork agrees on), and
every fork learnt from a peer is handed to the group (its ``device_forked`` event) and to the
runtime (which passes the evidence on to the other connections)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.blobs import ChunkId
from microsync.encoding import expect_int, expect_list
from microsync.errors import (
    AuthorNotCertified,
    DecodeError,
    DecryptionError,
    NotAMember,
    VerificationError,
)
from microsync.feed import EntryId, GroupId, StoredEntry
from microsync.feed.ingest import Conflicted, accept_conflict, accept_fork_evidence
from microsync.group.keys import Purpose
from microsync.group.ops import MEMBERSHIP_TYPE, OpKind
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId
from microsync.protocol.messages import Item
from microsync.protocol.session import GroupProof

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["DeviceHost"]

PROOF_EPOCHS: Final = 3
FRESH_ADDS: Final = 4
MAX_KEY_RESPONSE: Final = 512 * 1024


class DeviceHost:
    """What a sync session may see and do on one device.

    ``on_received(group, accepted)`` and ``on_ephemeral(group, peer, data)`` let the device's
    runtime push what arrived to its other connections (live sync, gossip).
    """

    def __init__(
        self,
        device: Device,
        *,
        on_received: Callable[[GroupId, int], None] | None = None,
        on_ephemeral: Callable[[GroupId, DeviceId, bytes], None] | None = None,
    ) -> None:
        self.device = device
        self._on_received = on_received
        self._on_ephemeral = on_ephemeral
        self._peer: DeviceId | None = None  # who sent the batch being received

    def welcomes(self) -> Mapping[GroupId, bytes]:
        """For groups joined by invite: the id of the admitting add (see
        :meth:`sync_groups`)."""
        return self.device._inbound.welcomes()

    def _replica(self, group: GroupId) -> GroupReplica:
        return self.device.group(group)._replica

    def sync_groups(self) -> list[GroupProof]:
        """Per group: the control keys of the latest epochs held, then the ids of the latest
        adds whose devices have not written yet (a joiner with no key yet proves itself with
        the id of the add that admitted it, from its Welcome); every older control key is
        held back, to recognise a peer that is further behind."""
        proofs = []
        welcomes = self.welcomes()
        for group in self.device.groups():
            replica = group._replica
            held = [k.control.secret_bytes() for _, k in sorted(replica.epoch_keys().items())]
            keys = held[::-1][:PROOF_EPOCHS]
            if keys:
                keys += self._fresh_adds(replica)
            elif group.id in welcomes:
                keys = [welcomes[group.id]]
            older = tuple(held[::-1][PROOF_EPOCHS:])
            if keys:
                proofs.append(GroupProof(group=group.id, keys=tuple(keys), older=older))
        return proofs

    def _fresh_adds(self, replica: GroupReplica) -> list[bytes]:
        written = set(self.device._store.feeds(replica.id))
        records = replica._records()
        found: list[bytes] = []
        for op_id in reversed(replica.resolution.order):
            record = records.get(op_id)
            if record is None or op_id not in replica.resolution.effective:
                continue
            if record.op.kind in (OpKind.ADD, OpKind.ADD_DEVICE) and any(
                grant.device not in written for grant in record.grants
            ):
                found.append(op_id)
            if len(found) == FRESH_ADDS:
                break
        return found

    def frontier(self, group: GroupId) -> dict[DeviceId, tuple[int, EntryId]]:
        """Per feed its head; for a forked feed, the entry just before the fork."""
        store = self.device._store
        heads = {}
        for device, status in store.feeds(group).items():
            seq, head = status.head_seq, status.head_id
            if status.forked_at is not None and seq >= status.forked_at:
                before = store.entry_at(group, device, status.forked_at - 1)
                seq, head = (
                    (0, None) if before is None else (before.entry.header.seq, before.entry.id)
                )
            if seq > 0 and head is not None:
                heads[device] = (seq, head)
        return heads

    def entries_after(
        self, group: GroupId, frontier: Mapping[DeviceId, int], *, newest_first: bool, limit: int
    ) -> list[Item]:
        store = self.device._store
        found: list[StoredEntry] = []
        feeds = store.feeds(group)
        replica = self._replica(group)
        for device in sorted(feeds):
            room = None if newest_first else limit - len(found)
            if room == 0:
                break
            if feeds[device].head_seq <= frontier.get(device, 0):
                continue  # the peer holds all of it (a live push: most feeds): no query
            if not replica.admits(device, 1):
                continue  # stored before admission was checked: never forwarded
            forked_at = feeds[device].forked_at
            for stored in store.entries(group, device, frontier.get(device, 0), room):
                if forked_at is not None and stored.entry.header.seq >= forked_at:
                    break  # nobody who knows the fork accepts these
                found.append(stored)
        if newest_first:
            # what a new device needs to read anything comes first: in each feed, everything up
            # to its last membership operation (in order, so it chains); then the rest, newest
            # first (it waits in the peer's pending buffer and shows provisionally)
            first: list[StoredEntry] = []
            last_op: dict[DeviceId, int] = {}
            for s in found:
                if s.entry.header.type == MEMBERSHIP_TYPE:
                    last_op[s.entry.header.device] = s.entry.header.seq
            rest: list[StoredEntry] = []
            for s in found:
                h = s.entry.header
                (first if h.seq <= last_op.get(h.device, 0) else rest).append(s)
            rest.sort(key=lambda s: (s.entry.header.hlc, s.entry.id), reverse=True)
            found = first + rest
        return [(s.entry.wire, s.body) for s in found[:limit]]

    def receive_from(self, group: GroupId, peer: DeviceId, items: Sequence[Item]) -> int:
        """Entries from ``peer`` (what waits for its devices' admission is bounded per peer):
        :meth:`receive`, told who sent them."""
        self._peer = peer
        try:
            return self.receive(group, items)
        finally:
            self._peer = None

    def receive(self, group: GroupId, items: Sequence[Item]) -> int:
        with self.device._store.replaceable():  # the peer holds them: no fsync on the live path
            accepted = self.device._inbound.receive(group, items, self._peer)
        if self.device._inbound.forked and self._on_received is not None:
            self._on_received(group, 0)  # a fork found in the batch: pass the evidence on
        if accepted and self._on_received is not None:
            self._on_received(group, accepted)
        return accepted

    def may_serve(self, group: GroupId, peer: DeviceId) -> bool:
        return self._replica(group).state.device(peer) is not None

    def exit_limit(
        self, group: GroupId, peer: DeviceId
    ) -> dict[DeviceId, tuple[int, EntryId]] | None:
        """How far a former member's device may be served: the operations that put it out
        and their causal past (:class:`~microsync.protocol.session.ExitHost`)."""
        replica = self._replica(group)
        if replica.state.device(peer) is not None:
            return None
        exits = replica.exits_of(peer)
        if not exits:
            return None
        records = replica._records()
        limit: dict[DeviceId, tuple[int, EntryId]] = {}
        for op_id in exits:
            for past in {op_id, *replica.causal_past(op_id)}:
                record = records.get(past)
                if record is not None and record.seq > limit.get(record.device, (0, b""))[0]:
                    limit[record.device] = (record.seq, record.id)
        return limit or None

    def certificates(self, group: GroupId) -> list[bytes]:
        """This device's certificate and those of the group's admitted devices with a feed
        here or in the membership (never a certificate that only a peer vouched for)."""
        store = self.device._store
        replica = self._replica(group)
        devices = {d for d in store.feeds(group) if replica.admits(d, 1)} | {self.device.id}
        for member in replica.state.members.values():
            devices.update(member.devices)
        found = (store.certificate(d) for d in sorted(devices))
        return [c.to_bytes() for c in found if c is not None]

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        self.device._inbound.learn_certificates(certificates)

    def missing_keys(self, group: GroupId) -> list[tuple[int, bytes]]:
        return self._replica(group).missing_keys()

    def answer_key_request(
        self, group: GroupId, peer: DeviceId, wanted: Sequence[tuple[int, bytes]]
    ) -> bytes | None:
        try:
            purpose, epoch, bundle = self._replica(group).answer_key_request(peer, wanted)
        except NotAMember:
            return None
        return encoding.encode([int(purpose), epoch, bundle])

    def accept_key_response(self, group: GroupId, peer: DeviceId, response: bytes) -> int:
        purpose, epoch, bundle = expect_list(
            encoding.decode(response, max_size=MAX_KEY_RESPONSE), "key response", 3
        )
        try:
            kind = Purpose(expect_int(purpose, "purpose"))
        except ValueError:
            raise DecodeError("unknown purpose") from None
        replica = self._replica(group)
        gained = replica.accept_key_response(peer, (kind, expect_int(epoch, "epoch"), bundle))
        if gained:
            # entries that waited for these keys can be opened now
            self.device.group(group)._app_received([])
        return gained

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        try:
            fresh = self.device.group(group).receive_announcement(data)
        except (DecodeError, DecryptionError, VerificationError, NotAMember):
            return  # a bad announcement is dropped; the session goes on
        if fresh and self._on_ephemeral is not None:
            self._on_ephemeral(group, peer, data)

    # ------------------------------------------------------------------ forks
    # (microsync.protocol.forks.ForkHost)

    def forks(self, group: GroupId) -> dict[DeviceId, int]:
        feeds = self.device._store.feeds(group)
        return {d: s.forked_at for d, s in feeds.items() if s.forked_at is not None}

    def fork_evidence(self, group: GroupId) -> list[tuple[DeviceId, int, bytes, bytes]]:
        found = []
        for device, seq in sorted(self.forks(group).items()):
            pairs = [e for e in self.device._store.fork_evidence(group, device) if e.seq == seq]
            if pairs:
                found.append((device, seq, pairs[0].first, pairs[0].second))
        return found

    def entry_wires(self, group: GroupId, device: DeviceId, seq: int, limit: int) -> list[bytes]:
        store = self.device._store
        wires = []
        for at in range(seq, max(0, seq - limit), -1):
            stored = store.entry_at(group, device, at)
            if stored is None:
                break
            wires.append(stored.entry.wire)
        return wires

    def accept_fork_evidence(
        self, group: GroupId, peer: DeviceId, first: bytes, second: bytes
    ) -> bool:
        try:
            lowered = accept_fork_evidence(self.device._store, group, first, second)
        except AuthorNotCertified:
            return False  # a device this one never heard of: nothing to mark
        if lowered:
            self._fork_learnt(group)
        return lowered

    def accept_conflict(
        self, group: GroupId, peer: DeviceId, entries: Sequence[bytes]
    ) -> Conflicted | None:
        found = accept_conflict(self.device._store, group, entries)
        if found is not None:
            self._fork_learnt(group)
        return found

    def _fork_learnt(self, group: GroupId) -> None:
        """Tell the group (event, view) and the runtime (gossip to the other connections)."""
        self.device.group(group)._check_forks()
        if self._on_received is not None:
            self._on_received(group, 0)

    # ------------------------------------------------------------------ vault chunks
    # (microsync.protocol.session.ChunkHost; the vault checks every chunk it asked for)

    def chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bytes | None:
        if len(chunk) != 32:
            return None
        return self.device.group(group).vault.serve(peer, ChunkId(chunk))

    def relay_chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bool:
        return len(chunk) == 32 and self.device.group(group).vault.relay(peer, ChunkId(chunk))

    def chunk_received(self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes) -> None:
        self.device.group(group).vault.chunk_received(peer, ChunkId(chunk), data)

    def chunks_missing(self, group: GroupId, peer: DeviceId, chunks: Sequence[bytes]) -> None:
        self.device.group(group).vault.chunks_missing(peer, [ChunkId(c) for c in chunks])
