"""One simulated device: an identity, an in-memory store and its replicas of groups."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from microsync.feed.entry import GroupId
from microsync.group.ops import DeviceGrant
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import DeviceId, DeviceRevocation, LocalIdentity, PersonId
from microsync.storage.memory import MemoryStore

__all__ = ["SimDevice", "device_rng"]


def device_rng(seed: int, name: str) -> random.Random:
    """The deterministic random source of device ``name`` in a network seeded with ``seed``.

    Each device has its own stream, so adding a device never changes another device's keys.
    (Not a CSPRNG: for simulations only.)
    """
    return random.Random(f"microsync.testing/{seed}/{name}")


@dataclass(eq=False, slots=True)
class SimDevice:
    """A device of a :class:`~microsync.testing.SimNetwork`.

    ``replicas`` maps a group id to this device's :class:`GroupReplica` of it; a device holds a
    group once it founded it or something of it was delivered to it.
    """

    name: str
    identity: LocalIdentity
    member: LocalMember
    store: MemoryStore = field(default_factory=MemoryStore)
    replicas: dict[GroupId, GroupReplica] = field(default_factory=dict)

    @property
    def device_id(self) -> DeviceId:
        """This device's id (its public signing key)."""
        return self.identity.device_id

    @property
    def person_id(self) -> PersonId:
        """The id of the person this device belongs to."""
        return self.identity.person_id

    def holds(self, group: GroupId) -> bool:
        """Does this device have a replica of ``group``?"""
        return group in self.replicas

    def replica(self, group: GroupId) -> GroupReplica:
        """This device's replica of ``group`` (``KeyError`` if it holds none)."""
        try:
            return self.replicas[group]
        except KeyError:
            raise KeyError(f"{self.name} holds no replica of group {group[:4].hex()}") from None

    def grant(self) -> DeviceGrant:
        """The certificate and prekey an admin needs to add this device to a group."""
        return self.member.grant()

    def revoke(self, other: SimDevice, now: int) -> DeviceRevocation:
        """A revocation of ``other`` signed by this device's person key (both must belong to
        one person, and this device must hold the person key)."""
        key = self.identity.person_key
        if key is None or other.person_id != self.person_id:
            raise ValueError(f"{self.name} cannot revoke {other.name}: not its person's device")
        return DeviceRevocation.issue(key, other.device_id, now)

    def __repr__(self) -> str:
        return f"SimDevice({self.name!r})"
