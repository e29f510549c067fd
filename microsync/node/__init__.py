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

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from microsync import encoding
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
from microsync.group.invite import Invite, InvitePurpose, PairingGuest
from microsync.group.join import (
    DeviceCandidate,
    InviteBook,
    InviteHost,
    JoinRequest,
    LinkRequest,
    LinkResponse,
    Welcome,
)
from microsync.group.ops import HISTORY_SETTINGS, DeviceGrant
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import (
    DeviceCertificate,
    DeviceId,
    DeviceRevocation,
    LocalIdentity,
    PersonId,
    PrekeyCertificate,
)
from microsync.node.exits import GroupExit
from microsync.node.group import Group, InviteStatus, Member
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
