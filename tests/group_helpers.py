"""Small helpers shared by the group-layer tests: deterministic peers on memory stores, and
moving entries between them in any order."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from microsync.feed.entry import Entry, GroupId
from microsync.feed.store import StoredEntry
from microsync.feed.trust import add_certificate
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import LocalIdentity
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity, make_rng

Item = tuple[bytes, bytes | None]


@dataclass
class Peer:
    """One device: its identity, its own store and (once it has one) its replica of a group."""

    identity: LocalIdentity
    member: LocalMember
    store: MemoryStore = field(default_factory=MemoryStore)
    replica: GroupReplica | None = None

    @property
    def group(self) -> GroupReplica:
        assert self.replica is not None, "this peer has no replica yet"
        return self.replica

    @property
    def person(self) -> bytes:
        return self.identity.person_id

    @property
    def device(self) -> bytes:
        return self.identity.device_id


def make_peers(*names: str, seed: str = "") -> list[Peer]:
    """Peers with deterministic keys and randomness; every store trusts every certificate."""
    peers = []
    for name in names:
        identity = make_identity(name, f"{seed}{name}")
        member = LocalMember.of(identity, rng=make_rng(f"rng-{seed}{name}"))
        peers.append(Peer(identity, member))
    for peer in peers:
        for other in peers:
            add_certificate(peer.store, other.identity.certificate)
    return peers


def found(peer: Peer, *, history: str = "shared", name: str = "Family", now: int = 1) -> GroupId:
    peer.replica = GroupReplica.create(peer.store, peer.member, name, history=history, now=now)
    return peer.replica.id


def attach(peer: Peer, group: GroupId) -> GroupReplica:
    """An empty replica of ``group`` on ``peer`` (filled by :func:`sync`)."""
    peer.replica = GroupReplica(peer.store, peer.member, group)
    return peer.replica


def items_of(store: MemoryStore, group: GroupId) -> list[Item]:
    """Every stored entry of ``group`` in ``store`` as (wire, body), feed by feed."""
    return [
        (s.entry.wire, s.body)
        for device in sorted(store.feeds(group))
        for s in store.entries(group, device)
    ]


def item(store: MemoryStore, entry: Entry) -> Item:
    stored = stored_entry(store, entry)
    return stored.entry.wire, stored.body


def stored_entry(store: MemoryStore, entry: Entry) -> StoredEntry:
    h = entry.header
    found_entry = store.entry_at(h.group, h.device, h.seq)
    assert found_entry is not None
    return found_entry


def sync(src: Peer, *dsts: Peer, shuffle: int | None = None) -> None:
    """Deliver everything ``src`` stores of its group to each of ``dsts`` (one batch each),
    shuffled with ``shuffle`` as the seed when given."""
    items = items_of(src.store, src.group.id)
    if shuffle is not None:
        random.Random(shuffle).shuffle(items)
    for dst in dsts:
        if dst.replica is None:
            attach(dst, src.group.id)
        dst.group.receive(items)


def sync_all(peers: Sequence[Peer], rounds: int = 2) -> None:
    """Everyone sends everything to everyone until nothing new can arrive."""
    for _ in range(rounds):
        for src in peers:
            sync(src, *(p for p in peers if p is not src))


def deliver(dst: Peer, items: Iterable[Item]) -> None:
    """Deliver ``items`` one per batch (feed order must be kept per device by the caller)."""
    for one in items:
        dst.group.receive([one])


def group_of(*names: str, admins: str = "", history: str = "shared", seed: str = "") -> list[Peer]:
    """The first peer founds the group and adds the others (admins by name), then all sync."""
    peers = make_peers(*names, seed=seed)
    founder = peers[0]
    found(founder, history=history)
    for i, peer in enumerate(peers[1:], start=2):
        role = Role.ADMIN if peer.identity.name in admins else Role.MEMBER
        founder.group.add(peer.person, peer.identity.name, [peer.member.grant()], role=role, now=i)
    sync(founder, *peers[1:])
    return peers


def outsider(peers: list[Peer], name: str) -> Peer:
    """A device not in the group whose certificate every store (and its own) knows."""
    [new] = make_peers(name)
    for peer in peers:
        add_certificate(peer.store, new.identity.certificate)
        add_certificate(new.store, peer.identity.certificate)
    return new


def second_device(peers: list[Peer], owner: Peer, name: str) -> Peer:
    """Another device of ``owner``'s person, known to every store."""
    assert owner.identity.person_key is not None
    identity = LocalIdentity.for_person(
        owner.identity.person_key, name, make_rng(f"device-{name}"), 1_700_000_000_000
    )
    new = Peer(identity, LocalMember.of(identity, rng=make_rng(f"rng-{name}")))
    for peer in [*peers, new]:
        for other in [*peers, new]:
            add_certificate(peer.store, other.identity.certificate)
    return new
