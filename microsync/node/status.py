"""What :meth:`~microsync.node.Device.status` reports, and the record of past syncs behind it.

Theory of operation
-------------------
Whenever a sync session with a peer reaches "in sync", and again when a connection that had
reached it ends, the runtime notes per group the peer's frontier as the session knows it (the
frontier the peer sent, plus every entry sent and received since) and the time, in a
:class:`SyncLog`. The log lives in the profile's meta table, so a later ``microsync status``
on a device that is not serving still knows when it last synced and with whom.

"Pending outgoing" for a peer is the number of entries this device holds beyond that frontier:
entries the peer lacked when last seen (or now, on a live connection). It is an upper bound on
what a sync would send (a peer may have got them from someone else meanwhile).

Invariants: at most :data:`MAX_PEERS_PER_GROUP` records per group (the oldest go first); a
damaged record is dropped, never raised: the log is a cache for display, not state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.errors import DecodeError, StorageError
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.node.keeper_link import KeeperStatus
from microsync.storage.sqlite import SqliteStore

if TYPE_CHECKING:
    from microsync.net.connection import SyncConnection
    from microsync.node import Device, Group

__all__ = [
    "MAX_PEERS_PER_GROUP",
    "DeviceStatus",
    "GroupStatus",
    "PeerStatus",
    "RelayStatus",
    "SyncLog",
    "SyncRecord",
    "device_status",
    "pending",
]

MAX_PEERS_PER_GROUP: Final = 64
_META_KEY: Final = "sync/last"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerStatus:
    """One peer of a group: connected now, or synced with before.

    ``name`` is the person's name in the group (``None`` if this device does not know the
    device's person as a member); ``address`` is where it is connected now (``None`` if not);
    ``last_sync`` is the unix time in ms when this device was last in sync with it (now, for a
    live connection in sync); ``pending_outgoing`` counts entries held here that the peer
    lacked then (``None`` if its frontier was never learnt)."""

    device_id: DeviceId
    name: str | None
    address: str | None
    connected: bool
    in_sync: bool
    last_sync: int | None
    pending_outgoing: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupStatus:
    """One group: its peers (connected ones first), when it last synced with any of them, and
    how many entries held here at least one of them lacks (``None`` if none is known)."""

    group_id: GroupId
    name: str
    member: bool
    epoch: int
    peers: tuple[PeerStatus, ...]
    last_sync: int | None
    pending_outgoing: int | None
    keepers: tuple[KeeperStatus, ...] = ()
    """Each keeper of the group: reachable now or why not (``"offline"`` while not started),
    and how many entries it still lacks (:meth:`Group.keeper_status`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStatus:
    """The relay a started device uses, and whether its WebSocket to it is up now."""

    url: str
    connected: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus:
    """A device's network state: online (started) or not, the ``host:port`` addresses it
    accepts connections on, its relay, and every group it holds."""

    online: bool
    listen_addresses: tuple[str, ...]
    relay: RelayStatus | None
    groups: tuple[GroupStatus, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRecord:
    """The last time a group was in sync with one peer, and the peer's frontier then."""

    at: int
    frontier: Mapping[DeviceId, int]


def pending(ours: Mapping[DeviceId, int], theirs: Mapping[DeviceId, int]) -> int:
    """Entries in ``ours`` (device -> head seq) beyond ``theirs``."""
    return sum(max(0, seq - theirs.get(device, 0)) for device, seq in ours.items())


class SyncLog:
    """Per group and peer, the latest :class:`SyncRecord`, kept in the store's meta table."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._records: dict[GroupId, dict[DeviceId, SyncRecord]] = _load(store)

    def records(self, group: GroupId) -> Mapping[DeviceId, SyncRecord]:
        """The peers ``group`` synced with, each with its latest record."""
        return dict(self._records.get(group, {}))

    def note(
        self, group: GroupId, peer: DeviceId, at: int, frontier: Mapping[DeviceId, int]
    ) -> None:
        """Record that ``group`` was in sync with ``peer`` at ``at``, the peer holding
        ``frontier``; saved at once (a closed store keeps it in memory only)."""
        found = self._records.setdefault(group, {})
        found[peer] = SyncRecord(at=at, frontier=dict(frontier))
        while len(found) > MAX_PEERS_PER_GROUP:
            del found[min(found, key=lambda d: found[d].at)]
        with contextlib.suppress(StorageError):  # a closed store: memory only
            self._store.put_meta(_META_KEY, _encode(self._records))


def device_status(device: Device) -> DeviceStatus:
    """``device``'s :class:`DeviceStatus` now (:meth:`~microsync.node.Device.status`)."""
    net = device._net
    live = [] if net is None else net.live()
    relay = (
        None
        if net is None or net.relay is None
        else RelayStatus(url=net.relay, connected=net.relay_connected)
    )
    return DeviceStatus(
        online=net is not None,
        listen_addresses=device.listen_addresses(),
        relay=relay,
        groups=tuple(_group_status(device, g, live) for g in device.groups()),
    )


def _group_status(owner: Device, group: Group, live: Sequence[SyncConnection]) -> GroupStatus:
    """One group's :class:`GroupStatus`: its live peers, then those synced with before."""
    now = owner.clock()
    ours = {d: s.head_seq for d, s in owner._store.feeds(group.id).items()}
    records = owner._sync_log.records(group.id)
    peers: dict[DeviceId, PeerStatus] = {}
    for c in live:
        if group.id in c.session.groups and c.peer.device not in peers:
            peers[c.peer.device] = _live_peer(group, c, ours, records, now)
    for device, record in sorted(records.items(), key=lambda i: -i[1].at):
        if device not in peers:
            peers[device] = _past_peer(group, device, record, ours)
    known = [r.frontier for d, r in records.items() if d not in peers or not peers[d].connected]
    known += [f for c in live if (f := c.session.peer_frontier(group.id)) is not None]
    floor = {d: min(f.get(d, 0) for f in known) for d in ours} if known else None
    synced = [p.last_sync for p in peers.values() if p.last_sync is not None]
    return GroupStatus(
        group_id=group.id,
        name=group.name,
        member=group.is_member(),
        epoch=group.epoch,
        peers=tuple(peers.values()),
        last_sync=max(synced, default=None),
        pending_outgoing=None if floor is None else pending(ours, floor),
        keepers=tuple(group.keeper_status()),
    )


def _live_peer(
    group: Group,
    connection: SyncConnection,
    ours: dict[DeviceId, int],
    records: Mapping[DeviceId, SyncRecord],
    now: int,
) -> PeerStatus:
    device = connection.peer.device
    frontier = connection.session.peer_frontier(group.id)
    in_sync = connection.session.synced
    before = records.get(device)
    return PeerStatus(
        device_id=device,
        name=group._person_name(connection.peer.person),
        address=connection.peer_address,
        connected=True,
        in_sync=in_sync,
        last_sync=now if in_sync else (None if before is None else before.at),
        pending_outgoing=None if frontier is None else pending(ours, frontier),
    )


def _past_peer(
    group: Group, device: DeviceId, record: SyncRecord, ours: dict[DeviceId, int]
) -> PeerStatus:
    return PeerStatus(
        device_id=device,
        name=group._device_owner(device),
        address=None,
        connected=False,
        in_sync=False,
        last_sync=record.at,
        pending_outgoing=pending(ours, record.frontier),
    )


def _encode(records: Mapping[GroupId, Mapping[DeviceId, SyncRecord]]) -> bytes:
    rows: list[encoding.Value] = [
        [group, peer, r.at, [[d, s] for d, s in sorted(r.frontier.items())]]
        for group, peers in sorted(records.items())
        for peer, r in sorted(peers.items())
    ]
    return encoding.encode(rows)


def _load(store: SqliteStore) -> dict[GroupId, dict[DeviceId, SyncRecord]]:
    found: dict[GroupId, dict[DeviceId, SyncRecord]] = {}
    data = store.get_meta(_META_KEY)
    if data is None:
        return found
    with contextlib.suppress(DecodeError, ValueError, TypeError):
        for row in encoding.expect_list(encoding.decode(data, max_size=2**22), "sync log"):
            group, peer, at, frontier = encoding.expect_list(row, "sync record", 4)
            heads = {
                DeviceId(encoding.expect_bytes(d, "device", 32)): _count(s)
                for d, s in (
                    encoding.expect_list(h, "head", 2)
                    for h in encoding.expect_list(frontier, "frontier")
                )
            }
            record = SyncRecord(at=_count(at), frontier=heads)
            gid = GroupId(encoding.expect_bytes(group, "group", 32))
            found.setdefault(gid, {})[DeviceId(encoding.expect_bytes(peer, "peer", 32))] = record
    return found


def _count(value: encoding.Value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("not a count")
    return value
