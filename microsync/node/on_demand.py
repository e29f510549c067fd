"""Sync on demand: one round with every way this device knows to its groups' members, then
done (``Device.sync_now``; what a quiet device does instead of standing connections).

Theory of operation
-------------------
One round tries, all at once and under one deadline:

* **peers**: every ``HOST:PORT`` this device was given (``peers=``, ``start(peers=...)``,
  ``connect()``) or last reached a group's member at (:mod:`microsync.node.peers`); each is
  dialled, synced until both sides are up to date, and closed;
* **relays**: the relay given, the started device's, and every relay a member was last met
  through; at each, the members there now are met and synced with, until all are in sync (or
  none turned up within :data:`MEET_WINDOW` of joining);
* **keepers**: each (group, keeper) the group names; one pass on a connection of its own
  pushes what the keeper lacks, purges what was deleted here, and pulls what is new.

Each way ends by itself (in sync, failed, or the deadline passed), and its connection is
closed. Nothing here stays behind: peer connections are the device's one-shot ones (a started
device's runtime, or one opened for the call), relays and keepers each get a runtime or a
connection of their own. The result is a :class:`SyncSummary`: per way, whether it synced,
entries in and out, and if not, a one-line reason. Only expected failures (unreachable,
refused, a peer's protocol error, the deadline) become a reason; any other error is a bug and
is raised.

Entries pulled from a keeper reach the peers synced with in the same round (live pushes);
entries a peer brings in the round are pushed to a keeper by the next round, or by a keeper
link once the device is not quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

from microsync.errors import PeerUnreachable
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.net.connection import SyncConnection
from microsync.net.keeper_client import KeeperClient
from microsync.node.addresses import check_relay_url, split_address
from microsync.node.keeper_link import KEEPER_ERRORS, GroupKeeperLink, KeeperLinks
from microsync.node.pairing import probe_relay
from microsync.node.peers import known_peers
from microsync.node.relay_link import RelayLink
from microsync.node.runtime import PEER_ERRORS, Runtime, brief
from microsync.node.standing import DIAL_ERRORS

if TYPE_CHECKING:
    from microsync.node.network import Network

__all__ = ["MEET_WINDOW", "SyncAttempt", "SyncSummary", "Via", "sync_now"]

MEET_WINDOW: Final = 2.0
"""Seconds to wait at a relay, once joined, for a first member (they pair at once if there)."""
SETTLE: Final = 0.3
"""Seconds a relay's connections must all have been in sync before the round leaves it."""
POLL: Final = 0.05


class Via(Enum):
    """Which way an attempt went."""

    PEER = "peer"
    RELAY = "relay"
    KEEPER = "keeper"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncAttempt:
    """One way tried by :meth:`~microsync.node.Device.sync_now`."""

    via: Via
    address: str
    """``HOST:PORT`` for a peer, the relay's or the keeper's URL."""
    synced: bool
    """It finished: in sync with the peer (or with every member met at the relay), or the
    keeper pass done."""
    peers: tuple[DeviceId, ...] = ()
    """The devices synced with (a peer, the members met at a relay; none for a keeper)."""
    groups: tuple[GroupId, ...] = ()
    """The groups synced this way."""
    entries_received: int = 0
    """Entries the peers sent that were new here; for a keeper, items taken in."""
    entries_sent: int = 0
    """Entries sent to peers; for a keeper, entries it acknowledged."""
    error: str | None = None
    """Why it did not sync (one line), else ``None``."""

    def line(self) -> str:
        """``address: N in, M out`` or ``address (why)``."""
        if self.synced:
            return f"{self.address}: {self.entries_received} in, {self.entries_sent} out"
        return f"{self.address} ({self.error})"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSummary:
    """What one :meth:`~microsync.node.Device.sync_now` round did."""

    attempts: tuple[SyncAttempt, ...]
    new_entries: int
    """Entries this device holds now that it did not before the round (whichever way)."""

    @property
    def synced(self) -> tuple[SyncAttempt, ...]:
        """The ways that synced."""
        return tuple(a for a in self.attempts if a.synced)

    @property
    def failed(self) -> tuple[SyncAttempt, ...]:
        """The ways that did not, each with its reason."""
        return tuple(a for a in self.attempts if not a.synced)

    @property
    def entries_received(self) -> int:
        return sum(a.entries_received for a in self.attempts)

    @property
    def entries_sent(self) -> int:
        return sum(a.entries_sent for a in self.attempts)

    def line(self) -> str:
        """The round in one line, for a log or the command line."""
        if not self.attempts:
            return "Nothing to sync with: no known peer, relay or keeper"
        done = f"Synced {len(self.synced)} of {len(self.attempts)}"
        parts = [f"{done}, {self.new_entries} new here"]
        if self.synced:
            parts.append("; ".join(a.line() for a in self.synced))
        if self.failed:
            parts.append("failed: " + "; ".join(a.line() for a in self.failed))
        return " | ".join(parts)


async def sync_now(
    network: Network, *, timeout: float, peers: Sequence[str], relay: str | None
) -> SyncSummary:
    """One round (module docstring) within ``timeout`` seconds. ``ValueError`` for a timeout
    that is not positive, a malformed address in ``peers`` or relay URL."""
    if not timeout > 0:
        raise ValueError(f"the timeout must be positive, not {timeout!r}")
    for address in peers:
        split_address(address)
    if relay is not None:
        check_relay_url(relay)
    before = _held(network)
    deadline = asyncio.get_running_loop().time() + timeout
    addresses, relays = _ways(network, peers, relay)
    async with network._for_call() as net:
        keepers = sorted(KeeperLinks(net).wanted())
        work: list[Coroutine[Any, Any, SyncAttempt]] = [_peer(net, a, deadline) for a in addresses]
        work += [_relay(network, url, deadline) for url in relays]
        work += [_keeper(net, g, url, deadline) for g, url in keepers]
        attempts = await _all(work)
    return SyncSummary(attempts=tuple(attempts), new_entries=_held(network) - before)


def _ways(network: Network, peers: Sequence[str], relay: str | None) -> tuple[list[str], list[str]]:
    """The addresses and relays to try, each once, those given first."""
    addresses, relays = list(peers), [] if relay is None else [relay]
    standing = None if network.runtime is None else network.runtime.standing
    if standing is not None:
        addresses += standing.addresses
        relays += [] if standing.relay_url is None else [standing.relay_url]
    store = network._device._store
    for group in network._device.groups():
        for known in known_peers(store, group.id):
            (relays if known.is_relay else addresses).append(known.address)
    return list(dict.fromkeys(addresses)), list(dict.fromkeys(relays))


def _held(network: Network) -> int:
    """Entries held here, over every group (feed heads summed)."""
    device = network._device
    return sum(sum(device.frontier(g.id).values()) for g in device.groups())


async def _all(work: Sequence[Coroutine[Any, Any, SyncAttempt]]) -> list[SyncAttempt]:
    """Run every attempt at once; their results in order (a bug in one raises)."""
    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(w) for w in work]
    return [task.result() for task in running]


# ---------------------------------------------------------------------- peers


async def _peer(net: Runtime, address: str, deadline: float) -> SyncAttempt:
    """Dial ``address``, sync until in sync, close (a live connection there already in sync
    is the answer: a second one could only close it as its duplicate)."""
    live = [c for c in net.live() if c.peer_address == address and c.synced.is_set()]
    if live:
        return _of_connections(Via.PEER, address, live[:1], None, counted=False)
    connection: SyncConnection | None = None
    error: str | None = None
    try:
        host, port = split_address(address)
        async with asyncio.timeout_at(deadline):
            left = max(deadline - asyncio.get_running_loop().time(), 0.1)
            connection = await net.dial(host, port, timeout=left, oneshot=True)
            if asyncio.get_running_loop().time() >= deadline:  # 3.11's wait_for in the dial
                raise TimeoutError  # can swallow the deadline's cancel as it connects
            await _synced_or_closed(connection)
    except ValueError as exc:
        error = brief(exc)
    except TimeoutError:
        error = "no answer in time" if connection is None else "not in sync in time"
    except (*DIAL_ERRORS, *PEER_ERRORS) as exc:
        error = brief(exc)
    finally:
        if connection is not None:
            await connection.close()
    if connection is None:
        return SyncAttempt(via=Via.PEER, address=address, synced=False, error=error)
    return _of_connections(Via.PEER, address, [connection], error)


async def _synced_or_closed(connection: SyncConnection) -> None:
    async with asyncio.TaskGroup() as tasks:
        waiting = {
            tasks.create_task(connection.synced.wait()),
            tasks.create_task(connection.closed.wait()),
        }
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()


def _of_connections(
    via: Via,
    address: str,
    connections: Sequence[SyncConnection],
    error: str | None,
    *,
    counted: bool = True,
) -> SyncAttempt:
    """An attempt's summary from the connections it made (their entries ``counted``)."""
    done = [c for c in connections if c.synced.is_set()]
    if error is None and len(done) < len(connections):
        failed = next(c for c in connections if not c.synced.is_set())
        error = "closed before in sync" if failed.error is None else brief(failed.error)
    if error is None and not connections:
        error = "no member of your groups was there"
    groups = {g for c in done for g in c.session.groups}
    return SyncAttempt(
        via=via,
        address=address,
        synced=error is None,
        peers=tuple(c.peer.device for c in done),
        groups=tuple(sorted(groups)),
        entries_received=sum(c.session.stats.entries_accepted for c in connections) * counted,
        entries_sent=sum(c.session.stats.entries_sent for c in connections) * counted,
        error=error,
    )


# ---------------------------------------------------------------------- relays


async def _relay(network: Network, url: str, deadline: float) -> SyncAttempt:
    """Meet the members at ``url`` now and sync with each (a runtime of its own)."""
    loop = asyncio.get_running_loop()
    try:
        await probe_relay(url, max(min(deadline - loop.time(), 10.0), 0.1))
    except PeerUnreachable as exc:
        return SyncAttempt(via=Via.RELAY, address=url, synced=False, error=brief(exc))
    async with network.runtime_of_its_own() as net:
        link = net.meet_at(url)
        seen, error = await _meet(net, link, deadline)
        for connection in seen:
            await connection.close()
    return _of_connections(Via.RELAY, url, seen, error)


async def _meet(
    net: Runtime, link: RelayLink, deadline: float
) -> tuple[list[SyncConnection], str | None]:
    """The connections made at the relay until all are in sync for :data:`SETTLE` seconds,
    none came within :data:`MEET_WINDOW` of joining, or ``deadline``; and why not if not."""
    loop = asyncio.get_running_loop()
    seen: list[SyncConnection] = []
    joined = settled = None
    while loop.time() < deadline:
        seen += [c for c in net.connections() if c not in seen]
        if joined is None and link.connected:
            joined = loop.time()
        if not seen and joined is not None and loop.time() - joined >= MEET_WINDOW:
            return seen, None  # nobody there now: _of_connections says so
        busy = any(not c.synced.is_set() and not c.closed.is_set() for c in seen)
        if busy or not seen:
            settled = None
        elif settled is None:
            settled = loop.time()
        elif loop.time() - settled >= SETTLE:
            return seen, None
        await asyncio.sleep(POLL)
    if joined is None:
        return seen, "could not join in time"
    return seen, ("not in sync in time" if seen else None)


# ---------------------------------------------------------------------- keepers


async def _keeper(net: Runtime, group: GroupId, url: str, deadline: float) -> SyncAttempt:
    """One pass with the keeper at ``url`` for ``group``, on a connection of its own."""
    link = GroupKeeperLink(net, group, url)
    error: str | None = None
    connected = False
    try:
        async with asyncio.timeout_at(deadline):
            left = max(deadline - asyncio.get_running_loop().time(), 0.1)
            async with await KeeperClient.connect(url, timeout=min(left, 10.0)) as work:
                connected = True
                # the pass the keeper link makes on every wake-up (node/keeper_link.py)
                await link._pass(work)
    except TimeoutError:
        error = "not finished in time" if connected else "no answer in time"
    except KEEPER_ERRORS as exc:
        error = brief(exc)
    return SyncAttempt(
        via=Via.KEEPER,
        address=url,
        synced=error is None,
        groups=(group,),
        entries_received=link.pulled,
        entries_sent=link.pushed,
        error=error,
    )
