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

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from microsync import encoding
from microsync.app.api import DeviceForked, Event, Post
from microsync.app.presence import PresenceMixin
from microsync.blobs import BlobRef
from microsync.crypto import X25519SecretKey, fingerprint, system_rng
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import (
    InviteError,
    MicrosyncError,
    NotAMember,
    ProfileNotFound,
    StorageError,
)
from microsync.feed import GroupId, Ingested
from microsync.feed.ingest import Outcome
from microsync.feed.trust import add_certificate
from microsync.group.invite import Invite, InviteId, InvitePurpose, InviteState, PairingGuest
from microsync.group.join import (
    DeviceCandidate,
    InviteBook,
    InviteHost,
    JoinRequest,
    LinkRequest,
    LinkResponse,
    Welcome,
    issue_invite,
)
from microsync.group.ops import HISTORY_SETTINGS, DeviceGrant, Role
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
)
from microsync.node.exits import GroupExit, exit_of
from microsync.node.peers import KnownPeer, known_peers
from microsync.node.runtime import DEFAULT_PORT, NetworkMixin, PeerInfo, SyncResult
from microsync.node.status import (
    DeviceStatus,
    GroupStatus,
    PeerStatus,
    RelayStatus,
    SyncLog,
    SyncRecord,
    pending,
)
from microsync.node.vault import Vault
from microsync.storage.sqlite import DATABASE_NAME, SqliteStore

if TYPE_CHECKING:
    from microsync.net.connection import SyncConnection

__all__ = [
    "DEFAULT_PORT",
    "Device",
    "DeviceStatus",
    "Group",
    "GroupExit",
    "GroupStatus",
    "InviteStatus",
    "Member",
    "PeerInfo",
    "PeerStatus",
    "RelayStatus",
    "SyncResult",
]


_IDENTITY_KEY = "identity"
_GROUPS_KEY = "groups"
_PREKEYS_KEY = "prekeys"
_WELCOME_PREFIX = "welcome/"
MAX_UNADMITTED_CERTIFICATES = 1024  # certificates of devices no group admits, in memory


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Device(NetworkMixin):
    """One device's profile: its identity, its store and (later) its groups and sync.

    Use :meth:`open` (create or load) or :meth:`restore` (recover a person on a new device);
    leave the ``async with`` block, or call :meth:`close`, to release the profile.
    """

    def __init__(self, path: Path, store: SqliteStore, identity: LocalIdentity) -> None:
        self._path = path
        self._store = store
        self._identity = identity
        self._member = LocalMember(identity, _load_prekeys(store, identity), system_rng)
        self._groups: dict[GroupId, Group] = {}
        self._book = InviteBook(store)
        self._unadmitted: dict[DeviceId, DeviceCertificate] = {}  # from peers, not kept
        self._sync_log = SyncLog(store)
        self.refused: dict[str, int] = {}
        """Entries refused from peers since the profile was opened, by error type (for
        example ``HeldQuotaExceeded``: entries of devices no group operation admits)."""
        for group_id in _load_group_ids(store):
            replica = GroupReplica.load(store, self._member, group_id)
            self._groups[group_id] = Group(self, replica)

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, name: str | None = None) -> Device:
        """Load the profile at ``path``, or create one named ``name`` if there is none.

        Raises :class:`ProfileNotFound` when there is no profile and no ``name``, and
        :class:`~microsync.errors.ProfileInUse` when the profile is open elsewhere.
        """
        directory = Path(path)
        if name is None:
            if not (directory / DATABASE_NAME).exists():
                raise ProfileNotFound(f"no microsync profile at {directory}")
            return cls._load_or_create(directory, None)
        new_name = name
        return cls._load_or_create(
            directory, lambda: LocalIdentity.create(new_name, system_rng, _now_ms())
        )

    @classmethod
    async def restore(
        cls, path: str | os.PathLike[str], words: list[str] | str, *, name: str
    ) -> Device:
        """Recover a person from their 24 recovery words into a NEW profile at ``path``.

        The person is the same; the device key is new (a restored device is a new device).
        Refuses to touch a directory that already holds a profile.
        """
        directory = Path(path)
        if (directory / DATABASE_NAME).exists():
            raise StorageError(f"{directory} already holds a profile; restore into a new one")
        identity = LocalIdentity.restore(words, name, system_rng, _now_ms())
        return cls._load_or_create(directory, lambda: identity)

    @classmethod
    def _load_or_create(cls, directory: Path, make: Callable[[], LocalIdentity] | None) -> Device:
        store = SqliteStore.open(directory)
        try:
            bundle = store.get_meta(_IDENTITY_KEY)
            if bundle is None:
                if make is None:
                    raise ProfileNotFound(f"no microsync profile at {directory}")
                identity = make()
                with store.transaction():
                    store.put_meta(_IDENTITY_KEY, identity.to_bytes())
                    add_certificate(store, identity.certificate)
            else:
                identity = LocalIdentity.from_bytes(bundle)
        except BaseException:
            store.close()
            raise
        return cls(directory, store, identity)

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

    def export_recovery_words(self) -> list[str]:
        """The person key as 24 BIP39 words. Whoever holds them can act as this person."""
        return self._identity.recovery_words()

    # ------------------------------------------------------------------ groups

    async def create_group(self, name: str, *, history: str = "shared") -> Group:
        """Found a group named ``name``; this person is its first admin.

        ``history="shared"`` (the default) lets members added later read what was said before
        they joined; with ``"none"`` they cannot (each add starts a new epoch). The name is
        encrypted: it never crosses a wire in the clear.
        """
        if history not in HISTORY_SETTINGS:
            raise ValueError(f"history must be one of {HISTORY_SETTINGS}, not {history!r}")
        if not 0 < len(name) <= 128:
            raise ValueError("a group name is 1 to 128 characters")
        with self._store.transaction():
            replica = GroupReplica.create(
                self._store, self._member, name, history=history, now=_now_ms()
            )
            self._remember_group(replica.id)
        group = Group(self, replica)
        self._groups[replica.id] = group
        return group

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
        net = self._net
        live = [] if net is None else net.live()
        relay = (
            None
            if net is None or net.relay is None
            else RelayStatus(url=net.relay, connected=net.relay_connected)
        )
        groups = tuple(self._group_status(g, live) for g in self.groups())
        return DeviceStatus(
            online=net is not None,
            listen_addresses=self.listen_addresses(),
            relay=relay,
            groups=groups,
        )

    def _group_status(self, group: Group, live: Sequence[SyncConnection]) -> GroupStatus:
        """One group's :class:`GroupStatus`: its live peers, then those synced with before."""
        now = _now_ms()
        ours = {d: s.head_seq for d, s in self._store.feeds(group.id).items()}
        records = self._sync_log.records(group.id)
        peers: dict[DeviceId, PeerStatus] = {}
        for c in live:
            if group.id in c.session.groups and c.peer.device not in peers:
                peers[c.peer.device] = self._live_peer(group, c, ours, records, now)
        for device, record in sorted(records.items(), key=lambda i: -i[1].at):
            if device not in peers:
                peers[device] = self._past_peer(group, device, record, ours)
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
        )

    def _live_peer(
        self,
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
        self, group: Group, device: DeviceId, record: SyncRecord, ours: dict[DeviceId, int]
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

    def _remember_group(self, group_id: GroupId) -> None:
        ids = _load_group_ids(self._store)
        if group_id not in ids:
            self._store.put_meta(_GROUPS_KEY, encoding.encode([*ids, group_id]))

    async def rotate_prekey(self) -> None:
        """Replace this device's signed prekey and rotate every group it is in.

        After a compromise of this device's secrets, this heals it (post-compromise security):
        the old prekey secret is forgotten, and the new epoch keys are wrapped to the new
        prekey, which the attacker does not hold.
        """
        now = _now_ms()
        identity = self._identity
        secret = X25519SecretKey.generate(system_rng)
        number = identity.prekey_certificate.prekey_id + 1
        certificate = PrekeyCertificate.issue(identity.device_key, number, secret.public, now)
        with self._store.transaction():
            self._identity = replace(identity, prekey=secret, prekey_certificate=certificate)
            self._store.put_meta(_IDENTITY_KEY, self._identity.to_bytes())
            self._member.identity = self._identity
            self._member.prekeys = {number: secret}
            self._store.put_meta(_PREKEYS_KEY, _encode_prekeys(self._member.prekeys))
            for group in self._groups.values():
                if group._replica.is_member:
                    group._replica.update_prekey(certificate, now=now)
                    group._replica.rotate(now=now)

    async def revoke_device(self, device: bytes) -> None:
        """Revoke one of this person's other devices (a lost phone): every group it was in
        starts a new epoch without it, and its operations after the cut-off are void."""
        person_key = self._identity.person_key
        if person_key is None:
            raise NotAMember("only a device holding the person key may revoke devices")
        now = _now_ms()
        revocation = DeviceRevocation.issue(person_key, DeviceId(bytes(device)), now)
        with self._store.transaction():
            for group in self._groups.values():
                if group._replica.state.device(revocation.device) is not None:
                    group._replica.revoke_device(revocation, now=now)

    # ------------------------------------------------------------------ pairing

    def _reachable(
        self, addresses: Sequence[str] | None, relay: str | None
    ) -> tuple[tuple[str, ...], str | None]:
        """Where an invite says to reach this device: what the caller gave, else where the
        running device really is (:meth:`listen_addresses`, :attr:`relay`), and nothing it
        does not listen on. A device not started yet names this machine's default serve
        address, ``127.0.0.1:7425``, where ``microsync serve`` will listen."""
        if self._net is None:
            fallback = (f"127.0.0.1:{DEFAULT_PORT}",)
            return (tuple(addresses) if addresses is not None else fallback), relay
        found = tuple(addresses) if addresses is not None else self.listen_addresses()
        relay = relay if relay is not None else self.relay
        if not found and relay is None:
            raise InviteError(
                "this device listens on no port and uses no relay, so nobody could redeem "
                "an invite: start it with a port or a relay, or name addresses"
            )
        return found, relay

    def invite_host(self) -> InviteHost:
        """Answers incoming invite redemptions and device links for this device (the sync
        transport hands each incoming ``invite``-purpose connection to ``.session()``)."""
        return InviteHost(
            {gid: g._replica for gid, g in self._groups.items()},
            self._book,
            rng=system_rng,
            now=_now_ms,
            link_device=self._certify if self._identity.person_key is not None else None,
        )

    async def link_device(
        self, *, ttl: float = 600, addresses: Sequence[str] | None = None, relay: str | None = None
    ) -> Invite:
        """A one-time pairing secret (``.link`` for a QR code, ``.code`` to read aloud) that lets
        a new device of this person join: it is certified by the person key and added to every
        group this person is in. Needs a device holding the person key."""
        if self._identity.person_key is None:
            raise NotAMember("only a device holding the person key may link devices")
        addresses_, relay_ = self._reachable(addresses, relay)
        invite = Invite.issue(
            rng=system_rng,
            now=_now_ms(),
            purpose=InvitePurpose.LINK,
            addresses=addresses_,
            relay=relay_,
            ttl_ms=int(ttl * 1000),
            taken_nameplates=self._book.open_nameplates(),
        )
        with self._store.transaction():
            self._book.add(invite, None)
        return invite

    def _certify(self, request: LinkRequest) -> LinkResponse:
        person_key = self._identity.person_key
        assert person_key is not None
        now = _now_ms()
        certificate = DeviceCertificate.issue(person_key, request.device, request.name, now)
        grant = DeviceGrant(certificate.to_bytes(), request.prekey.to_bytes())
        joined = []
        with self._store.transaction():
            add_certificate(self._store, certificate)
            for group in self._groups.values():
                if group._replica.is_member:
                    group._replica.add_device(grant, now=now)
                    joined.append(group.id)
        return LinkResponse(certificate, tuple(joined))

    @classmethod
    async def complete_link(
        cls,
        path: str | os.PathLike[str],
        candidate: DeviceCandidate,
        response: bytes,
    ) -> Device:
        """Create the linked device's profile at ``path`` from a finished pairing: same person,
        this new device, and every group the person is in (they fill in as entries arrive)."""
        directory = Path(path)
        if (directory / DATABASE_NAME).exists():
            raise StorageError(f"{directory} already holds a profile; link into a new one")
        answer = LinkResponse.from_bytes(response)
        identity = candidate.complete(answer)
        device = cls._load_or_create(directory, lambda: identity)
        with device._store.transaction():
            for group_id in answer.groups:
                device._remember_group(group_id)
                replica = GroupReplica(device._store, device._member, group_id)
                device._groups[group_id] = Group(device, replica)
        return device

    def join_guest(self, link_or_code: str) -> PairingGuest:
        """The guest side of redeeming an invite (a link, or a short code) for this device.

        The sync transport runs it against the inviter's :meth:`invite_host`; pass the final
        response to :meth:`finish_join`.
        """
        request = JoinRequest.of(self._identity).to_bytes()
        if link_or_code.startswith("microsync:"):
            return PairingGuest.for_link(link_or_code, request=request)
        return PairingGuest.for_code(
            link_or_code, purpose=InvitePurpose.INVITE, request=request, rng=system_rng
        )

    async def finish_join(self, response: bytes) -> Group:
        """Hold the group a finished invite pairing admitted this device to. Its members,
        name and keys arrive with the group's entries."""
        welcome = Welcome.from_bytes(response)
        existing = self._groups.get(welcome.group)
        if existing is not None:
            return existing
        with self._store.transaction():
            self._store.put_meta(f"{_WELCOME_PREFIX}{welcome.group.hex()}", welcome.add)
            self._remember_group(welcome.group)
            replica = GroupReplica(self._store, self._member, welcome.group)
        group = Group(self, replica)
        self._groups[welcome.group] = group
        return group

    def _welcomes(self) -> dict[GroupId, bytes]:
        """For groups this device joined by invite: the id of the add that admitted it (how
        it proves membership to a peer before it holds any key)."""
        found = {}
        for group_id in self._groups:
            add = self._store.get_meta(f"{_WELCOME_PREFIX}{group_id.hex()}")
            if add is not None:
                found[group_id] = add
        return found

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
        return [self._identity.certificate.to_bytes()] + [
            c.to_bytes() for c in self._known_certificates()
        ]

    def _known_certificates(self) -> list[DeviceCertificate]:
        found: list[DeviceCertificate] = []
        for group in self._groups.values():
            for member in group._replica.state.members.values():
                for info in member.devices.values():
                    cert = self._store.certificate(info.device)
                    if cert is not None and cert.device != self.id:
                        found.append(cert)
        return found

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        """Keep the device certificates a peer sent of devices some group here admits (each is
        verified; bad ones, and ones of devices no group admits, are skipped: an admitted
        device's certificate also rides in the grant that admitted it)."""
        with self._store.transaction():
            for data in certificates:
                try:
                    certificate = DeviceCertificate.from_bytes(data)
                    certificate.verify()
                except MicrosyncError:
                    continue
                if not self._admitted_anywhere(certificate.device):
                    self._unadmitted[certificate.device] = certificate  # memory only, bounded
                    while len(self._unadmitted) > MAX_UNADMITTED_CERTIFICATES:
                        del self._unadmitted[next(iter(self._unadmitted))]
                    continue
                with contextlib.suppress(MicrosyncError):
                    add_certificate(self._store, certificate)

    def _vouch_for_joiner(self, group: Group, peer: DeviceId) -> None:
        """While this device has joined ``group`` by invite and cannot check membership yet,
        the peer it syncs with proved it holds the add that admitted this device (the sync
        match used that add's id): its own feed is stored as it streams."""
        replica = group._replica
        if replica.is_member or group.id not in self._welcomes():
            return
        certificate = self._store.certificate(peer) or self._unadmitted.get(peer)
        if certificate is not None:
            replica.vouch(certificate)

    def _admitted_anywhere(self, device: DeviceId) -> bool:
        return any(g._replica.admits(device, 1) for g in self._groups.values())

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
        group = self._groups.get(GroupId(bytes(group_id)))
        if group is None:
            with self._store.transaction():
                self._remember_group(GroupId(bytes(group_id)))
                replica = GroupReplica(self._store, self._member, GroupId(bytes(group_id)))
                group = Group(self, replica)
                self._groups[replica.id] = group
        if peer is not None:
            self._vouch_for_joiner(group, peer)
        batch = group._replica.receive_batch(items, peer=peer)
        results = batch.results
        accepted = [e for r in results if isinstance(r, Ingested) for e in r.accepted]
        accepted += group._replica.released
        pending = [
            (r.entry, body)
            for r, (_, body) in zip(results, items, strict=True)
            if isinstance(r, Ingested) and r.outcome is Outcome.PENDING and body is not None
        ]
        group._app_pending(pending)
        by_wire = {wire: body for wire, body in items if body is not None}
        known = {e.id: by_wire[e.wire] for e in accepted if e.wire in by_wire}
        group._app_received(accepted, known)
        group.vault.received(batch.accepted)  # removals purge chunks right away
        group._check_members()
        group._check_forks()
        for r in results:
            if isinstance(r, MicrosyncError):
                self.refused[type(r).__name__] = self.refused.get(type(r).__name__, 0) + 1
        return sum(
            1
            for r in results
            if not isinstance(r, MicrosyncError) and r.outcome is not Outcome.HELD
        )

    async def close(self) -> None:
        """Go offline (:meth:`stop`), save a snapshot of each group whose app state was loaded
        (so the next start is quick), then release the profile. Idempotent."""
        await self.stop()
        if not self._store._closed:
            for group in self._groups.values():
                if group._app is not None:
                    # a snapshot is only a cache: never fail a close over it
                    with contextlib.suppress(MicrosyncError):
                        group.snapshot()
        self._store.close()

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


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a group as this device sees it."""

    person_id: PersonId
    name: str
    role: str  # "admin" or "member"
    devices: tuple[DeviceId, ...]

    def __repr__(self) -> str:
        return (
            f"Member(name={self.name!r}, person={fingerprint(self.person_id)}, "
            f"role={self.role!r}, devices={len(self.devices)})"
        )


@dataclass(frozen=True, slots=True)
class InviteStatus:
    """An invite as the group sees it: ``state`` is open, consumed, revoked or burned;
    ``joined`` is the person it admitted."""

    invite_id: bytes
    role: str
    expires_at: int
    state: str
    joined: PersonId | None


class Group(PresenceMixin):
    """One group as this device holds it. Reads are plain methods; writes are ``async``.

    Get one from :meth:`Device.create_group` or :meth:`Device.groups`. The app primitives
    (posts, replies, reactions, read cursors, events) come from
    :class:`~microsync.app.api.AppMixin`.
    """

    def __init__(self, device: Device, replica: GroupReplica) -> None:
        self._device = device
        self._replica = replica
        replica.on_append = device._changed
        self._known_members = set(replica.state.members)
        self._was_member = replica.is_member
        self._known_forks = self._fork_points()
        self._listeners: list[asyncio.Queue[Event]] = []

    @property
    def id(self) -> GroupId:
        return self._replica.id

    @property
    def name(self) -> str:
        return self._replica.state.name

    @property
    def history(self) -> str:
        """``"shared"`` or ``"none"``: whether later members may read earlier content."""
        return self._replica.state.history

    @property
    def epoch(self) -> int:
        """The number of the epoch this device writes in (-1 while a rotation is due)."""
        current = self._replica.state.current_epoch()
        return -1 if current is None else current.number

    def is_member(self) -> bool:
        return self._replica.is_member

    def exit(self) -> GroupExit | None:
        """How this device came to be out of the group (removed, and by whom; left; revoked),
        or ``None`` while it is a member. Read-only (:mod:`microsync.node.exits`)."""
        return exit_of(self._replica)

    def members(self) -> list[Member]:
        """Current members, admins first, then by name."""
        found = [
            Member(
                person_id=m.person,
                name=m.name,
                role=str(m.role),
                devices=tuple(sorted(m.devices)),
            )
            for m in self._replica.state.members.values()
        ]
        return sorted(found, key=lambda m: (m.role != "admin", m.name, m.person_id))

    def _now(self) -> int:
        return _now_ms()

    def _device_owner(self, device: DeviceId) -> str | None:
        """The name of the member whose device ``device`` is, if one is."""
        members = self._replica.state.members.values()
        return next((m.name for m in members if device in m.devices), None)

    def _person_name(self, person: PersonId) -> str | None:
        """``person``'s name as a member of this group, if it is one."""
        member = self._replica.state.members.get(person)
        return None if member is None else member.name

    # ---- vault (docs/vault.md) -------------------------------------------------------------

    @property
    def vault(self) -> Vault:
        """The group's vault of encrypted files (:class:`~microsync.node.vault.Vault`)."""
        found: Vault | None = self.__dict__.get("_vault")
        if found is None:
            found = self.__dict__["_vault"] = Vault(self)
        return found

    async def post(
        self, text: str, attachments: Sequence[bytes | BlobRef] = (), *, ttl: float | None = None
    ) -> Post:
        """Post ``text``; ``attachments`` may be vault :class:`~microsync.blobs.BlobRef`s (a
        post carries ``bytes(ref)``, the blob id: receivers resolve it with ``vault.get``)."""
        return await super().post(text, [bytes(a) for a in attachments], ttl=ttl)

    # ---- end of vault ----------------------------------------------------------------------

    def known_peers(self) -> list[KnownPeer]:
        """Where this device last finished a sync of this group, most recent first: addresses
        it dialled and relays it met members through (:mod:`microsync.node.peers`)."""
        return known_peers(self._device._store, self.id)

    def _after_announce(self, sealed: bytes) -> None:
        self._device._announced(self.id, sealed)

    def _person(self) -> PersonId:
        return self._device.person_id

    def _wants_events(self) -> bool:
        return bool(self._listeners)

    def _check_members(self) -> None:
        """Emit ``member_joined`` / ``member_left`` for what changed since the last check
        (entries received, or this device's own operations such as admitting an invite)."""
        now = set(self._replica.state.members)
        for person in sorted(now - self._known_members):
            self._emit(Event("member_joined", person=person))
        for person in sorted(self._known_members - now):
            self._emit(Event("member_left", person=person))
        self._known_members = now
        if self._was_member and not self._replica.is_member:
            found = self.exit()
            self._emit(Event("exit", person=None if found is None else found.by, detail=found))
        self._was_member = self._replica.is_member

    def _fork_points(self) -> dict[DeviceId, int]:
        feeds = self._replica.store.feeds(self.id)
        return {d: s.forked_at for d, s in feeds.items() if s.forked_at is not None}

    def _check_forks(self) -> None:
        """Emit ``device_forked`` for every fork found (or found earlier in its feed) since the
        last check, and take what the device wrote from its fork on out of the view."""
        points = self._fork_points()
        fresh = {d: s for d, s in points.items() if s < self._known_forks.get(d, s + 1)}
        self._known_forks = points
        if not fresh:
            return
        self._replica.forget_forked()
        self._forget_forked(points)
        for device, seq in sorted(fresh.items()):
            certificate = self._replica.store.certificate(device)
            person = None if certificate is None else certificate.person
            self._emit(
                Event("device_forked", person=person, detail=DeviceForked(device=device, seq=seq))
            )

    def _emit(self, event: Event) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every change from now on, as it is applied: new posts, replies, edits, deletes,
        expiries, reactions, members joining or leaving, a device found forked (its posts from
        the fork on are then gone from :meth:`feed`), and this device's own ``"exit"`` (its
        ``detail`` the :class:`GroupExit`, ``person`` who did it) when it is removed, leaves or
        is revoked. Iterate with ``async for``."""
        self._timeline()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    async def rotate_keys(self) -> None:
        """Start a new epoch now, wrapped to every current member device (any member may)."""
        self._replica.rotate(now=self._now())

    async def remove(self, person_id: bytes, *, force: bool = False) -> None:
        """Remove a member (admins only). Starts a new epoch the removed person cannot read.
        Removing yourself while you are the group's only admin and others remain raises
        :class:`NotAMember` unless ``force`` (then nobody can ever invite, remove or promote
        again): promote another admin first."""
        person = PersonId(bytes(person_id))
        self._refuse_last_admin(person, "remove", force)
        self._replica.remove(person, now=self._now())

    async def leave(self, *, force: bool = False) -> None:
        """Leave the group. The remaining members rotate the key on their next write. Refused
        (:class:`NotAMember`) while you are its only admin and others remain, unless ``force``."""
        self._refuse_last_admin(self._device.person_id, "leave", force)
        self._replica.leave(now=self._now())

    def _refuse_last_admin(self, person: PersonId, verb: str, force: bool) -> None:
        """Raise unless taking ``person``'s admin rights leaves the group another admin (or no
        one to administer). Only you can take your own rights while you are the last admin:
        any other admin who could would still be one (ranks, ``docs/membership.md``), so
        this looks at your own person only and leaves every other refusal to the replica."""
        members = self._replica.state.members
        me = members.get(self._device.person_id)
        if force or person != self._device.person_id or me is None or me.role is not Role.ADMIN:
            return
        admins = [m for m in members.values() if m.role is Role.ADMIN and m.person != person]
        if admins or (len(members) == 1 and verb != "demote"):  # alone: the group ends with you
            return
        raise NotAMember(
            f"cannot {verb}: you are the only admin of {self.name}, and without one nobody "
            "could invite, remove or promote again; promote another member first "
            "(or pass force=True; on the command line, --force)"
        )

    async def invite(
        self,
        *,
        ttl: float = 24 * 3600,
        role: str = "member",
        addresses: Sequence[str] | None = None,
        relay: str | None = None,
    ) -> Invite:
        """A single-use invite (admins only) expiring after ``ttl`` seconds: ``.link`` carries a
        256-bit secret and where to reach this device (for a QR code), ``.code`` a short code to
        read aloud (one wrong guess burns it). ``addresses`` and ``relay`` default to where
        this device is reachable while started (its listener's real addresses and port, its
        relay; :class:`InviteError` if neither), else to ``127.0.0.1:7425``."""
        addresses_, relay_ = self._device._reachable(addresses, relay)
        return issue_invite(
            self._replica,
            self._device._book,
            rng=system_rng,
            now=self._now(),
            ttl_ms=int(ttl * 1000),
            role=Role.parse(role),
            addresses=addresses_,
            relay=relay_,
        )

    async def revoke_invite(self, invite: Invite | bytes) -> None:
        """Revoke an invite (admins only): no device will admit it any more."""
        invite_id = invite.invite_id if isinstance(invite, Invite) else bytes(invite)
        self._replica.revoke_invite(invite_id, now=self._now())

    def invites(self) -> list[InviteStatus]:
        """Every invite of this group with its state and, once used, who joined."""
        found = []
        for info in self._replica.state.invites.values():
            state = "open"
            joined = None
            if info.revoked:
                state = "revoked"
            elif info.consumed_by is not None:
                state = "consumed"
                record = self._replica.operation(info.consumed_by)
                joined = None if record is None else record.op.person
            mine = self._device._book.get(InviteId(info.invite_id))
            if mine is not None and mine[2] is InviteState.BURNED:
                state = "burned"
            found.append(
                InviteStatus(
                    invite_id=info.invite_id,
                    role=str(info.role),
                    expires_at=info.expires_at,
                    state=state,
                    joined=joined,
                )
            )
        return sorted(found, key=lambda s: (s.expires_at, s.invite_id))

    async def promote(self, person_id: bytes) -> None:
        """Make a member an admin (admins only)."""
        self._replica.set_role(PersonId(bytes(person_id)), Role.ADMIN, now=self._now())

    async def demote(self, person_id: bytes, *, force: bool = False) -> None:
        """Make an admin a plain member (admins only). Demoting yourself while you are the
        only admin raises :class:`NotAMember` unless ``force``."""
        person = PersonId(bytes(person_id))
        self._refuse_last_admin(person, "demote", force)
        self._replica.set_role(person, Role.MEMBER, now=self._now())

    def __repr__(self) -> str:
        count = len(self._replica.state.members)
        return f"Group(name={self.name!r}, id={fingerprint(self.id)}, members={count})"


def _load_group_ids(store: SqliteStore) -> list[GroupId]:
    data = store.get_meta(_GROUPS_KEY)
    if data is None:
        return []
    items = expect_list(encoding.decode(data, max_size=2**20), "groups")
    return [GroupId(expect_bytes(item, "group", 32)) for item in items]


def _encode_prekeys(prekeys: dict[int, X25519SecretKey]) -> bytes:
    return encoding.encode([[n, k.secret_bytes()] for n, k in sorted(prekeys.items())])


def _load_prekeys(store: SqliteStore, identity: LocalIdentity) -> dict[int, X25519SecretKey]:
    data = store.get_meta(_PREKEYS_KEY)
    current = {identity.prekey_certificate.prekey_id: identity.prekey}
    if data is None:
        return current
    found = {}
    for item in expect_list(encoding.decode(data, max_size=2**16), "prekeys"):
        number, secret = expect_list(item, "prekey", 2)
        if type(number) is not int:
            raise StorageError("the stored prekeys are damaged")
        found[number] = X25519SecretKey(expect_bytes(secret, "prekey", 32))
    return found | current
