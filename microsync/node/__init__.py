"""The public async API: a :class:`Device` is one profile directory on one machine.

A profile directory holds ``profile.db`` (SQLite, WAL) and ``profile.lock``. Only one
:class:`Device` may have a profile open at a time, in any process: a second open raises
:class:`~microsync.errors.ProfileInUse`.

>>> import asyncio, tempfile, microsync
>>> async def main(path: str) -> str:
...     async with await microsync.Device.open(path, name="Alice") as alice:
...         return alice.name
>>> asyncio.run(main(tempfile.mkdtemp()))
'Alice'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from microsync.clock import Clock, system_clock
from microsync.crypto import Rng, fingerprint, system_rng
from microsync.errors import NotAMember, StorageError
from microsync.feed import GroupId
from microsync.group.invite import Invite, PairingGuest
from microsync.group.join import (
    DeviceCandidate,
    InviteBook,
    InviteHost,
    Welcome,
)
from microsync.group.replica import GroupReplica
from microsync.identity import (
    DeviceId,
    LocalIdentity,
    PersonId,
)
from microsync.net.limits import ServeLimits
from microsync.node import opening
from microsync.node.addresses import DEFAULT_PORT
from microsync.node.devices import DeviceRecord, device_id_of, device_records, link_new_device
from microsync.node.exits import GroupExit
from microsync.node.founding import found_group
from microsync.node.group import Group, InviteStatus, Member
from microsync.node.host import DeviceHost
from microsync.node.inbound import Inbound
from microsync.node.invites import DeviceInvites
from microsync.node.keeper_state import remember_welcome
from microsync.node.keys import revoke_device, rotate_prekey
from microsync.node.network import Network, PeerInfo, SyncResult
from microsync.node.on_demand import SyncAttempt, SyncSummary, Via, sync_now
from microsync.node.profile import (
    group_ids,
    local_member,
    remember_group,
)
from microsync.node.recovery import recover_groups
from microsync.node.runtime import Runtime, brief
from microsync.node.status import (
    DeviceStatus,
    GroupStatus,
    PeerStatus,
    RelayStatus,
    SyncLog,
    device_status,
)
from microsync.protocol.session import SessionStats, SyncOptions
from microsync.storage.sqlite import DATABASE_NAME, SqliteStore

__all__ = [
    "DEFAULT_PORT",
    "Device",
    "DeviceRecord",
    "DeviceStatus",
    "Group",
    "GroupExit",
    "GroupStatus",
    "InviteStatus",
    "Member",
    "PeerInfo",
    "PeerStatus",
    "RelayStatus",
    "SyncAttempt",
    "SyncResult",
    "SyncSummary",
    "Via",
]


log = logging.getLogger("microsync.node")


class Device:
    """One device's profile: its identity, its store and (later) its groups and sync.

    Use :meth:`open` (create or load) or :meth:`restore` (recover a person on a new device);
    leave the ``async with`` block, or call :meth:`close`, to release the profile.
    """

    def __init__(
        self,
        path: Path,
        store: SqliteStore,
        identity: LocalIdentity,
        *,
        clock: Clock = system_clock,
        rng: Rng = system_rng,
    ) -> None:
        self._path = path
        self._store = store
        self._identity = identity
        self._clock = clock
        self._rng = rng
        self._network = Network(self)
        self._member = local_member(store, identity, rng)
        self._groups: dict[GroupId, Group] = {}
        self._book = InviteBook(store)
        self._sync_log = SyncLog(store)
        self._inbound = Inbound(self)
        self._host = DeviceHost(
            self, on_received=self._network.received, on_ephemeral=self._network.ephemeral
        )
        self._invites = DeviceInvites(self)
        for group_id in group_ids(store):
            self._hold(GroupReplica.load(store, self._member, group_id))

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        clock: Clock | None = None,
        rng: Rng | None = None,
        quiet: bool | None = None,
    ) -> Device:
        """Load the profile at ``path``, or create one named ``name`` if there is none.

        ``clock`` (milliseconds since the Unix epoch, :mod:`microsync.clock`) and ``rng`` are
        what the device, its groups and its network read time and randomness from: this
        machine's by default; a test passes a :class:`microsync.testing.FakeClock`. ``quiet``
        sets quiet mode (:meth:`set_quiet`) and keeps it; ``None``: as the profile keeps it.

        Raises :class:`ProfileNotFound` when there is no profile and no ``name``, and
        :class:`~microsync.errors.ProfileInUse` when the profile is open elsewhere.
        """
        return opening.open_device(cls, path, name, clock, rng, quiet)

    @classmethod
    async def restore(
        cls,
        path: str | os.PathLike[str],
        words: list[str] | str,
        *,
        name: str,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> Device:
        """Recover a person from their 24 recovery words into a NEW profile at ``path``
        (``clock`` and ``rng`` as for :meth:`open`).

        The person is the same; the device key is new (a restored device is a new device).
        Refuses to touch a directory that already holds a profile.
        """
        return opening.restore(cls, path, words, name, clock, rng)

    @property
    def id(self) -> DeviceId:
        """This device's public key: unique per device, never restored."""
        return self._identity.device_id

    @property
    def person_id(self) -> PersonId:
        """The person's public key: shared by all of this person's devices."""
        return self._identity.person_id

    @property
    def name(self) -> str:
        return self._identity.name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def clock(self) -> Clock:
        """Where this device reads the time (ms since the Unix epoch): given to :meth:`open`."""
        return self._clock

    @property
    def rng(self) -> Rng:
        """Where this device draws randomness: given to :meth:`open`."""
        return self._rng

    def set_quiet(self, quiet: bool = True) -> None:
        """Quiet mode (battery), kept in the profile: no heartbeat, no redials, discovery, relay
        or keeper links (:mod:`microsync.node.standing`), a long keepalive; :meth:`sync_now`."""
        self._network.set_quiet(quiet)

    @property
    def quiet(self) -> bool:
        """Quiet mode is on (:meth:`set_quiet`)."""
        return self._network.quiet

    def export_recovery_words(self) -> list[str]:
        """The 24 words, only where the person was made (else ValueError: docs/devices.md)."""
        return self._identity.recovery_words()

    # ------------------------------------------------------------------ network
    # (microsync.node.network.Network does the work)

    @property
    def port(self) -> int | None:
        """The TCP port this device listens on, while started with a listener."""
        return self._network.port

    @property
    def relay(self) -> str | None:
        """The relay this device meets members through, while started with one."""
        return self._network.relay

    def listen_addresses(self) -> tuple[str, ...]:
        """``host:port`` where this device accepts connections now: its bind address, or for
        a listener on all interfaces this machine's IPv4 addresses (loopback last); empty
        while it has no listener. What an invite names by default."""
        return self._network.listen_addresses()

    async def start(
        self,
        lan: bool = True,
        port: int | None = 0,
        relay: str | None = None,
        *,
        bind: str | None = None,
        peers: tuple[str, ...] = (),
        interfaces: Sequence[str] | None = None,
        options: SyncOptions | None = None,
        limits: ServeLimits | None = None,
    ) -> None:
        """Go online: listen on ``port`` (0: any free port; ``None``: no listener), discover
        group members on the LAN (``lan``), keep live sync with every peer found or listed in
        ``peers`` (``"host:port"``), and announce presence. ``bind`` is the listening address
        (default: all interfaces with ``lan``, else 127.0.0.1); ``interfaces`` limits LAN
        discovery to those addresses. With ``lan`` and ``port=0`` the well-known port 7425 is
        used when free. ``limits`` caps what the listener admits (connections in total and
        per address, the handshake's time; default :class:`ServeLimits`). Stop with :meth:`stop`.
        A quiet device (:meth:`set_quiet`) only listens: ``peers``, ``relay`` and discovery wait
        until it is not quiet, and :meth:`sync_now` syncs on demand."""
        await self._network.start(
            lan=lan,
            port=port,
            relay=relay,
            bind=bind,
            peers=peers,
            interfaces=interfaces,
            options=options,
            limits=limits,
        )

    async def stop(self) -> None:
        """Go offline: close every connection, the listener and discovery. Idempotent. Raises
        the error of a background task that failed while online (a bug: it stopped them all)."""
        await self._network.stop()

    def connect(self, address: str) -> None:
        """Keep a live connection to ``address`` (``"host:port"``), reconnecting with backoff
        whenever it drops, until :meth:`stop` (while not quiet). Needs :meth:`start`."""
        self._network.connect(address)

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        return self._network.peers()

    async def sync_with(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 60.0,
        progress: Callable[[SessionStats], None] | None = None,
    ) -> SyncResult:
        """Connect to ``host:port``, sync every group both hold until both are up to date,
        and disconnect. ``progress(stats)`` is called about ten times a second meanwhile (entries
        and bytes so far). :class:`PeerUnreachable`, :class:`HandshakeError` or a
        :class:`~microsync.errors.ProtocolError` if that fails."""
        return await self._network.sync_with(host, port, timeout=timeout, progress=progress)

    async def sync_via_relay(
        self,
        relay: str,
        *,
        timeout: float = 60.0,
        settle: float = 1.0,
        progress: Callable[[SessionStats], None] | None = None,
    ) -> list[SyncResult]:
        """Meet the members of this device's groups at ``relay`` (``ws://HOST:PORT``), sync with
        every one met until all are up to date, and disconnect: once at least one is in sync
        and no connection has been syncing for ``settle`` seconds. Only members at the relay
        now are met (a running ``serve --relay``). ``progress(stats)`` as for :meth:`sync_with`,
        summed over the connections. :class:`PeerUnreachable` if the relay cannot be reached
        or no member is in sync within ``timeout``. A started device does this on a connection
        of its own, besides its live ones."""
        return await self._network.sync_via_relay(
            relay, timeout=timeout, settle=settle, progress=progress
        )

    async def sync_now(
        self, *, timeout: float = 30.0, peers: Sequence[str] = (), relay: str | None = None
    ) -> SyncSummary:
        """One round, then done: sync with every known peer address (and ``peers``), the
        members at every known relay (and ``relay``), and each group's keepers; returns within
        ``timeout`` what synced, entries in and out, what failed and why
        (:mod:`microsync.node.on_demand`). Started or not, quiet or not."""
        return await sync_now(self._network, timeout=timeout, peers=peers, relay=relay)

    async def join(self, link_or_code: str, *, at: str | None = None) -> Group:
        """Redeem an invite over the network and sync the group: a link carries the
        inviter's addresses; a short code needs ``at="host:port"``. Raises an
        :class:`~microsync.errors.InviteError` for a bad, used, expired or revoked invite, or
        :class:`PeerUnreachable`."""
        return await self._network.join(link_or_code, at=at)

    @property
    def _net(self) -> Runtime | None:
        """The running network side while started (for the vault's chunk requests)."""
        return self._network.runtime

    def _changed(self, group: GroupId) -> None:
        """This device wrote or received entries of ``group``: push them to live peers, and
        (once the writing code is done) report membership changes it made."""
        self._network.changed(group)

    def _announced(self, group: GroupId, sealed: bytes, source: DeviceId | None = None) -> None:
        self._network.announced(group, sealed, source)

    def _held(self, group_id: GroupId) -> Group | None:
        """The group with id ``group_id`` if this device holds it."""
        return self._groups.get(group_id)

    # ------------------------------------------------------------------ groups

    async def create_group(
        self, name: str, *, history: str = "shared", max_members: int | None = None
    ) -> Group:
        """Found a group named ``name``; this person is its first admin.

        ``history="shared"`` (the default) lets members added later read what was said before
        they joined; with ``"none"`` they cannot (each add starts a new epoch). The name is
        encrypted: it never crosses a wire in the clear. ``max_members`` (1 to 4000; default:
        no cap) caps its size on every replica; an invite to a full group raises ``GroupFull``.
        """
        clock = self._clock()
        replica = found_group(self._store, self._member, name, history, max_members, clock)
        return self._hold(replica)

    def groups(self) -> list[Group]:
        """The groups this device holds, members or not any more, by name."""
        return sorted(self._groups.values(), key=lambda g: (g.name, g.id))

    def group(self, group_id: bytes) -> Group:
        """The group with id ``group_id`` (``NotAMember`` if this device does not hold it)."""
        found = self._groups.get(GroupId(bytes(group_id)))
        if found is None:
            raise NotAMember("this device holds no such group")
        return found

    def status(self) -> DeviceStatus:
        """This device's network state now: online (started) or not, where it listens, its
        relay and whether it is connected to it, and per group the peers connected now or
        synced with before (name, address, in sync, last sync, entries held here that each
        lacks: ``pending_outgoing``). Known after a restart too: the last syncs are kept in
        the profile. See :mod:`microsync.node.status`."""
        return device_status(self)

    def _hold(self, replica: GroupReplica) -> Group:
        """Hold ``replica``'s group from now on."""
        group = Group(self, replica)
        self._groups[replica.id] = group
        return group

    def _adopt(self, group_id: GroupId) -> Group:
        """Hold a group this device did not know (entries of it arrived, or it joined it)."""
        with self._store.transaction():
            remember_group(self._store, group_id)
            replica = GroupReplica(self._store, self._member, group_id)
        return self._hold(replica)

    async def rotate_prekey(self) -> None:
        """Replace this device's signed prekey and rotate every group it is in.

        After a compromise of this device's secrets, this heals it (post-compromise security):
        the old prekey secret is forgotten, and the new epoch keys are wrapped to the new
        prekey, which the attacker does not hold.
        """
        rotate_prekey(self)

    async def revoke_device(self, device: bytes | str) -> None:
        """Revoke one of this person's other devices (a lost phone): every group it was in
        starts a new epoch without it, and its operations after the cut-off are void.
        ``device`` is its id, or a unique hex prefix of it as :meth:`devices` shows.

        Raises :class:`NotAMember` on a device without the person key, ``ValueError`` for
        this device itself, for an id no group knows as this person's, or an ambiguous
        prefix."""
        revoke_device(self, device_id_of(self, device))

    async def recover(self, *, at: str | None = None, relay: str | None = None) -> list[Group]:
        """Rejoin this person's groups through a member's device at ``at`` or at ``relay``."""
        return await recover_groups(self, at=at, relay=relay)

    def devices(self) -> list[DeviceRecord]:
        """This person's devices, as the groups here know them (this one first): name, id,
        whether it is this one, when this device last synced with it, revoked or not."""
        return device_records(self)

    # ------------------------------------------------------------------ pairing

    def _reachable(
        self, addresses: Sequence[str] | None, relay: str | None
    ) -> tuple[tuple[str, ...], str | None]:
        """Where an invite says to reach this device (:mod:`microsync.node.invites`)."""
        return self._invites.reachable(addresses, relay)

    def invite_host(self) -> InviteHost:
        """Answers incoming invite redemptions and device links for this device (the sync
        transport hands each incoming ``invite``-purpose connection to ``.session()``)."""
        return self._invites.host()

    async def link_device(
        self, *, ttl: float = 600, addresses: Sequence[str] | None = None, relay: str | None = None
    ) -> Invite:
        """A one-time pairing secret (``.link`` for a QR code, ``.code`` to read aloud) that lets
        a new device of this person join: it is certified by the person key and added to every
        group this person is in. Needs a device holding the person key."""
        return self._invites.link_device(ttl, addresses, relay)

    @classmethod
    async def complete_link(
        cls,
        path: str | os.PathLike[str],
        candidate: DeviceCandidate,
        response: bytes,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> Device:
        """Create the linked device's profile at ``path`` from a finished pairing: same person,
        this new device, and every group the person is in (they fill in as entries arrive)."""
        return opening.complete_link(cls, path, candidate, response, clock, rng)

    @classmethod
    async def link(
        cls,
        path: str | os.PathLike[str],
        link_or_code: str,
        *,
        name: str,
        at: str | None = None,
        relay: str | None = None,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> Device:
        """A new device of a person at ``path``, from a pairing of :meth:`link_device` on one
        of their devices (a short code needs ``at="host:port"``; ``relay`` is tried for a
        link whose addresses fail): open, in every group of the person, synced. An
        :class:`~microsync.errors.InviteError` says what was wrong (``docs/devices.md``)."""
        directory = Path(path)
        if (directory / DATABASE_NAME).exists():
            raise StorageError(f"{directory} already holds a profile; link into a new one")
        return await link_new_device(cls, directory, link_or_code, name, at, relay, clock, rng)

    def join_guest(self, link_or_code: str) -> PairingGuest:
        """The guest side of redeeming an invite (a link, or a short code) for this device.

        The sync transport runs it against the inviter's :meth:`invite_host`; pass the final
        response to :meth:`finish_join`.
        """
        return self._invites.guest(link_or_code)

    async def finish_join(self, response: bytes) -> Group:
        """Hold the group a finished invite pairing admitted this device to. Its members,
        name and keys arrive with the group's entries."""
        welcome = Welcome.from_bytes(response)
        if (existing := self._groups.get(welcome.group)) is not None:
            return existing
        with self._store.transaction():
            remember_welcome(self._store, welcome)
            return self._adopt(welcome.group)

    def frontier(self, group_id: bytes) -> dict[DeviceId, int]:
        """For each feed of the group this device holds: its head ``seq`` (what a peer
        compares to decide what to send)."""
        feeds = self._store.feeds(GroupId(bytes(group_id)))
        return {device: status.head_seq for device, status in feeds.items()}

    def entries_after(
        self, group_id: bytes, frontier: dict[DeviceId, int] | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """The entries (wire, body) of the group a peer with ``frontier`` lacks, feed by feed
        in order; everything when ``frontier`` is ``None``."""
        group = GroupId(bytes(group_id))
        seen = frontier or {}
        return [
            (stored.entry.wire, stored.body)
            for device in self._store.feeds(group)
            for stored in self._store.entries(group, device, after_seq=seen.get(device, 0))
        ]

    def certificates(self) -> list[bytes]:
        """Device certificates this device knows (a sync handshake exchanges them)."""
        known = self._inbound.known_certificates()
        return [self._identity.certificate.to_bytes()] + [c.to_bytes() for c in known]

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        """Keep the device certificates a peer sent of devices some group here admits (each is
        verified; bad ones, and ones of devices no group admits, are skipped)."""
        self._inbound.learn_certificates(certificates)

    def receive(
        self,
        group_id: bytes,
        items: Sequence[tuple[bytes, bytes | None]],
        *,
        peer: DeviceId | None = None,
    ) -> int:
        """Store entries of a group that arrived from a peer (the sync layer calls this with the
        peer's device id, which bounds what may wait for admission per peer).

        Returns how many were accepted; rejected entries change nothing. Each error is counted
        by type in :attr:`refused`.
        """
        return self._inbound.receive(GroupId(bytes(group_id)), items, peer)

    @property
    def refused(self) -> dict[str, int]:
        """Entries refused from peers since the profile was opened, by error type (for
        example ``HeldQuotaExceeded``: entries of devices no group operation admits)."""
        return self._inbound.refused

    async def close(self) -> None:
        """Go offline (:meth:`stop`), save a snapshot of each group whose app state was loaded
        (so the next start is quick), then release the profile. Idempotent."""
        try:
            await self.stop()
        finally:
            if not self._store._closed:
                for group in self._groups.values():
                    if group._app is not None:
                        self._snapshot(group)
            self._store.close()

    def _snapshot(self, group: Group) -> None:
        """Save ``group``'s app snapshot; it is only a cache, so a failure is logged, never
        raised (the next start folds from the feeds instead)."""
        try:
            group.snapshot()
        except StorageError as exc:
            log.info("no snapshot of %s: %s", group.name, brief(exc))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"Device(name={self.name!r}, person={fingerprint(self.person_id)}, "
            f"device={fingerprint(self.id)})"
        )
