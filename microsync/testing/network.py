"""A simulated network of devices on memory stores, for tests and examples.

Theory of operation
-------------------
Every device (:class:`~microsync.testing.SimDevice`) has a :class:`MemoryStore`, a
:class:`LocalIdentity`, a :class:`LocalMember` and one :class:`GroupReplica` per group it holds.
All randomness comes from the network's ``seed``: each device draws its keys and nonces from its
own stream (:func:`~microsync.testing.device.device_rng`), and the network draws delivery
orders, drops and duplicates from ``random.Random(seed)``. The same seed and the same calls give
the same bytes, entries and outcomes.

**Certificates.** A real sync session starts by exchanging the device certificates each side
knows. The simulation models that once and for all: every store learns every device
certificate as soon as the device is created (``microsync.feed.trust.add_certificate``).
Revocations are *not* copied into trust stores; a device is revoked in a group by the group's
``REVOKE_DEVICE`` operation.

**Messages.** :meth:`SimNetwork.deliver` sends, one entry per message, what ``src`` has
accepted of a group and ``dst`` has not: in feed order, newest first or shuffled, with each
message dropped or duplicated with the probabilities given. ``dst`` receives them through
:meth:`GroupReplica.receive`; entries that arrive ahead of a gap wait in its pending buffer and
join the feed when the gap fills. A device that receives anything of a group gets a replica of
it (as a relay would hand it ciphertext), member or not.

**Partitions.** :meth:`SimNetwork.partition` splits devices into components; messages and key
requests between components are lost until :meth:`SimNetwork.heal`.

**Settling.** :meth:`SimNetwork.settle` repeats full pairwise delivery and key-request rounds
until no store, keyring or membership view changes. Its participants are the devices holding
the group and every device any of them counts as a member's device.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from microsync.errors import DecryptionError, MicrosyncError, NotAMember
from microsync.feed import Ingested, Outcome
from microsync.feed.entry import GroupId
from microsync.feed.trust import add_certificate
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import LocalIdentity
from microsync.testing.checks import (
    Readability,
    check_convergence,
    entitlement_report,
    member_devices,
)
from microsync.testing.clock import FakeClock
from microsync.testing.device import SimDevice, device_rng

__all__ = ["Delivery", "KeyExchange", "Order", "SimNetwork"]

Order = Literal["random", "newest_first", "in_order"]
Item = tuple[bytes, bytes | None]
DeviceRef = SimDevice | str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """What one :meth:`SimNetwork.deliver` did.

    ``offered``: entries ``src`` held that ``dst`` lacked; ``sent``: messages that reached
    ``dst`` (duplicates included); ``accepted``: entries that joined ``dst``'s feeds (pending
    and held ones they unblocked included); ``pending``: messages parked ahead of a gap;
    ``held``: messages kept in memory until an operation admits their device (not stored);
    ``rejected``: the errors ``receive`` returned in place of refused entries.
    """

    offered: int = 0
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    blocked: bool = False
    accepted: int = 0
    pending: int = 0
    held: int = 0
    rejected: tuple[MicrosyncError, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyExchange:
    """One key request: the slots asked for, how many keys the requester gained, and the
    refusal (``NotAMember``, ``DecryptionError``) if there was one."""

    wanted: int = 0
    gained: int = 0
    refused: MicrosyncError | None = None


class SimNetwork:
    """Devices on memory stores, a fake clock and a lossy, partitionable network.

    >>> net = SimNetwork(seed=7)
    >>> alice, bob = net.add_device("alice"), net.add_device("bob")
    >>> family = net.create_group(alice, "Family")
    >>> _ = alice.replica(family).add(
    ...     bob.person_id, "Bob", [bob.grant()], now=net.clock.advance())
    >>> rounds = net.settle(family)
    >>> net.check_convergence(family)
    >>> bob.replica(family).is_member
    True
    """

    def __init__(self, seed: int, *, clock: FakeClock | None = None) -> None:
        self.seed = seed
        self.clock = clock if clock is not None else FakeClock()
        self.rng = random.Random(seed)
        self._devices: dict[str, SimDevice] = {}
        self._components: dict[str, int] | None = None

    # ------------------------------------------------------------------ devices

    @property
    def devices(self) -> tuple[SimDevice, ...]:
        """Every device, in the order they were added."""
        return tuple(self._devices.values())

    def device(self, name: str) -> SimDevice:
        """The device called ``name``."""
        return self._devices[name]

    def add_device(self, name: str) -> SimDevice:
        """A new person with its first device, called ``name`` (unique in this network)."""
        rng = device_rng(self.seed, name).randbytes
        return self._register(LocalIdentity.create(name, rng, self.clock.now))

    def add_linked_device(self, of: SimDevice, name: str) -> SimDevice:
        """Another device of ``of``'s person, certified by its person key. It is in no group
        until some device of that person adds it (``GroupReplica.add_device``)."""
        if of.identity.person_key is None:
            raise ValueError(f"{of.name} does not hold its person key")
        rng = device_rng(self.seed, name).randbytes
        identity = LocalIdentity.for_person(
            of.identity.person_key, name, rng, self.clock.now, of.identity.recovery_key
        )
        return self._register(identity)

    def add_restored_device(self, words: list[str], name: str) -> SimDevice:
        """A device restored from ``words`` (with the recovery key's certificate of itself).
        It is in no group until a member's device takes it back (``add_device(recovery=)``)."""
        rng = device_rng(self.seed, name).randbytes
        return self._register(LocalIdentity.restore(words, name, rng, self.clock.now))

    def _register(self, identity: LocalIdentity) -> SimDevice:
        name = identity.name
        if name in self._devices:
            raise ValueError(f"a device called {name!r} already exists")
        member = LocalMember.of(identity, device_rng(self.seed, f"{name}/member").randbytes)
        device = SimDevice(name, identity, member)
        self._devices[name] = device
        for other in self._devices.values():  # what every sync session would exchange
            add_certificate(other.store, identity.certificate)
            add_certificate(device.store, other.identity.certificate)
        return device

    def _ref(self, device: DeviceRef) -> SimDevice:
        return self._devices[device] if isinstance(device, str) else device

    # ------------------------------------------------------------------ groups

    def create_group(
        self, founder: DeviceRef, name: str = "Group", *, history: str = "shared"
    ) -> GroupId:
        """Found a group on ``founder`` (its first admin) and return the group id."""
        device = self._ref(founder)
        replica = GroupReplica.create(
            device.store, device.member, name, history=history, now=self.clock.now
        )
        device.replicas[replica.id] = replica
        return replica.id

    def holders(self, group: GroupId) -> list[SimDevice]:
        """The devices that hold a replica of ``group``."""
        return [d for d in self._devices.values() if d.holds(group)]

    # ------------------------------------------------------------------ partitions

    def partition(self, components: Iterable[Iterable[DeviceRef]]) -> None:
        """Split the network: devices talk only within their component. A device named in
        no component (including one added later) is cut off from every other device."""
        mapping: dict[str, int] = {}
        for index, component in enumerate(components):
            for device in component:
                name = self._ref(device).name
                if name in mapping:
                    raise ValueError(f"{name} is in two components")
                mapping[name] = index
        self._components = mapping

    def heal(self) -> None:
        """End every partition."""
        self._components = None

    def reachable(self, a: DeviceRef, b: DeviceRef) -> bool:
        """Can messages travel between ``a`` and ``b`` now?"""
        first, second = self._ref(a).name, self._ref(b).name
        if self._components is None or first == second:
            return True
        left, right = self._components.get(first), self._components.get(second)
        return left is not None and left == right

    # ------------------------------------------------------------------ delivery

    def outbox(self, src: DeviceRef, dst: DeviceRef, group: GroupId) -> list[Item]:
        """What ``src`` has accepted of ``group`` that ``dst`` has not, in feed order."""
        source, target = self._ref(src), self._ref(dst)
        items: list[Item] = []
        for author in sorted(source.store.feeds(group)):
            for stored in source.store.entries(group, author):
                h = stored.entry.header
                have = target.store.entry_at(group, h.device, h.seq)
                if have is None or have.entry.id != stored.entry.id:
                    items.append((stored.entry.wire, stored.body))
        return items

    def deliver(
        self,
        src: DeviceRef,
        dst: DeviceRef,
        group: GroupId,
        *,
        order: Order = "random",
        drop: float = 0.0,
        duplicate: float = 0.0,
        batch: int = 1,
    ) -> Delivery:
        """Send ``dst`` what ``src`` holds of ``group`` and ``dst`` lacks, one entry per
        message, ``batch`` messages per ``receive`` call. Each message is lost with probability
        ``drop`` and sent twice with probability ``duplicate``. Nothing crosses a partition."""
        if not self.reachable(src, dst):
            return Delivery(blocked=True)
        return self._deliver(self._ref(src), self._ref(dst), group, order, drop, duplicate, batch)

    def _deliver(
        self,
        src: SimDevice,
        dst: SimDevice,
        group: GroupId,
        order: Order,
        drop: float,
        duplicate: float,
        batch: int,
    ) -> Delivery:
        offered = self._ordered(self.outbox(src, dst, group), order)
        messages: list[Item] = []
        dropped = duplicated = 0
        for item in offered:
            if drop and self.rng.random() < drop:
                dropped += 1
                continue
            messages.append(item)
            if duplicate and self.rng.random() < duplicate:
                duplicated += 1
                messages.insert(self.rng.randint(0, len(messages)), item)
        if not messages:
            return Delivery(offered=len(offered), dropped=dropped)
        replica = self.attach(dst, group)
        results: list[Ingested | MicrosyncError] = []
        for start in range(0, len(messages), max(1, batch)):
            results.extend(replica.receive(messages[start : start + max(1, batch)]))
        ingested = [r for r in results if isinstance(r, Ingested)]
        return Delivery(
            offered=len(offered),
            sent=len(messages),
            dropped=dropped,
            duplicated=duplicated,
            accepted=sum(len(r.accepted) for r in ingested),
            pending=sum(1 for r in ingested if r.outcome is Outcome.PENDING),
            held=sum(1 for r in ingested if r.outcome is Outcome.HELD),
            rejected=tuple(r for r in results if isinstance(r, MicrosyncError)),
        )

    def _ordered(self, items: list[Item], order: Order) -> list[Item]:
        if order == "in_order":
            return items
        if order == "newest_first":
            return list(reversed(items))
        shuffled = list(items)
        self.rng.shuffle(shuffled)
        return shuffled

    def attach(self, device: DeviceRef, group: GroupId) -> GroupReplica:
        """``device``'s replica of ``group``, made empty if it holds none yet."""
        target = self._ref(device)
        if not target.holds(group):
            target.replicas[group] = GroupReplica(target.store, target.member, group)
        return target.replicas[group]

    # ------------------------------------------------------------------ key requests

    def exchange_keys(
        self, requester: DeviceRef, answerer: DeviceRef, group: GroupId
    ) -> KeyExchange:
        """``requester`` asks ``answerer`` for the keys it misses (``missing_keys``), and takes
        what the answer holds. Lost across a partition; refusals are returned, not raised."""
        if not self.reachable(requester, answerer):
            return KeyExchange()
        return self._exchange(self._ref(requester), self._ref(answerer), group)

    def _exchange(self, requester: SimDevice, answerer: SimDevice, group: GroupId) -> KeyExchange:
        mine, theirs = requester.replicas.get(group), answerer.replicas.get(group)
        if mine is None or theirs is None or requester is answerer:
            return KeyExchange()
        wanted = mine.missing_keys()
        if not wanted:
            return KeyExchange()
        try:
            response = theirs.answer_key_request(requester.device_id, wanted)
            gained = mine.accept_key_response(answerer.device_id, response)
        except (NotAMember, DecryptionError) as refusal:
            return KeyExchange(wanted=len(wanted), refused=refusal)
        return KeyExchange(wanted=len(wanted), gained=gained)

    # ------------------------------------------------------------------ settling

    def participants(self, group: GroupId) -> list[SimDevice]:
        """The devices holding ``group`` and every device any of them counts as a member's."""
        listed = {
            device
            for holder in self.holders(group)
            for device in holder.replica(group).state.entitled_devices()
        }
        return [d for d in self._devices.values() if d.holds(group) or d.device_id in listed]

    def settle(
        self, group: GroupId, *, respect_partitions: bool = False, max_rounds: int = 50
    ) -> int:
        """Deliver everything between every pair of participants (in feed order, no loss) and
        answer every key request, until nothing changes. Returns the number of rounds.

        Partitions are ignored unless ``respect_partitions``. Raises ``AssertionError`` if the
        network is still changing after ``max_rounds``.
        """
        for rounds in range(1, max_rounds + 1):
            before = self._fingerprint(group)
            devices = self.participants(group)
            for src in devices:
                for dst in devices:
                    if src is not dst and (not respect_partitions or self.reachable(src, dst)):
                        self._deliver(src, dst, group, "in_order", 0.0, 0.0, 1_000_000)
            for requester in self.participants(group):
                for answerer in self.participants(group):
                    if not respect_partitions or self.reachable(requester, answerer):
                        self._exchange(requester, answerer, group)
            if self._fingerprint(group) == before:
                return rounds
        raise AssertionError(f"group did not settle within {max_rounds} rounds")

    def _fingerprint(self, group: GroupId) -> list[object]:
        out: list[object] = []
        for device in self.holders(group):
            replica = device.replica(group)
            keys = sorted(
                (slot, key.root is not None) for slot, key in replica.epoch_keys().items()
            )
            heads = sorted((d, f.head_seq, f.pending) for d, f in device.store.feeds(group).items())
            out.append((device.name, heads, keys, replica.state.signature(), replica.locked()))
        return out

    # ------------------------------------------------------------------ checks

    def members(self, group: GroupId) -> list[SimDevice]:
        """The member devices of ``group`` as its up-to-date members see it (see
        :func:`microsync.testing.member_devices`)."""
        return member_devices(self.devices, group)

    def check_convergence(self, group: GroupId, *, strict: bool = False) -> None:
        """Raise ``AssertionError`` with a readable diff unless every member device holds an
        identical view of ``group`` (see :func:`microsync.testing.check_convergence`)."""
        check_convergence(self.devices, group, strict=strict)

    def entitlement_report(self, group: GroupId) -> list[Readability]:
        """For every content entry of ``group``, which devices can decrypt it (see
        :func:`microsync.testing.entitlement_report`)."""
        return entitlement_report(self.devices, group)
