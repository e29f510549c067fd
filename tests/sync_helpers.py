"""Sync-session test helpers: a :class:`SyncHost` over a real :class:`microsync.Device`, and a
pure driver that pumps records between two sessions (with cuts).

:class:`DeviceHost` is written to move into ``microsync/node.py`` as-is (each method is a thin
wrapper over the Device's store and group replicas); the test-only parts are the logs it keeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import microsync
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.node.host import DeviceHost as LibraryHost
from microsync.protocol.messages import Item, Message, decode_message
from microsync.protocol.session import SyncOptions, SyncSession

T = TypeVar("T")

PROOF_EPOCHS = 3
FRESH_ADDS = 4
MAX_KEY_RESPONSE = 512 * 1024


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine of the async Device API from a synchronous test."""
    return asyncio.run(coroutine)


class DeviceHost(LibraryHost):
    """The device's own :class:`~microsync.node.host.DeviceHost`, keeping a log of what the
    session handed it, and with the welcomes given here (a device that joined by hand)."""

    def __init__(
        self, device: microsync.Device, welcomes: Mapping[GroupId, bytes] | None = None
    ) -> None:
        super().__init__(device)
        self._welcomes = dict(welcomes or {})  # group -> the add that admitted this device
        self.received: list[tuple[GroupId, list[Item]]] = []  # test log: every receive call
        self.ephemerals: list[tuple[GroupId, DeviceId, bytes]] = []

    def welcomes(self) -> Mapping[GroupId, bytes]:
        return {**super().welcomes(), **self._welcomes}

    def receive(self, group: GroupId, items: Sequence[Item]) -> int:
        self.received.append((group, list(items)))
        return super().receive(group, items)

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        self.ephemerals.append((group, peer, data))


# ---------------------------------------------------------------------- the driver


def counter_rng(seed: str) -> Callable[[int], bytes]:
    """Deterministic bytes (BLAKE2b in counter mode): the sessions' padding tags."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.blake2b(f"{seed}/{next(counter)}".encode()).digest()
        return out[:n]

    return rng


@dataclass
class Link:
    """Two sessions joined by an ordered, reliable channel; ``log`` holds every delivered
    message as (sender name, message)."""

    a: SyncSession
    b: SyncSession
    to_a: deque[bytes] = field(default_factory=deque)
    to_b: deque[bytes] = field(default_factory=deque)
    log: list[tuple[str, Message]] = field(default_factory=list)
    cut: bool = False

    def sent_by(self, side: str) -> list[Message]:
        return [m for s, m in self.log if s == side]

    def queue(self, side: str, records: list[bytes]) -> None:
        """Records produced by session ``side`` ("a" or "b") outside of :func:`pump`."""
        (self.to_b if side == "a" else self.to_a).extend(records)

    def update(self, group: GroupId) -> None:
        """Both hosts may have new entries of ``group``: let both sessions push."""
        self.queue("a", self.a.local_update(group))
        self.queue("b", self.b.local_update(group))


def connect(
    host_a: DeviceHost,
    host_b: DeviceHost,
    *,
    binding: bytes = b"\x01" * 64,
    options_a: SyncOptions | None = None,
    options_b: SyncOptions | None = None,
) -> Link:
    """Start a session between two hosts (``a`` is the initiator); nothing is delivered yet."""
    a = SyncSession(
        host_a,
        our_device=host_a.device.id,
        peer_device=host_b.device.id,
        channel_binding=binding,
        initiator=True,
        rng=counter_rng(f"a/{binding.hex()}"),
        options=options_a,
    )
    b = SyncSession(
        host_b,
        our_device=host_b.device.id,
        peer_device=host_a.device.id,
        channel_binding=binding,
        initiator=False,
        rng=counter_rng(f"b/{binding.hex()}"),
        options=options_b,
    )
    link = Link(a, b)
    link.queue("a", a.start(now=0))
    link.queue("b", b.start(now=0))
    return link


def deliver(link: Link, side: str, now: int = 0) -> None:
    """Deliver the oldest record in flight from ``side`` to the other session."""
    queue, receiver = (link.to_b, link.b) if side == "a" else (link.to_a, link.a)
    record = queue.popleft()
    link.log.append((side, decode_message(record)))
    link.queue("b" if side == "a" else "a", receiver.receive(record, now))


def step(link: Link, now: int = 0) -> None:
    """Deliver one record: a's oldest if any, else b's."""
    deliver(link, "a" if link.to_b else "b", now)


def pump(link: Link, *, now: int = 0, limit: int | None = None) -> int:
    """Deliver records alternately until both directions are empty, or ``limit`` records were
    delivered, after which the link is cut (in-flight records discarded). Returns the count."""
    delivered = 0
    while (link.to_a or link.to_b) and not link.cut:
        for side, queue in (("a", link.to_b), ("b", link.to_a)):
            if not queue:
                continue
            if limit is not None and delivered >= limit:
                link.cut = True
                link.to_a.clear()
                link.to_b.clear()
                return delivered
            deliver(link, side, now)
            delivered += 1
    return delivered


def sync_pair(host_a: DeviceHost, host_b: DeviceHost, **options: Any) -> Link:
    """One full session between two hosts, run until nothing is in flight."""
    link = connect(host_a, host_b, **options)
    pump(link)
    return link


# ---------------------------------------------------------------------- fixtures


def open_devices(root: Path, *names: str) -> list[microsync.Device]:
    return [run(microsync.Device.open(root / name, name=name)) for name in names]


def family(devices: Sequence[microsync.Device], *, history: str = "shared") -> GroupId:
    """A group founded by ``devices[0]`` with every other device invited and joined. The
    joiners are bootstrapped by hand (a device with no epoch key cannot match a group)."""
    from tests.test_device_groups import introduce, pair, sync

    founder = devices[0]
    group = run(founder.create_group("Family", history=history))
    introduce(*devices)
    for device in devices[1:]:
        invite = run(group.invite(ttl=3600))
        response = pair(founder.invite_host().session(), device.join_guest(invite.link))
        run(device.finish_join(response))
        sync(founder, device, group.id)
    for device in devices[1:]:
        sync(founder, device, group.id)
    return group.id


def join(founder: microsync.Device, group: GroupId, joiner: microsync.Device) -> bytes:
    """``joiner`` redeems an invite to ``group`` from ``founder``; nothing is synced. Returns
    the id of the add that admitted it (its Welcome's ``add``)."""
    from microsync.group.join import Welcome
    from tests.test_device_groups import introduce, pair

    introduce(founder, joiner)
    invite = run(founder.group(group).invite(ttl=3600))
    response = pair(founder.invite_host().session(), joiner.join_guest(invite.link))
    run(joiner.finish_join(response))
    return Welcome.from_bytes(response).add


def close_all(devices: Sequence[microsync.Device]) -> None:
    for device in devices:
        run(device.close())
