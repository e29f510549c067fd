"""Run app code on simulated devices: real :class:`~microsync.Device` objects (real SQLite
profiles in a directory the test gives) on one :class:`FakeClock`, joined through the public
invite API and synced by real handshakes and sync sessions over in-memory pipes the test
controls.

>>> import asyncio, tempfile
>>> async def demo(root: str) -> list[str]:
...     async with AppKit(root, seed=1) as kit:
...         alice, bob = await kit.group_of(2, "Family")
...         await alice.post("hello")
...         await kit.settle()
...         return [p.text for p in bob.feed()]
>>> with tempfile.TemporaryDirectory() as root:
...     asyncio.run(demo(root))
['hello']

Theory of operation
-------------------
**Devices.** :meth:`AppKit.device` opens ``Device.open(root / name, name=..., clock=kit.clock,
rng=...)``: each device draws its keys from its own seeded stream
(:func:`~microsync.testing.device.device_rng`). The app gets the same ``Device`` and ``Group``
objects it gets in production; the kit never reaches into a replica.

**Clock.** One :class:`FakeClock` for everything: the devices, their groups, and the
certificate checks of every handshake the kit runs or serves (``handshake(..., clock=)``). It
starts at ``start`` (Unix ms or an aware ``datetime``; default :data:`KIT_EPOCH`, a fixed
instant, never this machine's time), so a scenario can be set in 2001 or 2030 and a seed
gives the same run on any day. Only the connections' own timers (keepalive, idle timeout)
keep real time: they measure the pipe, and a test's clock may jump hours.

**Transport.** Every exchange is a real connection: the Noise handshake, then a sync session
(:class:`~microsync.net.connection.SyncConnection`) or an invite pairing, over a
:func:`~microsync.testing.pipe.memory_pipe`, served on the far side by the device's own
connection runtime exactly as a TCP connection is. No sockets, so hundreds of sessions a
second, and nothing to leak.

**Faults** (all drawn from ``random.Random(seed)``, so one seed gives one schedule):

- *drop*: each connection is cut, with probability ``drop``, after a random number of bytes
  (what was in flight is lost, as with a reset TCP connection); the next sync resumes;
- *delay*: each write waits up to ``delay_ms`` real milliseconds;
- *reorder*: :meth:`AppKit.settle` syncs pairs in a shuffled order, so entries reach devices
  along different paths in different orders;
- *partition* / *block* / *heal*: devices in different components, or a blocked pair, cannot
  connect (a sync or a join across raises :class:`~microsync.errors.PeerUnreachable`) until
  :meth:`AppKit.heal`; a blocked pair's entries must travel through a third device.

**Live connections.** :meth:`AppKit.connect` keeps a connection up (the devices are
started, with no listener): what either writes is pushed at once, announcements (presence,
locations) pass, and the vault fetches chunks through it, as over TCP.

**Settling.** :meth:`AppKit.settle` repeats rounds of syncs over every reachable pair (in a
shuffled order; a pair holding the very same entries is skipped) until one whole round moves
nothing and cuts nothing; then any two members that can connect must hold the same entries of
their group, else it raises (a stable state that is not a converged one is a sync bug). It
moves entries; announcements (presence, locations) pass on the sessions it runs, and always on
live connections (:meth:`AppKit.connect`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from microsync.errors import HandshakeError, MicrosyncError, PeerUnreachable
from microsync.group.invite import InvitePurpose, PairingGuest
from microsync.group.invite.payloads import DeviceCandidate
from microsync.net.connection import SecureStream, SyncConnection, handshake
from microsync.node import Device, Group
from microsync.node.pairing import run_guest
from microsync.protocol.handshake import Purpose
from microsync.testing.clock import FakeClock
from microsync.testing.device import device_rng
from microsync.testing.pipe import MemoryStream, PipeFaults, memory_pipe

__all__ = ["KIT_EPOCH", "AppKit"]

KIT_EPOCH: Final = 1_767_225_600_000
"""Where a kit's clock starts unless told (2026-01-01T00:00:00Z, in Unix ms): fixed, so a
seed gives the same run on any day."""

MAX_CUT_BYTES = 8 * 1024
"""A dropped connection is cut somewhere in its first this many bytes."""


def _start_ms(start: int | datetime | None) -> int:
    """Unix ms of ``start`` (:data:`KIT_EPOCH` if ``None``; a datetime must be aware)."""
    if start is None:
        return KIT_EPOCH
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start: a datetime with a time zone (datetime(..., tzinfo=UTC))")
        return round(start.timestamp() * 1000)
    if type(start) is not int or start < 0:
        raise ValueError("start: Unix milliseconds (an int >= 0) or an aware datetime")
    return start


class AppKit:
    """Simulated devices running app code (see the module docstring). Use as ``async with``:
    leaving closes every device."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        seed: int = 0,
        clock: FakeClock | None = None,
        start: int | datetime | None = None,
        drop: float = 0.0,
        delay_ms: float = 0.0,
        timeout: float = 10.0,
    ) -> None:
        if not 0.0 <= drop < 1.0:
            raise ValueError("drop is a probability below 1 (every sync must be able to finish)")
        if clock is not None and start is not None:
            raise ValueError("give a clock or where it starts, not both")
        self.root = Path(root)
        self.seed = seed
        # every device, and every handshake the kit runs or serves, reads this one clock
        self.clock = clock if clock is not None else FakeClock(_start_ms(start))
        self.drop = drop
        self.delay_ms = delay_ms
        self.timeout = timeout
        self.devices: list[Device] = []
        self.cuts = 0  # connections cut by the faults so far
        self._rng = random.Random(f"microsync.testing.kit/{seed}")
        self._components: list[set[Device]] | None = None
        self._live: dict[tuple[Device, Device], MemoryStream] = {}
        self._blocked: set[frozenset[Device]] = set()
        self._setting_up = False  # group_of runs without drops (an invite is single-use)

    # ------------------------------------------------------------------ devices

    async def device(self, name: str) -> Device:
        """A new device (a new person) named ``name``, with its profile under ``root``."""
        rng = device_rng(self.seed, name).randbytes
        device = await Device.open(self.root / name, name=name, clock=self.clock, rng=rng)
        self.devices.append(device)
        return device

    async def link(self, device: Device, name: str) -> Device:
        """A new device of ``device``'s person, linked through ``device.link_device()`` over a
        kit connection (the pairing :meth:`Device.link` runs over TCP)."""
        invite = await device.link_device()
        rng = device_rng(self.seed, name).randbytes
        candidate = DeviceCandidate.generate(name, rng, self.clock())
        guest = PairingGuest.redeem(
            invite.link, purpose=InvitePurpose.LINK, request=candidate.request().to_bytes(), rng=rng
        )
        provisional = candidate.provisional(rng, self.clock())
        async with self._dialled(provisional, rng, None, device, Purpose.INVITE, name) as secure:
            response = await run_guest(secure, guest)
            new = await Device.complete_link(
                self.root / name, candidate, response, clock=self.clock, rng=rng
            )
            self.devices.append(new)
            await new._network.sync_after_pairing(secure)
        return new

    async def join(self, device: Device, link_or_code: str, inviter: Device) -> Group:
        """``device`` redeems an invite of ``inviter``'s (``group.invite().link`` or ``.code``)
        over a kit connection, then syncs the group, as :meth:`Device.join` does over TCP."""
        guest = device.join_guest(link_or_code)
        async with self._dialled(
            device._identity, device.rng, device, inviter, Purpose.INVITE, device.name
        ) as secure:
            group = await device.finish_join(await run_guest(secure, guest))
            await device._network.sync_after_pairing(secure)
        return group

    async def group_of(
        self, n: int, name: str = "Group", *, names: Sequence[str] | None = None, **options: Any
    ) -> list[Group]:
        """``n`` new devices (people ``names``, default ``"p0"``, ``"p1"`` ...) in a new group
        named ``name``: the first founds it (``options`` go to ``create_group``), invites each
        of the others, who join; settled (with no connection dropped: the setup is not under
        test). Returns each device's ``Group``, founder first."""
        people = list(names) if names is not None else [f"p{i}" for i in range(n)]
        if len(people) != n or n < 1:
            raise ValueError("group_of needs n >= 1 and one name per device")
        founder = await self.device(people[0])
        group = await founder.create_group(name, **options)
        groups = [group]
        self._setting_up = True
        try:
            for person in people[1:]:
                device = await self.device(person)
                invite = await group.invite()
                groups.append(await self.join(device, invite.link, founder))
                self.clock.advance()
            await self.settle()
        finally:
            self._setting_up = False
        return groups

    # ------------------------------------------------------------------ the network

    def partition(self, *sides: Sequence[Device]) -> None:
        """Split the devices into these components (devices named nowhere are each alone);
        live connections across are cut at once."""
        self._components = [set(side) for side in sides]
        for (a, b), pipe in list(self._live.items()):
            if not self.reachable(a, b):
                pipe.cut()
                del self._live[(a, b)]

    async def connect(self, a: Device, b: Device) -> SyncConnection:
        """A live connection from ``a`` to ``b`` (each is started first if it is not, with
        no listener and no LAN discovery), in sync when this returns; it stays up, pushing
        what either writes, serving vault chunks and passing announcements, until
        :meth:`disconnect`, a partition across it, the faults, or the kit closes."""
        for device in (a, b):
            if device._net is None:
                await device.start(lan=False, port=None)
        if not self.reachable(a, b):
            raise PeerUnreachable(f"{a.name} cannot reach {b.name}: partitioned")
        ours, theirs = memory_pipe(a.name, b.name, self._faults())
        far, near = b._net, a._net
        assert far is not None and near is not None
        far.spawn(far.serve(theirs), f"kit connection from {a.name}")
        secure = await handshake(ours, a._identity, initiator=True, rng=a.rng, clock=self.clock)
        connection = near.open_connection(secure, initiator=True)
        self._live[(a, b)] = ours
        done = asyncio.ensure_future(connection.synced.wait())
        ended = asyncio.ensure_future(connection.closed.wait())
        await asyncio.wait({done, ended}, timeout=self.timeout, return_when="FIRST_COMPLETED")
        done.cancel()
        ended.cancel()
        return connection

    def disconnect(self, a: Device, b: Device) -> None:
        """Cut the live connection from ``a`` to ``b`` (if there is one)."""
        pipe = self._live.pop((a, b), None)
        if pipe is not None:
            pipe.cut()

    def block(self, a: Device, b: Device) -> None:
        """``a`` and ``b`` cannot connect (a live connection between them is cut), whatever the
        partition: what one writes reaches the other only through a third device."""
        self._blocked.add(frozenset((a, b)))
        for pair in ((a, b), (b, a)):
            self.disconnect(*pair)

    def heal(self) -> None:
        """Every device can reach every other again (partitions and blocks are lifted)."""
        self._components = None
        self._blocked.clear()

    def reachable(self, a: Device, b: Device) -> bool:
        """Can ``a`` and ``b`` connect now?"""
        if frozenset((a, b)) in self._blocked:
            return False
        if self._components is None:
            return True
        return any(a in side and b in side for side in self._components)

    async def sync(self, a: Device, b: Device) -> bool:
        """One sync session from ``a`` to ``b`` until both are up to date: ``True`` if it
        finished, ``False`` if the faults cut it first (nothing stored is lost either way).
        :class:`PeerUnreachable` across a partition; :class:`AssertionError` if a session the
        faults left alone is not in sync within ``timeout`` seconds (a sync bug: the test fails
        at once rather than hanging)."""
        cuts, stalled = self.cuts, False
        try:
            async with self._dialled(a._identity, a.rng, a, b, Purpose.SYNC, a.name) as secure:
                net = a._network
                async with net._for_call() as runtime:
                    connection = runtime.open_connection(secure, initiator=True, oneshot=True)
                    done = asyncio.ensure_future(connection.synced.wait())
                    ended = asyncio.ensure_future(connection.closed.wait())
                    await asyncio.wait(
                        {done, ended}, timeout=self.timeout, return_when="FIRST_COMPLETED"
                    )
                    done.cancel()
                    ended.cancel()
                    finished = connection.synced.is_set()
                    stalled = not finished and not connection.closed.is_set()
                    for _ in range(3):  # the announcements sent on being in sync leave first
                        await asyncio.sleep(0)
                    await connection.close()
        except (HandshakeError, ConnectionError) as exc:
            if isinstance(exc, PeerUnreachable):
                raise
            return False
        if stalled and self.cuts == cuts:
            raise AssertionError(
                f"{a.name} and {b.name} were not in sync after {self.timeout:g} s of a session "
                "no fault touched"
            )
        return finished

    async def settle(self, *, max_rounds: int = 50) -> int:
        """Sync every reachable pair, in a shuffled order, until a whole round moves nothing and
        no connection was cut; returns the rounds it took. :class:`AssertionError` if it has
        not settled after ``max_rounds`` (a sync that never converges is a bug)."""
        for rounds in range(1, max_rounds + 1):
            before, cuts = self.state(), self.cuts
            pairs = [
                (a, b) if self._rng.random() < 0.5 else (b, a)
                for i, a in enumerate(self.devices)
                for b in self.devices[i + 1 :]
                if self.reachable(a, b)
            ]
            self._rng.shuffle(pairs)
            for a, b in pairs:
                if self._holding(a) != self._holding(b):  # equal: a session would move nothing
                    await self.sync(a, b)
            if self.state() == before and self.cuts == cuts:
                self._check_settled()
                return rounds
        raise AssertionError(f"the devices did not settle in {max_rounds} rounds")

    def _check_settled(self) -> None:
        """Nothing moves any more: then any two devices that can connect and are both members
        of a group hold the very same entries of it (else sync is broken)."""
        for i, a in enumerate(self.devices):
            for b in self.devices[i + 1 :]:
                if not self.reachable(a, b):
                    continue
                mine, theirs = self._holding(a), self._holding(b)
                for gid in mine.keys() & theirs.keys():
                    both = a.group(gid).is_member() and b.group(gid).is_member()
                    if both and mine[gid] != theirs[gid]:
                        raise AssertionError(
                            f"{a.name} and {b.name} settled holding different entries of "
                            f"group {gid.hex()[:8]}: sync is broken"
                        )

    def _holding(self, device: Device) -> dict[bytes, dict[bytes, int]]:
        return {
            bytes(g.id): {bytes(k): v for k, v in device.frontier(g.id).items()}
            for g in device.groups()
        }

    def state(self) -> dict[str, dict[bytes, dict[bytes, int]]]:
        """What each device holds: device name -> group id -> feed -> head seq."""
        return {d.name: self._holding(d) for d in self.devices}

    # ------------------------------------------------------------------ plumbing

    def _faults(self) -> PipeFaults:
        drop = self.drop if not self._setting_up else 0.0
        cut = self._rng.randrange(MAX_CUT_BYTES) if self._rng.random() < drop else None
        return PipeFaults(
            cut_after=cut, delay_ms=self.delay_ms, rng=random.Random(self._rng.random())
        )

    @contextlib.asynccontextmanager
    async def _dialled(
        self, identity: Any, rng: Any, frm: Device | None, to: Device, purpose: Purpose, name: str
    ) -> Any:
        """A finished handshake from ``identity`` to ``to``, whose runtime serves the far end
        (a sync session, or a pairing that goes on into one) until the block ends."""
        if frm is not None and not self.reachable(frm, to):
            raise PeerUnreachable(f"{name} cannot reach {to.name}: partitioned")
        ours, theirs = memory_pipe(name, to.name, self._faults())
        async with to._network._for_call() as runtime:
            served = asyncio.ensure_future(runtime.serve(theirs))
            try:
                secure: SecureStream = await handshake(
                    ours, identity, initiator=True, purpose=purpose, rng=rng, clock=self.clock
                )
                yield secure
            finally:
                await ours.close()
                with contextlib.suppress(MicrosyncError, ConnectionError, OSError):
                    await asyncio.wait_for(served, self.timeout)
                self.cuts += ours.was_cut

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close every device (each releases its profile)."""
        devices, self.devices = self.devices, []
        for pipe in self._live.values():
            pipe.cut()
        self._live.clear()
        for device in devices:
            await device.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()
