"""A device on the network: listener, dialer, live sync with every connected peer, invites
over the wire, presence heartbeats (mixed into :class:`~microsync.node.Device`).

Everything here is plumbing around the sans-IO machines: the handshake and the sync session
(:mod:`microsync.protocol`), carried by :mod:`microsync.net`. One task per connection; a peer
that misbehaves or disappears only ends its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from microsync.crypto import system_rng
from microsync.errors import (
    HandshakeError,
    InviteError,
    MicrosyncError,
    PeerUnreachable,
)
from microsync.feed import GroupId
from microsync.group.invite import HostState, InviteSecret, invite_rendezvous, parse_link
from microsync.group.keys import discovery_tag, rendezvous_id
from microsync.identity import DeviceId, LocalIdentity, PersonId
from microsync.net.connection import SecureStream, SyncConnection, handshake
from microsync.net.discovery import LanDiscovery
from microsync.net.limits import (
    RESOURCE_ERRNOS,
    AcceptBackoff,
    ConnectionQuota,
    LogBudget,
    Refusal,
    ServeLimits,
    address_key,
    descriptor_room,
)
from microsync.net.relay_client import RelayChannel, RelayClient
from microsync.net.stream import Stream, TcpStream, open_tcp
from microsync.protocol.handshake import Purpose
from microsync.protocol.session import SessionStats, SyncOptions

if TYPE_CHECKING:
    from microsync.node import Device, Group

DEFAULT_PORT: Final = 7425
"""The TCP port ``microsync serve`` listens on unless told otherwise (and a LAN device's
port when it is free, so the port does not single a device out)."""

__all__ = [
    "DEFAULT_PORT",
    "NetworkMixin",
    "PeerInfo",
    "SyncResult",
    "machine_addresses",
    "split_address",
]

log = logging.getLogger("microsync.node")

PRESENCE_EVERY: Final = 60.0
BACKOFF_START: Final = 0.5
BACKOFF_MAX: Final = 30.0
RELAY_BUCKET_SECONDS: Final = 3600
"""Rendezvous ids at the relay change every hour (and with every key rotation)."""
RELAY_RECHECK: Final = 5.0
RELAY_INVITE_WAIT: Final = 20.0
"""Seconds a guest waits at the relay for the inviter."""


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer this device is connected to now."""

    device_id: DeviceId
    person_id: PersonId
    name: str
    address: str
    synced: bool
    groups: tuple[GroupId, ...]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one :meth:`NetworkMixin.sync_with` did."""

    peer: DeviceId
    groups: tuple[GroupId, ...]
    entries_received: int
    entries_sent: int


_RELAY_URL: Final = re.compile(r"wss?://[A-Za-z0-9._~\[\]:-]+(?:/[A-Za-z0-9._~/-]*)?")


def machine_addresses(limit: int = 8) -> list[str]:
    """This machine's IPv4 addresses (no link-local ones), loopback last, at most ``limit``."""
    import ifaddr

    found = {
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("169.254.")
    }
    ordered = sorted(found, key=lambda a: (a.startswith("127."), a))
    return ordered[:limit] or ["127.0.0.1"]


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``; ``ValueError`` if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


class NetworkMixin:
    """The network half of :class:`~microsync.node.Device`."""

    _identity: LocalIdentity
    _groups: dict[GroupId, Group]
    _net: _Runtime | None = None

    # ------------------------------------------------------------------ public

    @property
    def port(self) -> int | None:
        """The TCP port this device listens on, while started with a listener."""
        net = self._net
        return None if net is None else net.port

    @property
    def relay(self) -> str | None:
        """The relay this device meets members through, while started with one."""
        net = self._net
        return None if net is None else net.relay

    def listen_addresses(self) -> tuple[str, ...]:
        """``host:port`` where this device accepts connections now: its bind address, or for
        a listener on all interfaces this machine's IPv4 addresses (loopback last); empty
        while it has no listener. What an invite names by default."""
        net = self._net
        if net is None or net.port is None or net.bind is None:
            return ()
        if net.bind in ("0.0.0.0", "::", ""):
            return tuple(f"{a}:{net.port}" for a in machine_addresses())
        host = f"[{net.bind}]" if ":" in net.bind else net.bind
        return (f"{host}:{net.port}",)

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
        per address, the handshake's time; default :class:`ServeLimits`). Stop with :meth:`stop`."""
        if self._net is not None:
            raise RuntimeError("this device is already started")
        if relay is not None and not _RELAY_URL.fullmatch(relay):
            raise ValueError(f"not a relay URL: {relay!r} (expected ws://HOST:PORT or wss://...)")
        device = self._device()
        net = _Runtime(device, options, limits)
        self._net = net
        try:
            await net.start(lan=lan, port=port, relay=relay, bind=bind, interfaces=interfaces)
            for address in peers:
                net.keep(address)
        except BaseException:
            self._net = None
            await net.stop()
            raise

    async def stop(self) -> None:
        """Go offline: close every connection, the listener and discovery. Idempotent."""
        net, self._net = self._net, None
        if net is not None:
            await net.stop()

    def connect(self, address: str) -> None:
        """Keep a live connection to ``address`` (``"host:port"``), reconnecting with backoff
        whenever it drops, until :meth:`stop`. Needs :meth:`start`."""
        if self._net is None:
            raise RuntimeError("start() the device first")
        self._net.keep(address)

    def peers(self) -> list[PeerInfo]:
        """The peers connected now."""
        return [] if self._net is None else self._net.peers()

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
        device = self._device()
        net = self._net if self._net is not None else _Runtime(device, None)
        connection = await net.dial(host, port, timeout=timeout, oneshot=True)
        try:
            done = asyncio.ensure_future(connection.synced.wait())
            ended = asyncio.ensure_future(connection.closed.wait())
            deadline = asyncio.get_running_loop().time() + timeout
            while not (done.done() or ended.done()):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                await asyncio.wait(
                    {done, ended}, timeout=min(left, 0.1), return_when="FIRST_COMPLETED"
                )
                if progress is not None:
                    progress(connection.session.stats)
            for waiter in (done, ended):
                waiter.cancel()
            clean = connection.closed.is_set() and connection.error is None
            if not connection.synced.is_set() and not clean:
                error = connection.error
                if isinstance(error, MicrosyncError):
                    raise error
                raise PeerUnreachable(f"{host}:{port} did not finish syncing in time")
            return _result(connection)
        finally:
            await connection.close()

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
        if not _RELAY_URL.fullmatch(relay):
            raise ValueError(f"not a relay URL: {relay!r} (expected ws://HOST:PORT or wss://...)")
        await _probe_relay(relay, min(timeout, 10.0))
        net = _Runtime(self._device(), None)
        net.relay = relay
        net._spawn(net._relay(relay), f"relay {relay}")
        try:
            seen = await net.gather(timeout, settle, progress)
        finally:
            await net.stop()
        done = [_result(c) for c in seen if c.synced.is_set()]
        if not done:
            raise PeerUnreachable(
                f"no member of your groups was at {relay} within {timeout:g} s "
                f"(is their `microsync serve --relay {relay}` running?)"
            )
        return done

    async def join(self, link_or_code: str, *, at: str | None = None) -> Group:
        """Redeem an invite over the network and sync the group: a link carries the
        inviter's addresses; a short code needs ``at="host:port"``. Raises an
        :class:`~microsync.errors.InviteError` for a bad, used, expired or revoked invite, or
        :class:`PeerUnreachable`."""
        device = self._device()
        guest = device.join_guest(link_or_code)
        secure = await _reach_inviter(link_or_code, at, device._identity)
        try:
            response = await _run_guest(secure, guest)
            group = await device.finish_join(response)
            # the same connection goes on as a sync session: the group arrives at once
            net = self._net if self._net is not None else _Runtime(device, None)
            connection = net._open(secure, initiator=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.synced.wait(), 30)
            if self._net is None:
                await connection.close()
        except BaseException:
            await secure.close()
            raise
        return group

    # ------------------------------------------------------------------ hooks

    def _device(self) -> Device:
        from microsync.node import Device

        assert isinstance(self, Device)
        return self

    def _changed(self, group: GroupId) -> None:
        """This device wrote or received entries of ``group``: push them to live peers, and
        (once the writing code is done) report membership changes it made."""
        if self._net is not None:
            self._net.changed(group)
        with contextlib.suppress(RuntimeError):  # no running loop: a synchronous caller
            found = self._groups.get(group)
            if found is not None:
                asyncio.get_running_loop().call_soon(found._check_members)

    def _announced(self, group: GroupId, sealed: bytes, source: DeviceId | None = None) -> None:
        if self._net is not None:
            self._net.gossip(group, sealed, source)


async def _reach_inviter(
    link_or_code: str, at: str | None, identity: LocalIdentity
) -> SecureStream:
    """A finished ``invite`` handshake with the inviter: at ``at``, at the link's addresses in
    turn, else through the link's relay (under the invite's rendezvous id)."""
    addresses: list[str] = [at] if at is not None else []
    relay: str | None = None
    secret: InviteSecret | None = None
    if link_or_code.startswith("microsync:") and at is None:
        link = parse_link(link_or_code)
        addresses, relay, secret = list(link.addresses), link.relay, link.secret
    if not addresses and relay is None:
        raise ValueError("a short code needs at='host:port' (where the inviter serves)")
    errors = []
    for address in addresses:
        try:
            host, port = split_address(address)
            stream: Stream = await open_tcp(host, port, timeout=5)
        except (OSError, TimeoutError, ValueError) as exc:
            errors.append(f"{address}: {why_unreachable(exc)}")
            continue
        return await handshake(
            stream, identity, initiator=True, purpose=Purpose.INVITE, rng=system_rng
        )
    if relay is not None and secret is not None:
        client = RelayClient(relay)
        try:
            await client.connect()
            await client.join(invite_rendezvous(secret))
            channel = await asyncio.wait_for(client.accept(), RELAY_INVITE_WAIT)
        except (OSError, ConnectionError, TimeoutError) as exc:
            await client.close()
            errors.append(f"{relay}: {why_unreachable(exc)}")
        else:
            return await handshake(
                _OwnedChannel(channel, client),
                identity,
                initiator=channel.initiator,
                purpose=Purpose.INVITE,
                accept_purposes=(Purpose.INVITE,),
                rng=system_rng,
            )
    raise PeerUnreachable(
        "could not reach the inviter (is their serve running?): "
        + ("; ".join(errors) or "no address")
    )


async def _probe_relay(url: str, timeout: float) -> None:
    """:class:`PeerUnreachable` unless the relay at ``url`` accepts a connection."""
    client = RelayClient(url)
    try:
        await asyncio.wait_for(client.connect(), timeout)
    except (OSError, ConnectionError, TimeoutError, MicrosyncError) as exc:
        raise PeerUnreachable(f"cannot reach the relay {url}: {why_unreachable(exc)}") from None
    finally:
        await client.close()


def _result(connection: SyncConnection) -> SyncResult:
    stats = connection.session.stats
    return SyncResult(
        peer=connection.peer.device,
        groups=tuple(connection.session.groups),
        entries_received=stats.entries_accepted,
        entries_sent=stats.entries_sent,
    )


def _summed(connections: Sequence[SyncConnection]) -> SessionStats:
    """The stats of ``connections`` added up (entries and bytes)."""
    every = [c.session.stats for c in connections]
    return SessionStats(
        entries_sent=sum(s.entries_sent for s in every),
        entries_received=sum(s.entries_received for s in every),
        entries_accepted=sum(s.entries_accepted for s in every),
        bytes_sent=sum(s.bytes_sent for s in every),
        bytes_received=sum(s.bytes_received for s in every),
    )


def why_unreachable(error: BaseException) -> str:
    """A failed connection attempt in the user's words."""
    if isinstance(error, ConnectionRefusedError):
        return "nothing is listening there"
    if isinstance(error, TimeoutError):
        return "no answer (a firewall, or the wrong address?)"
    if isinstance(error, socket.gaierror):
        return "no such host"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


class _OwnedChannel:
    """A relay channel that closes its own relay connection when it is closed (a guest's
    one-off connection to the relay)."""

    def __init__(self, channel: RelayChannel, client: RelayClient) -> None:
        self._channel, self._client = channel, client

    @property
    def peer(self) -> str:
        return self._channel.peer

    async def read(self) -> bytes:
        return await self._channel.read()

    async def write(self, data: bytes) -> None:
        await self._channel.write(data)

    async def close(self) -> None:
        await self._channel.close()
        await self._client.close()


async def _run_guest(secure: SecureStream, guest: object) -> bytes:
    from microsync.group.invite import PairingGuest

    assert isinstance(guest, PairingGuest)
    message: bytes | None = guest.start()
    while message is not None:
        await secure.send(message)
        reply = await asyncio.wait_for(secure.receive(), 30)
        if reply is None:
            raise InviteError("the inviter closed the connection")
        message = guest.receive(reply)
    return guest.response


class _Runtime:
    """The running network side of one device."""

    def __init__(
        self, device: Device, options: SyncOptions | None, limits: ServeLimits | None = None
    ) -> None:
        self.device = device
        self.options = options
        self.limits = limits = limits if limits is not None else ServeLimits()
        self.port: int | None = None
        self.bind: str | None = None  # the listener's address, while there is one
        self.relay: str | None = None
        self.relay_connected = False  # the WebSocket to the relay is up now
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._quota = ConnectionQuota(
            total=limits.max_connections, per_address=limits.max_per_address
        )  # its total is lowered at start if descriptors are short
        self._refused = {reason: LogBudget(limits.log_interval) for reason in Refusal}
        self._failed_handshakes = LogBudget(limits.log_interval)
        self._connections: set[SyncConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._kept: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._discovery: LanDiscovery | None = None
        self._dialing: set[str] = set()
        self._due: set[GroupId] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        *,
        lan: bool,
        port: int | None,
        relay: str | None,
        bind: str | None,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        if port is not None:
            address = bind if bind is not None else ("0.0.0.0" if lan else "127.0.0.1")
            if lan and port == 0:
                # on a LAN, one well-known port: a random one would be unique to this device
                # and link its announcements across time buckets (docs/discovery.md)
                with contextlib.suppress(OSError):
                    self._listener = _listen(address, DEFAULT_PORT)
            if self._listener is None:
                self._listener = _listen(address, port)
            self.port = self._listener.getsockname()[1]
            self.bind = address
            self._quota = ConnectionQuota(
                total=_total_cap(self.limits), per_address=self.limits.max_per_address
            )
            name = f"accept on port {self.port}"
            self._accepting = self._spawn(self._accept_loop(self._listener), name)
        if lan and self.port is not None:
            self._discovery = LanDiscovery(
                port=self.port,
                tags=self._announce_tags,
                match_tags=self._match_tags,
                on_peer=self._found,
                interfaces=interfaces,
            )
            await self._discovery.start()
        if relay is not None:
            self.relay = relay
            self._spawn(self._relay(relay), f"relay {relay}")
        self._spawn(self._heartbeat(), "presence")

    # ------------------------------------------------------------------ relay

    def _rendezvous_ids(self, bucket: int) -> set[bytes]:
        """One id per group: derived from its current epoch key and the time bucket, so it
        changes with every rotation and every bucket, and only members can compute it."""
        found = set()
        for group in self.device.groups():
            key = group._replica.current_epoch_key()
            if key is not None:
                found.add(rendezvous_id(key, bucket))
        return found

    def _invite_ids(self) -> set[bytes]:
        """Rendezvous ids of this device's open invites that name a relay."""
        book = self.device._book
        return {invite_rendezvous(i.secret) for i in book.relay_invites(_now())}

    async def _relay(self, url: str) -> None:
        """Stay connected to the relay (backoff on failure); meet members under the current
        rendezvous ids; reconnect when they rotate, so the relay cannot link a connection
        across buckets."""
        delay = BACKOFF_START
        while not self._stopping:
            bucket = int(time.time()) // RELAY_BUCKET_SECONDS
            try:
                async with RelayClient(url) as client, self._relay_up():
                    delay = BACKOFF_START
                    joined = self._rendezvous_ids(bucket) | self._invite_ids()
                    for rid in sorted(joined):
                        await client.join(rid)
                    accepting = asyncio.ensure_future(self._relay_accept(client))
                    try:
                        while not self._stopping and not accepting.done():
                            await asyncio.wait({accepting}, timeout=RELAY_RECHECK)
                            now_bucket = int(time.time()) // RELAY_BUCKET_SECONDS
                            if now_bucket != bucket:
                                break  # a new bucket: reconnect with the new ids
                            wanted = self._rendezvous_ids(bucket) | self._invite_ids()
                            fresh = wanted - joined
                            for rid in sorted(fresh):  # a rotation: meet under the new id too
                                await client.join(rid)
                            joined |= fresh
                    finally:
                        accepting.cancel()
                        with contextlib.suppress(BaseException):
                            await accepting
                    continue
            except (OSError, ConnectionError, MicrosyncError, TimeoutError) as exc:
                log.info("relay %s: %s", url, exc)
            if self._stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    @contextlib.asynccontextmanager
    async def _relay_up(self) -> AsyncIterator[None]:
        """While inside, :attr:`relay_connected` is true."""
        self.relay_connected = True
        try:
            yield
        finally:
            self.relay_connected = False

    async def _relay_accept(self, client: RelayClient) -> None:
        while True:
            channel = await client.accept()
            self._spawn(self._relay_session(channel), "relay channel")

    async def _relay_session(self, channel: RelayChannel) -> None:
        """A member met through the relay: a sync session; or, under the rendezvous id of one
        of this device's invites, a guest redeeming it (whichever side the relay made
        initiator)."""
        invite = channel.rid in self._invite_ids()
        try:
            secure = await handshake(
                channel,
                self.device._identity,
                initiator=channel.initiator,
                purpose=Purpose.INVITE if invite else Purpose.SYNC,
                accept_purposes=(Purpose.INVITE,) if invite else (Purpose.SYNC,),
                rng=system_rng,
            )
        except HandshakeError as exc:
            log.info("handshake through the relay failed: %s", exc)
            return
        if secure.purpose is Purpose.INVITE:
            await self._serve_invite(secure)
            return
        connection = self._open(secure, initiator=channel.initiator)
        await connection.wait()

    def _announce_tags(self, bucket: int) -> list[bytes]:
        """The discovery tags to publish: the current epoch of each group."""
        tags = []
        for group in self.device.groups():
            key = group._replica.current_epoch_key()
            if key is not None:
                tags.append(discovery_tag(key, bucket))
        return tags

    def _match_tags(self, bucket: int) -> list[bytes]:
        """The tags to look for: the latest two epochs of each group (a member one rotation
        behind is still found, and then catches up)."""
        tags = []
        for group in self.device.groups():
            latest = sorted(group._replica.epoch_keys().items(), reverse=True)[:2]
            tags += [discovery_tag(key, bucket) for _, key in latest]
        return tags

    def _found(self, host: str, port: int) -> None:
        """Discovery saw a member's device: connect unless already connected there."""
        address = f"{host}:{port}"
        if self._stopping or address in self._dialing:
            return
        if any(c.peer_address == address for c in self._connections):
            return
        self._dialing.add(address)
        self._spawn(self._dial_found(address, host, port), f"dial {address}")

    async def _dial_found(self, address: str, host: str, port: int) -> None:
        try:
            await self.dial(host, port)
        except (MicrosyncError, OSError) as exc:
            log.info("could not sync with %s found on the LAN: %s", address, exc)
        finally:
            self._dialing.discard(address)

    async def stop(self) -> None:
        self._stopping = True
        if self._discovery is not None:
            await self._discovery.stop()
        for task in list(self._kept.values()):
            task.cancel()
        if self._accepting is not None:
            self._accepting.cancel()  # no new connection from here on
        for connection in list(self._connections):
            await connection.close()
        for task in list(self._tasks) + list(self._kept.values()):
            task.cancel()
        for task in list(self._tasks) + list(self._kept.values()):
            with contextlib.suppress(BaseException):
                await task
        if self._listener is not None:
            self._listener.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ connections

    def _host(self) -> object:
        from microsync.node.host import DeviceHost

        return DeviceHost(self.device, on_received=self._received, on_ephemeral=self._relay_on)

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept connections until cancelled. A failing ``accept()`` (out of descriptors)
        is retried after a growing delay and logged once per interval, with a count."""
        loop = asyncio.get_running_loop()
        backoff = AcceptBackoff(self.limits.accept_backoff_start, self.limits.accept_backoff_max)
        failures = LogBudget(self.limits.log_interval)
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:
                self._note_accept_failure(exc, failures, loop.time())
                if exc.errno in RESOURCE_ERRNOS:
                    await asyncio.sleep(backoff.failed())
                continue  # else one connection's trouble (reset before we took it)
            if backoff.failing:
                log.warning("accepting connections again (%d more failures)", failures.flush())
            backoff.succeeded()
            self._admit(sock, address)

    def _note_accept_failure(self, exc: OSError, failures: LogBudget, now: float) -> None:
        count = failures.count(now)
        if count is not None:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            log.warning(
                "cannot accept connections: %s (%d failure(s) since the last report)",
                reason,
                count,
            )

    def _admit(self, sock: socket.socket, address: object) -> None:
        """Serve an accepted socket if the quota has room for its address, else close it."""
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        key = address_key(host)
        refusal = Refusal.TOTAL if self._stopping else self._quota.admit(key)
        if refusal is not None:
            sock.close()
            count = self._refused[refusal].count(asyncio.get_running_loop().time())
            if count is not None and not self._stopping:
                log.warning("refused %d connection(s): %s", count, refusal.value)
            return
        self._spawn(self._serve_socket(sock, key), f"serve {host}")

    async def _serve_socket(self, sock: socket.socket, key: str) -> None:
        """One admitted connection, holding its quota slot until it ends."""
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=sock)
            except OSError:
                sock.close()
                return
            await self._serve(TcpStream(reader, writer))
        finally:
            self._quota.release(key)

    async def _serve(self, stream: Stream) -> None:
        try:
            secure = await handshake(
                stream,
                self.device._identity,
                initiator=False,
                accept_purposes=(Purpose.SYNC, Purpose.INVITE),
                rng=system_rng,
                timeout=self.limits.handshake_timeout,
                coalesce=True,
            )
        except HandshakeError as exc:
            count = self._failed_handshakes.count(asyncio.get_running_loop().time())
            if count is not None:  # a flood of them makes one line per interval
                log.info(
                    "handshake with %s failed: %s (%d since the last report)",
                    stream.peer,
                    exc,
                    count,
                )
            return
        if secure.purpose is Purpose.INVITE:
            await self._serve_invite(secure)
            return
        connection = self._open(secure, initiator=False)
        await connection.wait()

    def _log_failed_redemption(self, secure: SecureStream, error: MicrosyncError) -> None:
        """One log line for an invite someone failed to redeem here (a wrong code burns it:
        the inviter should know), at most one per interval under a flood."""
        count = self._failed_handshakes.count(asyncio.get_running_loop().time())
        if count is not None:
            name = secure.peer.device_name
            log.info("%r tried to redeem an invite and failed: %s", name, error)

    async def _serve_invite(self, secure: SecureStream) -> None:
        """Answer one pairing; once it is done, a guest that stays connected goes on with a
        sync session on the same connection (it gets the group at once)."""
        host = self.device.invite_host().session()
        handed_over = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.pairing_timeout  # for the whole exchange
        try:
            while True:
                record = await asyncio.wait_for(secure.receive(), deadline - loop.time())
                if record is None:
                    return
                if host.state is HostState.DONE:
                    secure.push_back(record)
                    handed_over = True
                    connection = self._open(secure, initiator=False)
                    await connection.wait()
                    return
                try:
                    reply = host.receive(record, now=_now())
                except (InviteError, MicrosyncError) as exc:
                    self._log_failed_redemption(secure, exc)
                    if host.abort_message is not None:
                        await secure.send(host.abort_message)
                    return
                await secure.send(reply)
                for group in self.device.groups():
                    self.changed(group.id)
        except (MicrosyncError, ConnectionError, OSError, TimeoutError):
            return
        finally:
            if not handed_over:
                await secure.close()

    def _open(
        self, secure: SecureStream, *, initiator: bool, oneshot: bool = False
    ) -> SyncConnection:
        from microsync.node.host import DeviceHost

        host = self._host()
        assert isinstance(host, DeviceHost)
        connection = SyncConnection(
            secure,
            host,
            our_device=self.device.id,
            initiator=initiator,
            rng=system_rng,
            options=self.options,
            on_synced=self._synced,
        )
        redundant = self._drop_duplicate(connection) and not oneshot
        self._connections.add(connection)
        task = connection.start()
        if redundant:
            self._spawn(connection.close(), "close duplicate")
        peer = secure.peer.device_name
        log.info("connected to %s at %s", peer, connection.peer_address)

        def ended(_: object) -> None:
            self._connections.discard(connection)
            if connection.synced.is_set():  # in sync while live, up to its end
                self._note_sync(connection)
            log.info("disconnected from %s", peer)

        task.add_done_callback(ended)
        return connection

    def _drop_duplicate(self, new: SyncConnection) -> bool:
        """Two devices that found each other both dial: keep one connection per pair, the one
        whose initiator has the smaller device id (both sides decide alike, in whichever order
        the two connections arrive). Closes an old duplicate; ``True`` if ``new`` is one that
        this device dialled (it closes it; the peer just sees it end)."""
        me, peer = self.device.id, new.peer.device
        for old in list(self._connections):
            if old.peer.device != peer or old.session.closed:
                continue
            new_preferred = new.initiator_device(me) == min(me, peer)
            old_preferred = old.initiator_device(me) == min(me, peer)
            if new_preferred and not old_preferred:
                self._spawn(old.close(), "close duplicate")
            return old_preferred and not new_preferred and new.initiator_device(me) == me
        return False

    async def dial(
        self, host: str, port: int, *, timeout: float = 10.0, oneshot: bool = False
    ) -> SyncConnection:
        """A sync connection to ``host:port``; ``oneshot`` (a ``sync_with``) is never closed
        here as the duplicate of a live connection to the same device."""
        try:
            stream = await open_tcp(host, port, timeout=min(timeout, 10.0))
        except (OSError, TimeoutError) as exc:
            raise PeerUnreachable(f"cannot reach {host}:{port}: {why_unreachable(exc)}") from None
        secure = await handshake(stream, self.device._identity, initiator=True, rng=system_rng)
        return self._open(secure, initiator=True, oneshot=oneshot)

    def keep(self, address: str) -> None:
        """Keep a connection to ``address`` up, reconnecting with backoff."""
        if address in self._kept or self._stopping:
            return
        task = asyncio.ensure_future(self._keep(address))
        task.set_name(f"keep {address}")
        self._kept[address] = task

    async def _keep(self, address: str) -> None:
        host, port = split_address(address)
        delay = BACKOFF_START
        while not self._stopping:
            try:
                connection = await self.dial(host, port)
                delay = BACKOFF_START
                await connection.wait()
                await self._while_connected(connection.peer.device)
            except (MicrosyncError, OSError) as exc:
                log.info("connection to %s: %s", address, exc)
            if self._stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _while_connected(self, device: DeviceId) -> None:
        """Wait while another connection to ``device`` lives (the one kept here was closed as
        its duplicate): redialling now would only be closed again, every backoff period."""
        while not self._stopping and any(
            c.peer.device == device and not c.session.closed for c in self._connections
        ):
            await asyncio.sleep(BACKOFF_START)

    def peers(self) -> list[PeerInfo]:
        found = []
        for c in self._connections:
            if c.session.closed:
                continue
            cert = c.peer
            found.append(
                PeerInfo(
                    device_id=cert.device,
                    person_id=cert.person,
                    name=cert.device_name,
                    address=c.peer_address,
                    synced=c.synced.is_set(),
                    groups=tuple(c.session.groups),
                )
            )
        return sorted(found, key=lambda p: (p.name, p.device_id))

    # ------------------------------------------------------------------ live updates

    def changed(self, group: GroupId) -> None:
        """Push new entries of ``group`` to every connection, once the writing code (always
        synchronous, inside one transaction) has finished and committed."""
        if group in self._due:
            return
        self._due.add(group)
        asyncio.get_running_loop().call_soon(self._push, group)

    def _push(self, group: GroupId) -> None:
        self._due.discard(group)
        for connection in list(self._connections):
            connection.notify(group)

    def _received(self, group: GroupId, accepted: int) -> None:
        self.changed(group)

    def _note_sync(self, connection: SyncConnection) -> None:
        """Record, per group of ``connection``, that it was in sync with the peer now and
        what the peer holds (:class:`~microsync.node.status.SyncLog`)."""
        log_ = self.device._sync_log
        at, peer = _now(), connection.peer.device
        for group in connection.session.groups:
            frontier = connection.session.peer_frontier(group)
            if frontier is not None:
                log_.note(group, peer, at, frontier)

    async def gather(
        self, timeout: float, settle: float, progress: Callable[[SessionStats], None] | None
    ) -> list[SyncConnection]:
        """Every connection made within ``timeout``, waiting until one is in sync and none has
        been syncing for ``settle`` seconds (a one-shot sync through the relay)."""
        loop = asyncio.get_running_loop()
        deadline, quiet_since = loop.time() + timeout, None
        seen: list[SyncConnection] = []
        while loop.time() < deadline:
            seen += [c for c in self._connections if c not in seen]
            busy = any(not c.synced.is_set() and not c.closed.is_set() for c in seen)
            if busy or not any(c.synced.is_set() for c in seen):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= settle:
                break
            if progress is not None:
                progress(_summed(seen))
            await asyncio.sleep(0.05)
        return seen

    def live(self) -> list[SyncConnection]:
        """The open sync connections."""
        return [c for c in self._connections if not c.session.closed]

    def _synced(self, connection: SyncConnection) -> None:
        self._note_sync(connection)
        from microsync.node.peers import remember_sync

        with contextlib.suppress(MicrosyncError):  # only a hint: a closed store is no failure
            remember_sync(self.device._store, connection, self.device.id, _now())
        for group in connection.session.groups:
            with contextlib.suppress(KeyError, MicrosyncError):
                peer = connection.peer.device
                for sealed in self.device.group(group).announcements(excluding=peer):
                    connection.send_ephemeral(group, sealed)

    def gossip(self, group: GroupId, sealed: bytes, source: DeviceId | None) -> None:
        for connection in list(self._connections):
            if connection.peer.device != source and group in connection.session.groups:
                connection.send_ephemeral(group, sealed)

    def _relay_on(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        self.gossip(group, data, peer)

    # ---- vault chunks (microsync.node.vault) -------------------------------------------------

    def chunk_peers(self, group: GroupId) -> dict[DeviceId, Callable[[Sequence[bytes]], None]]:
        """Live connections sharing ``group``: peer device -> ``request(chunk ids)``."""
        found: dict[DeviceId, Callable[[Sequence[bytes]], None]] = {}
        for connection in self._connections:
            session = connection.session
            if session.closed or group not in session.groups:
                continue

            def request(ids: Sequence[bytes], connection: SyncConnection = connection) -> None:
                connection.session.request_chunks(group, ids)
                connection.notify(group)  # sends what the session queued, through its outbox

            found[connection.peer.device] = request
        return found

    def prefetch_soon(self, group: GroupId) -> None:
        """Fetch in the background what the vault's ``"all"`` policy wants (one task per
        group at a time, stopped with the device)."""
        running: set[GroupId] = self.__dict__.setdefault("_vault_prefetching", set())
        if group in running or self._stopping:
            return
        running.add(group)
        self._spawn(self._prefetch(group, running), f"vault prefetch {group.hex()[:8]}")

    async def _prefetch(self, group: GroupId, running: set[GroupId]) -> None:
        try:
            await asyncio.sleep(0)  # after the sync batch that asked for it
            await self.device.group(group).vault.prefetch()
        except (MicrosyncError, KeyError) as exc:
            log.info("vault prefetch: %s", exc)
        finally:
            running.discard(group)

    # ---- end of vault chunks -------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            for group in list(self.device.groups()):
                if group.is_member():
                    with contextlib.suppress(MicrosyncError):
                        await group.announce_presence("online")
            await asyncio.sleep(PRESENCE_EVERY)


def _now() -> int:
    return time.time_ns() // 1_000_000


def _listen(address: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``address:port`` (``OSError`` if taken)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server((address, port), family=family, backlog=128)
    listener.setblocking(False)
    return listener


def _total_cap(limits: ServeLimits) -> int:
    """``limits.max_connections``, lowered to half the descriptors this process has left (the
    other half stays for storage, dials and the relay), so inbound connections alone never
    run the process out of descriptors."""
    room = descriptor_room()
    if room is None or room // 2 >= limits.max_connections:
        return limits.max_connections
    cap = max(1, room // 2)
    log.info("at most %d inbound connections (descriptors left: %d)", cap, room)
    return cap
