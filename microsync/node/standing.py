"""The standing work of a started device, and what quiet mode turns off (issue 18, point 4).

Theory of operation
-------------------
Besides its listener and the connections it has, a started device keeps four kinds of work
going on its own: a redial loop per kept address (``start(peers=...)``, ``connect()``), LAN
discovery (announcing and browsing), the relay link, and its groups' keeper links.
:class:`Standing` owns all four. While the device is quiet (``Device.set_quiet``) none of them
runs: the kept addresses and the relay are only remembered (``Device.sync_now`` dials them, and
they resume when the device is no longer quiet). Going quiet closes at once every connection
this device opened (those it dialled and those through the relay; what they had synced is
stored, batch by batch, so nothing is lost, and the next ``sync_now`` goes on from there), but
not a one-shot sync's (``sync_with``, ``sync_now``), which ends by itself. Connections other
devices opened to the listener stay, and new ones are accepted: a quiet device that wants none
starts with ``port=None``. Going back starts everything again.

Invariants: the mode is applied by one task at a time (a lock), each converging on the mode as
it is when it runs, so quiet, loud, quiet in quick succession ends quiet; every task here is a
child of the runtime's task group, so none outlives :meth:`Runtime.stop
<microsync.node.runtime.Runtime.stop>`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from microsync.errors import HandshakeError, InviteError, PeerUnreachable
from microsync.feed import GroupId
from microsync.group.keys import discovery_tag
from microsync.identity import DeviceId
from microsync.net.discovery import MAX_TAGS, LanDiscovery
from microsync.node.addresses import split_address
from microsync.node.keeper_link import KeeperLinks
from microsync.node.recovery import recover, recovering, recovery_tags
from microsync.node.relay_link import BACKOFF_MAX, BACKOFF_START, RelayLink

if TYPE_CHECKING:
    from microsync.node.runtime import Runtime

__all__ = ["DIAL_ERRORS", "QuietKeeperLinks", "Standing"]

log = logging.getLogger("microsync.node")

DIAL_ERRORS: Final = (PeerUnreachable, HandshakeError, OSError)
"""What dialling an address can fail with (:meth:`Runtime.dial`): tried again later."""


class QuietKeeperLinks(KeeperLinks):
    """The keeper links of a runtime, wanting none while ``quiet()`` says so (so
    :meth:`~KeeperLinks.changed` ends them all, and starts them again once it says not)."""

    def __init__(self, runtime: Runtime, quiet: Callable[[], bool]) -> None:
        super().__init__(runtime)
        self._quiet = quiet

    def wanted(self) -> set[tuple[GroupId, str]]:
        """Nothing while quiet, else every (group, keeper) pair (:class:`KeeperLinks`)."""
        return set() if self._quiet() else super().wanted()


class Standing:
    """The standing work of one started runtime (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.addresses: list[str] = []
        """The kept addresses (``HOST:PORT``), in the order given; dialled only while loud."""
        self.relay_url: str | None = None
        """The relay this device meets members through (met only while loud)."""
        self._lan: tuple[int, Sequence[str] | None] | None = None  # (port, interfaces)
        self._kept: dict[str, asyncio.Task[None]] = {}
        self._discovery: LanDiscovery | None = None
        self._relay: tuple[RelayLink, asyncio.Task[None]] | None = None
        self._dialing: set[str] = set()
        self._quiet = False  # the mode applied now
        self._applying = asyncio.Lock()
        self.keepers = QuietKeeperLinks(runtime, lambda: self._quiet)

    @property
    def quiet(self) -> bool:
        """Quiet mode as applied now (it follows ``Device.set_quiet`` within a moment)."""
        return self._quiet

    @property
    def relay_connected(self) -> bool:
        """The standing WebSocket to the relay is up now."""
        return self._relay is not None and self._relay[0].connected

    def _wanted_quiet(self) -> bool:
        return self._runtime.device._network.quiet

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, *, lan_port: int | None, interfaces: Sequence[str] | None, relay: str | None
    ) -> None:
        """Begin the standing work (discovery on ``lan_port`` if given, the relay link, the
        keeper links), or, on a quiet device, only remember what to begin later."""
        self._lan = None if lan_port is None else (lan_port, interfaces)
        self.relay_url = relay
        self._quiet = self._wanted_quiet()
        if not self._quiet:
            await self._start_discovery()
            self._loud()
        self.keepers.changed()

    def changed(self) -> None:
        """The device's quiet mode changed: apply it in a child task (module docstring)."""
        self._runtime.spawn(self._apply(), "quiet mode")

    async def _apply(self) -> None:
        async with self._applying:
            quiet = self._wanted_quiet()
            if quiet == self._quiet or self._runtime.stopping:
                return
            self._quiet = quiet
            self.keepers.changed()  # ends or starts every keeper link at once
            if quiet:
                await self._go_quiet()
            else:
                try:
                    await self._start_discovery()
                except OSError as exc:  # (on start() it is the caller's error)
                    log.warning("LAN discovery could not start: %s", _brief(exc))
                self._loud()

    def _loud(self) -> None:
        """Start the redial loops and the relay link."""
        for address in self.addresses:
            self._spawn_keep(address)
        if self.relay_url is not None and self._relay is None:
            link = RelayLink(self._runtime, self.relay_url)
            task = self._runtime.spawn(link.run(), f"relay {self.relay_url}")
            if task is not None:
                self._relay = (link, task)

    async def _go_quiet(self) -> None:
        """End the redial loops, close what this device opened, end the relay link and
        discovery (the keeper links end with :meth:`KeeperLinks.changed`)."""
        for task in self._kept.values():
            task.cancel()
        self._kept.clear()
        runtime = self._runtime
        for connection in runtime.connections():
            opened = connection.initiator_device(runtime.device.id) == runtime.device.id
            relayed = connection.peer_address.startswith("relay:")
            if (opened or relayed) and not runtime.is_oneshot(connection):
                await connection.close()
        if self._relay is not None:
            self._relay[1].cancel()
            self._relay = None
        await self.stop_discovery()

    async def stop_discovery(self) -> None:
        """End LAN discovery if it runs (its goodbye goes out)."""
        discovery, self._discovery = self._discovery, None
        if discovery is not None:
            await discovery.stop()

    def end_loops(self) -> None:
        """Cancel the redial loops (the runtime is stopping)."""
        for task in self._kept.values():
            task.cancel()

    # ------------------------------------------------------------------ kept addresses

    def keep(self, address: str) -> None:
        """Keep a connection to ``address`` up (while loud), reconnecting with backoff."""
        split_address(address)  # ValueError for the caller, not for the task
        if address not in self.addresses:
            self.addresses.append(address)
        if not self._quiet:
            self._spawn_keep(address)

    def _spawn_keep(self, address: str) -> None:
        if address in self._kept or self._runtime.stopping:
            return
        task = self._runtime.spawn(self._keep(address, *split_address(address)), f"keep {address}")
        if task is not None:
            self._kept[address] = task

    async def _keep(self, address: str, host: str, port: int) -> None:
        """Redial ``address`` with backoff while this task is the one kept for it (checked
        as well as cancelled: Python 3.11's ``wait_for`` in a dial can swallow a cancel that
        lands as the dial fails)."""
        runtime = self._runtime
        delay = BACKOFF_START
        while self._kept.get(address) is asyncio.current_task() and not runtime.stopping:
            try:
                connection = await runtime.dial(host, port)
                delay = BACKOFF_START
                await connection.wait()
                await self._while_connected(connection.peer.device)
            except DIAL_ERRORS as exc:
                log.info("connection to %s: %s", address, _brief(exc))
            if self._kept.get(address) is not asyncio.current_task() or runtime.stopping:
                return
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _while_connected(self, device: DeviceId) -> None:
        """Wait while another connection to ``device`` lives (the one kept here was closed as
        its duplicate): redialling now would only be closed again, every backoff period."""
        runtime = self._runtime
        while not runtime.stopping and any(c.peer.device == device for c in runtime.live()):
            await asyncio.sleep(BACKOFF_START)

    # ------------------------------------------------------------------ discovery

    async def _start_discovery(self) -> None:
        if self._lan is None or self._discovery is not None:
            return
        port, interfaces = self._lan
        discovery = LanDiscovery(
            port=port,
            tags=self._announce_tags,
            match_tags=self._match_tags,
            on_peer=self._found,
            interfaces=interfaces,
        )
        await discovery.start()  # (on failure it has stopped itself)
        self._discovery = discovery

    def _announce_tags(self, bucket: int) -> list[bytes]:
        """The discovery tags to publish: the current epoch of each group."""
        device = self._runtime.device
        tags = []
        for group in device.groups():
            key = group._replica.current_epoch_key()
            if key is not None:
                tags.append(discovery_tag(key, bucket))
        room = MAX_TAGS - len(tags)  # its groups' tags first
        return tags + recovery_tags(device, bucket, looking=False, room=room)

    def _match_tags(self, bucket: int) -> list[bytes]:
        """The tags to look for: the latest two epochs of each group (a member one rotation
        behind is still found, and then catches up)."""
        device = self._runtime.device
        tags = []
        for group in device.groups():
            latest = sorted(group._replica.epoch_keys().items(), reverse=True)[:2]
            tags += [discovery_tag(key, bucket) for _, key in latest]
        return tags + recovery_tags(device, bucket, looking=True)  # restored: a member

    def _found(self, host: str, port: int) -> None:
        """Discovery saw a member's device: connect unless already connected there."""
        address = f"{host}:{port}"
        runtime = self._runtime
        if runtime.stopping or self._quiet or address in self._dialing:
            return
        if any(c.peer_address == address for c in runtime.connections()):
            return
        if runtime.spawn(self._dial_found(address, host, port), f"dial {address}") is not None:
            self._dialing.add(address)

    async def _dial_found(self, address: str, host: str, port: int) -> None:
        runtime = self._runtime
        try:
            if recovering(runtime.device):  # restored from the words: be taken back first
                await recover(runtime.device, at=address, relay=None)
            else:
                await runtime.dial(host, port)
        except (*DIAL_ERRORS, InviteError) as exc:
            log.info("could not sync with %s found on the LAN: %s", address, _brief(exc))
        finally:
            self._dialing.discard(address)


def _brief(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
