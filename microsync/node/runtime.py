"""The running network side of one device: listener, LAN discovery, relay link, live sync
with every connected peer, invites over the wire, presence heartbeats.

Everything here is plumbing around the sans-IO machines: the handshake and the sync session
(:mod:`microsync.protocol`), carried by :mod:`microsync.net`. Every task is a child of the
runtime's one task group (:class:`~microsync.node.tasks.TaskTree`): one per connection, per
kept address, per relay channel, plus the accept loop, the relay link and the heartbeat. The
standing work (redial loops, discovery, the relay and keeper links) is
:class:`~microsync.node.standing.Standing`'s, which quiet mode turns off. A peer
that misbehaves or disappears only ends its own connection (its task handles that error and
returns); any other error is a bug and stops the runtime, and :meth:`Runtime.stop` raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final

from microsync.errors import (
    DecodeError,
    HandshakeError,
    InviteError,
    MicrosyncError,
    PeerUnreachable,
    StorageError,
)
from microsync.feed import GroupId
from microsync.group.invite import HostState
from microsync.identity import DeviceId
from microsync.net.connection import SecureStream, SyncConnection, handshake
from microsync.net.limits import LogBudget, ServeLimits
from microsync.net.stream import Stream, open_tcp
from microsync.node import chunk_net
from microsync.node.addresses import (
    DEFAULT_PORT,
    machine_addresses,
    split_address,
    why_unreachable,
)
from microsync.node.heartbeat import Heartbeat
from microsync.node.keeper_link import KeeperLinks
from microsync.node.listener import Listener, listen
from microsync.node.peers import remember_sync
from microsync.node.recovery import member_recovery
from microsync.node.relay_link import RelayLink
from microsync.node.sharing import may_pass
from microsync.node.standing import DIAL_ERRORS, Standing
from microsync.node.tasks import TaskTree
from microsync.protocol.handshake import Purpose
from microsync.protocol.messages import Item
from microsync.protocol.session import SyncOptions
from microsync.protocol.sync.keepalive import session_options

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = [
    "DEFAULT_PORT",
    "DIAL_ERRORS",
    "Runtime",
    "brief",
    "machine_addresses",
    "split_address",
    "why_unreachable",
]

log = logging.getLogger("microsync.node")

PEER_ERRORS: Final = (MicrosyncError, ConnectionError, OSError, TimeoutError)
"""What a peer can make a connection fail with: it ends that connection, nothing more."""


class Runtime:
    """The running network side of one device (see the module docstring)."""

    def __init__(
        self, device: Device, options: SyncOptions | None, limits: ServeLimits | None = None
    ) -> None:
        self.device = device
        self.clock = device.clock
        self.rng = device.rng
        self.options = options
        self.limits = limits if limits is not None else ServeLimits()
        self.port: int | None = None
        self.bind: str | None = None  # the listener's address, while there is one
        self.stopping = False
        self._tasks = TaskTree(f"device {device.name!r}")
        self._listener: Listener | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._relays: list[RelayLink] = []  # met for one call (meet_at)
        self._failed_handshakes = LogBudget(self.limits.log_interval)
        self._connections: set[SyncConnection] = set()
        self._oneshots: set[SyncConnection] = set()  # a sync_with's or sync_now's
        self._due: set[GroupId] = set()
        self._unexplained: dict[GroupId, int] = {}  # changes due, per group, not yet explained
        self._fresh: dict[GroupId, list[Item]] = {}  # by own entries handed over (written)
        self._prefetching: set[GroupId] = set()
        self._heartbeat = Heartbeat(self)
        self.standing: Standing | None = None
        """Redial loops, discovery, the relay and keeper links, once started (quiet mode)."""

    @property
    def keepers(self) -> KeeperLinks | None:
        """The groups' keeper links, once started (none run while quiet)."""
        return None if self.standing is None else self.standing.keepers

    @property
    def relay(self) -> str | None:
        """The relay this device meets members through (met only while not quiet)."""
        if self.standing is not None and self.standing.relay_url is not None:
            return self.standing.relay_url
        return self._relays[0].url if self._relays else None

    @property
    def relay_connected(self) -> bool:
        """The WebSocket to the relay is up now."""
        if self.standing is not None and self.standing.relay_url is not None:
            return self.standing.relay_connected
        return any(link.connected for link in self._relays)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open the task group (a runtime used for one call opens only this)."""
        await self._tasks.open()

    async def start(
        self,
        *,
        lan: bool,
        port: int | None,
        relay: str | None,
        bind: str | None,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        """Listen on ``port`` (if not ``None``) and begin the standing work (:class:`Standing`:
        none while the device is quiet) and the heartbeat."""
        await self.open()
        if port is not None:
            address = bind if bind is not None else ("0.0.0.0" if lan else "127.0.0.1")
            sock = None
            if lan and port == 0:
                # on a LAN, one well-known port: a random one would be unique to this device
                # and link its announcements across time buckets (docs/discovery.md)
                with contextlib.suppress(OSError):
                    sock = listen(address, DEFAULT_PORT)
            self._listener = listener = Listener(self, sock or listen(address, port))
            self.port, self.bind = listener.port, address
            self._accepting = self.spawn(listener.accept_loop(), f"accept on port {self.port}")
        self.standing = Standing(self)
        lan_port = self.port if lan else None
        await self.standing.start(lan_port=lan_port, interfaces=interfaces, relay=relay)
        self._heartbeat.changed()

    def quiet_changed(self) -> None:
        """The device went quiet or back: end or start the heartbeat and the standing work."""
        self._heartbeat.changed()
        if self.standing is not None:
            self.standing.changed()

    def keep(self, address: str) -> None:
        """Keep a connection to ``address`` up, reconnecting with backoff (while not quiet)."""
        if self.standing is None:
            raise RuntimeError("start() the device first")
        self.standing.keep(address)

    def meet_at(self, relay: str) -> RelayLink:
        """Meet the members of this device's groups at ``relay`` until this runtime stops (a
        runtime opened for one call; a started one meets its relay as :class:`Standing`)."""
        link = RelayLink(self, relay)
        self._relays.append(link)
        self.spawn(link.run(), f"relay {relay}")
        return link

    async def stop(self) -> None:
        """Close every connection (each says goodbye), then end every task; raises what
        failed in one of them, if one did (:meth:`TaskTree.close`)."""
        self.stopping = True
        try:
            if self.standing is not None:
                await self.standing.stop_discovery()
                self.standing.end_loops()
            if self._accepting is not None:
                self._accepting.cancel()  # no new connection from here on
            for connection in list(self._connections):
                await connection.close()
        finally:
            await self._tasks.close()
            if self._listener is not None:
                self._listener.close()

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coroutine`` as a child of this runtime's task group (``None`` once stopping:
        it never runs)."""
        return self._tasks.spawn(coroutine, name)

    # ------------------------------------------------------------------ connections

    async def serve(self, stream: Stream) -> None:
        """One inbound connection: the handshake, then a sync session or a pairing."""
        try:
            secure = await handshake(
                stream,
                self.device._identity,
                initiator=False,
                accept_purposes=(Purpose.SYNC, Purpose.INVITE),
                rng=self.rng,
                timeout=self.limits.handshake_timeout,
                coalesce=True,
                clock=self.clock,
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
            await self.serve_invite(secure)
            return
        connection = self.open_connection(secure, initiator=False)
        await connection.wait()

    def _log_failed_redemption(self, secure: SecureStream, error: MicrosyncError) -> None:
        """One log line for an invite someone failed to redeem here (a wrong code burns it:
        the inviter should know), at most one per interval under a flood."""
        count = self._failed_handshakes.count(asyncio.get_running_loop().time())
        if count is not None:
            name = secure.peer.device_name
            log.info("%r tried to redeem an invite and failed: %s", name, brief(error))

    async def serve_invite(self, secure: SecureStream) -> None:
        """Answer one pairing; once it is done, a guest that stays connected goes on with a
        sync session on the same connection (it gets the group at once)."""
        host = self.device.invite_host().session(recover=member_recovery(self.device, secure))
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
                    connection = self.open_connection(secure, initiator=False)
                    await connection.wait()
                    return
                try:
                    reply = host.receive(record, now=self.clock())
                except (InviteError, DecodeError) as exc:  # what PairingHost.receive raises
                    self._log_failed_redemption(secure, exc)
                    if host.abort_message is not None:
                        await secure.send(host.abort_message)
                    return
                await secure.send(reply)
                for group in self.device.groups():
                    self.changed(group.id)
        except PEER_ERRORS as exc:
            log.info("pairing with %r ended: %s", secure.peer.device_name, brief(exc))
            return
        finally:
            if not handed_over:
                await secure.close()

    def open_connection(
        self, secure: SecureStream, *, initiator: bool, oneshot: bool = False
    ) -> SyncConnection:
        """A sync session on ``secure``, run as a child task until it ends."""
        connection = SyncConnection(
            secure,
            self.device._host,
            our_device=self.device.id,
            initiator=initiator,
            rng=self.rng,
            options=session_options(self.options, quiet=self.device._network.quiet),
            on_synced=self._synced,
        )
        redundant = self._drop_duplicate(connection) and not oneshot
        self._connections.add(connection)
        if oneshot:
            self._oneshots.add(connection)
        task = connection.start()
        if self.spawn(self._watch(connection, task), f"watch {connection.peer_address}") is None:
            task.cancel()  # stopping: it would have been closed right away
        if redundant:
            self.spawn(connection.close(), "close duplicate")
        log.info("connected to %s at %s", secure.peer.device_name, connection.peer_address)
        return connection

    async def _watch(self, connection: SyncConnection, task: asyncio.Task[None]) -> None:
        """Wait for ``connection``'s task (cancelling this cancels it); once it ends, forget
        the connection and note a sync it finished."""
        try:
            await task
        finally:
            self._connections.discard(connection)
            self._oneshots.discard(connection)
            if connection.synced.is_set():  # in sync while live, up to its end
                self._note_sync(connection)
            log.info("disconnected from %s", connection.peer.device_name)

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
                self.spawn(old.close(), "close duplicate")
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
        secure = await handshake(
            stream, self.device._identity, initiator=True, rng=self.rng, clock=self.clock
        )
        return self.open_connection(secure, initiator=True, oneshot=oneshot)

    def live(self) -> list[SyncConnection]:
        """The open sync connections."""
        return [c for c in self._connections if not c.session.closed]

    def connections(self) -> list[SyncConnection]:
        """Every sync connection whose task has not ended yet (open or closing)."""
        return list(self._connections)

    def is_oneshot(self, connection: SyncConnection) -> bool:
        """``connection`` is a one-shot sync's (``sync_with``, ``sync_now``): it ends itself."""
        return connection in self._oneshots

    # ------------------------------------------------------------------ live updates

    def changed(self, group: GroupId) -> None:
        """Push new entries of ``group`` to every connection, once the writing code (always
        synchronous, inside one transaction) has finished and committed."""
        self._unexplained[group] = self._unexplained.get(group, 0) + 1
        if group in self._due:
            return
        self._due.add(group)
        asyncio.get_running_loop().call_soon(self._push, group)

    def written(self, group: GroupId, item: Item) -> None:
        """The after-commit hook: this device's own new entry of ``group`` (wire, body) is
        committed (called once the write returned, never from inside its transaction). It
        explains one :meth:`changed` (the replica's, from inside that transaction); when
        every change of the group before the push is explained so, the push hands the
        entries to the sessions as they are, and none asks the store for them."""
        pending = self._unexplained.get(group, 0)
        if group in self._due and pending > 0:
            self._unexplained[group] = pending - 1
            self._fresh.setdefault(group, []).append(item)

    def _push(self, group: GroupId) -> None:
        self._due.discard(group)
        fresh = self._fresh.pop(group, [])
        if self._unexplained.pop(group, 0):
            fresh = []  # something else changed too: the sessions ask the store
        for connection in list(self._connections):
            connection.notify(group, fresh)
        if self.keepers is not None:
            self.keepers.changed(group)

    def _note_sync(self, connection: SyncConnection) -> None:
        """Record, per group of ``connection``, that it was in sync with the peer now and
        what the peer holds (:class:`~microsync.node.status.SyncLog`)."""
        log_ = self.device._sync_log
        at, peer = self.clock(), connection.peer.device
        for group in connection.session.groups:
            frontier = connection.session.peer_frontier(group)
            if frontier is not None:
                log_.note(group, peer, at, frontier)

    def _synced(self, connection: SyncConnection) -> None:
        self._note_sync(connection)
        try:
            remember_sync(self.device._store, connection, self.device.id, self.clock())
        except StorageError as exc:  # only a hint: a closed store is no failure
            log.info("could not remember how %s was reached: %s", connection.peer_address, exc)
        peer = connection.peer.device
        for group_id in connection.session.groups:
            group = self.device._held(group_id)
            if group is None:
                continue
            for sealed in group.announcements(excluding=peer, to=peer):
                connection.send_ephemeral(group_id, sealed)

    def gossip(self, group: GroupId, sealed: bytes, source: DeviceId | None) -> None:
        """Pass an announcement of ``group`` on to every connection but ``source``'s."""
        held = self.device._held(group)
        for connection in list(self._connections):
            peer = connection.peer.device
            wanted = peer != source and group in connection.session.groups
            if wanted and held is not None and may_pass(held, sealed, peer):
                connection.send_ephemeral(group, sealed)

    # ---- vault chunks (microsync.node.vault) -------------------------------------------------

    def chunk_peers(self, group: GroupId) -> dict[DeviceId, Callable[[Sequence[bytes], int], None]]:
        """Live connections sharing ``group``: peer device -> ``request(chunk ids, hops)``."""
        return chunk_net.chunk_peers(self._connections, group)

    def chunk_answer(
        self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes | None
    ) -> None:
        """Answer ``peer``'s ask for a chunk this device relayed."""
        chunk_net.chunk_answer(self._connections, group, peer, chunk, data)

    def prefetch_soon(self, group: GroupId) -> None:
        """Fetch in the background what the vault's ``"all"`` policy wants (one task per
        group at a time, stopped with the device)."""
        if group in self._prefetching or self.stopping:
            return
        if self.spawn(self._prefetch(group), f"vault prefetch {group.hex()[:8]}") is not None:
            self._prefetching.add(group)

    async def _prefetch(self, group: GroupId) -> None:
        try:
            await asyncio.sleep(0)  # after the sync batch that asked for it
            found = self.device._held(group)
            if found is not None:
                await found.vault.prefetch()
        except MicrosyncError as exc:  # a best-effort background fetch: any failure waits
            log.info("vault prefetch: %s", brief(exc))  # for the next sync that asks again
        finally:
            self._prefetching.discard(group)

    # ---- end of vault chunks -------------------------------------------------------------------


def brief(error: BaseException) -> str:
    """An error's one-line message (its type when it has none)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
