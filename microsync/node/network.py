"""The network part of a :class:`~microsync.node.Device`: going online and offline, one-shot
syncs (with an address, through a relay), joining a group by invite over the wire.

Theory of operation: a started device has one :class:`~microsync.node.runtime.Runtime` (its
listener, discovery, relay link and live connections, all in one task group). A one-shot call
on a device that is not started opens a runtime of its own for the call and stops it before
returning, so no task outlives the call that needed it. :class:`~microsync.node.Device` owns
one :class:`Network` and delegates its public network methods to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microsync.errors import MicrosyncError, PeerUnreachable
from microsync.feed import GroupId
from microsync.identity import DeviceId, PersonId
from microsync.net.connection import SecureStream, SyncConnection
from microsync.net.limits import ServeLimits
from microsync.node.addresses import check_relay_url, machine_addresses
from microsync.node.pairing import probe_relay, reach_inviter, run_guest
from microsync.node.profile import load_quiet, save_quiet
from microsync.node.recovery import recover, recover_on_start, recovering
from microsync.node.runtime import Runtime
from microsync.protocol.session import SessionStats, SyncOptions

if TYPE_CHECKING:
    from microsync.node import Device, Group

__all__ = ["Network", "PeerInfo", "SyncResult"]


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
    """What one :meth:`~microsync.node.Device.sync_with` did."""

    peer: DeviceId
    groups: tuple[GroupId, ...]
    entries_received: int
    entries_sent: int


class Network:
    """Online or not, and the network operations of one device (see the module docstring)."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self.runtime: Runtime | None = None
        """The running network side while started, else ``None``."""
        self._running: list[Runtime] = []  # the started one and those opened for one call
        self.quiet = load_quiet(device._store)
        """Quiet mode (:mod:`microsync.node.standing`), as the profile keeps it."""

    def set_quiet(self, quiet: bool) -> None:
        """Quiet mode on or off, kept in the profile; a started device follows at once (the
        heartbeat, the standing work, new sessions' keepalive)."""
        quiet = bool(quiet)
        if quiet != load_quiet(self._device._store):
            save_quiet(self._device._store, quiet)
        self.quiet = quiet
        if self.runtime is not None:
            self.runtime.quiet_changed()

    # ------------------------------------------------------------------ state

    @property
    def port(self) -> int | None:
        net = self.runtime
        return None if net is None else net.port

    @property
    def relay(self) -> str | None:
        net = self.runtime
        return None if net is None else net.relay

    def listen_addresses(self) -> tuple[str, ...]:
        net = self.runtime
        if net is None or net.port is None or net.bind is None:
            return ()
        if net.bind in ("0.0.0.0", "::", ""):
            return tuple(f"{a}:{net.port}" for a in machine_addresses())
        host = f"[{net.bind}]" if ":" in net.bind else net.bind
        return (f"{host}:{net.port}",)

    def peers(self) -> list[PeerInfo]:
        net = self.runtime
        if net is None:
            return []
        found = [_peer_info(c) for c in net.live()]
        return sorted(found, key=lambda p: (p.name, p.device_id))

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self,
        *,
        lan: bool,
        port: int | None,
        relay: str | None,
        bind: str | None,
        peers: tuple[str, ...],
        interfaces: Sequence[str] | None,
        options: SyncOptions | None,
        limits: ServeLimits | None,
    ) -> None:
        if self.runtime is not None:
            raise RuntimeError("this device is already started")
        if relay is not None:
            check_relay_url(relay)
        net = Runtime(self._device, options, limits)
        self.runtime = net
        self._running.append(net)
        try:
            await net.start(lan=lan, port=port, relay=relay, bind=bind, interfaces=interfaces)
            for address in peers:
                net.keep(address)
        except BaseException:
            self.runtime = None
            await self._stop(net)
            raise
        await recover_on_start(self._device, peers, relay)

    async def stop(self) -> None:
        net, self.runtime = self.runtime, None
        if net is not None:
            await self._stop(net)

    async def _open(self, net: Runtime) -> Runtime:
        self._running.append(net)
        try:
            await net.open()
        except BaseException:
            self._running.remove(net)
            raise
        return net

    async def _stop(self, net: Runtime) -> None:
        try:
            await net.stop()
        finally:
            self._running.remove(net)

    def connect(self, address: str) -> None:
        if self.runtime is None:
            raise RuntimeError("start() the device first")
        self.runtime.keep(address)

    @contextlib.asynccontextmanager
    async def _for_call(self) -> AsyncIterator[Runtime]:
        """The started runtime, or one opened for this call and stopped after it."""
        if self.runtime is not None:
            yield self.runtime
            return
        async with self.runtime_of_its_own() as net:
            yield net

    @contextlib.asynccontextmanager
    async def runtime_of_its_own(self) -> AsyncIterator[Runtime]:
        """A runtime opened for this call (besides a started one) and stopped after it."""
        net = await self._open(Runtime(self._device, None))
        try:
            yield net
        finally:
            await self._stop(net)

    # ------------------------------------------------------------------ one-shot syncs

    async def sync_with(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        progress: Callable[[SessionStats], None] | None,
    ) -> SyncResult:
        if recovering(self._device):  # restored from the words: be taken back first
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            await recover(self._device, at=address, relay=None)
        async with self._for_call() as net:
            connection = await net.dial(host, port, timeout=timeout, oneshot=True)
            try:
                await _until_synced(connection, timeout, progress)
                clean = connection.closed.is_set() and connection.error is None
                if not connection.synced.is_set() and not clean:
                    error = connection.error
                    if isinstance(error, MicrosyncError):
                        raise error
                    raise PeerUnreachable(f"{host}:{port} did not finish syncing in time")
                return result(connection)
            finally:
                await connection.close()

    async def sync_via_relay(
        self,
        relay: str,
        *,
        timeout: float,
        settle: float,
        progress: Callable[[SessionStats], None] | None,
    ) -> list[SyncResult]:
        check_relay_url(relay)
        await probe_relay(relay, min(timeout, 10.0))
        if recovering(self._device):  # restored from the words: be taken back first
            await recover(self._device, at=None, relay=relay, timeout=timeout)
        async with self.runtime_of_its_own() as net:  # besides the live connections
            net.meet_at(relay)
            seen = await _gather(net, timeout, settle, progress)
        done = [result(c) for c in seen if c.synced.is_set()]
        if not done:
            raise PeerUnreachable(
                f"no member of your groups was at {relay} within {timeout:g} s "
                f"(is their `microsync serve --relay {relay}` running?)"
            )
        return done

    async def join(self, link_or_code: str, *, at: str | None) -> Group:
        device = self._device
        guest = device.join_guest(link_or_code)
        secure = await reach_inviter(
            link_or_code, at, device._identity, device.rng, clock=device.clock
        )
        try:
            response = await run_guest(secure, guest)
            group = await device.finish_join(response)
        except BaseException:
            await secure.close()
            raise
        await self.sync_after_pairing(secure)
        return group

    async def sync_after_pairing(self, secure: SecureStream) -> None:
        """Go on with a sync session on the connection a pairing just ran on, until in sync
        (at most 30 s): what the pairing admitted this device to arrives at once."""
        try:
            async with self._for_call() as net:
                connection = net.open_connection(secure, initiator=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connection.synced.wait(), 30)
        except BaseException:
            await secure.close()
            raise

    # ------------------------------------------------------------------ hooks

    def changed(self, group: GroupId) -> None:
        """The device wrote or received entries of ``group``: push them to live peers, and
        (once the writing code is done) report membership changes it made."""
        if self.runtime is not None:
            self.runtime.changed(group)
        found = self._device._held(group)
        if found is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no running loop: a synchronous caller checks members itself
        loop.call_soon(found._check_members)

    def announced(self, group: GroupId, sealed: bytes, source: DeviceId | None) -> None:
        if self.runtime is not None:
            self.runtime.gossip(group, sealed, source)

    def received(self, group: GroupId, accepted: int) -> None:
        """The sync host stored entries of ``group`` (or learnt a fork in it): push them on
        from every running runtime."""
        for net in self._running:
            net.changed(group)

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        """An announcement from ``peer`` was news: pass it on to every other connection."""
        for net in self._running:
            net.gossip(group, data, peer)


async def _until_synced(
    connection: SyncConnection, timeout: float, progress: Callable[[SessionStats], None] | None
) -> None:
    """Wait until ``connection`` is in sync or closed, or ``timeout`` passes, reporting
    ``progress`` about ten times a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with asyncio.TaskGroup() as waiters:
        done = waiters.create_task(connection.synced.wait())
        ended = waiters.create_task(connection.closed.wait())
        while not (done.done() or ended.done()):
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait({done, ended}, timeout=min(left, 0.1), return_when="FIRST_COMPLETED")
            if progress is not None:
                progress(connection.session.stats)
        done.cancel()
        ended.cancel()


async def _gather(
    net: Runtime, timeout: float, settle: float, progress: Callable[[SessionStats], None] | None
) -> list[SyncConnection]:
    """Every connection made within ``timeout``, waiting until one is in sync and none has
    been syncing for ``settle`` seconds (a one-shot sync through the relay)."""
    loop = asyncio.get_running_loop()
    deadline, quiet_since = loop.time() + timeout, None
    seen: list[SyncConnection] = []
    while loop.time() < deadline:
        seen += [c for c in net.connections() if c not in seen]
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


def result(connection: SyncConnection) -> SyncResult:
    """What ``connection`` did, as a :class:`SyncResult`."""
    stats = connection.session.stats
    return SyncResult(
        peer=connection.peer.device,
        groups=tuple(connection.session.groups),
        entries_received=stats.entries_accepted,
        entries_sent=stats.entries_sent,
    )


def _peer_info(connection: SyncConnection) -> PeerInfo:
    cert = connection.peer
    return PeerInfo(
        device_id=cert.device,
        person_id=cert.person,
        name=cert.device_name,
        address=connection.peer_address,
        synced=connection.synced.is_set(),
        groups=tuple(connection.session.groups),
    )
