"""The member cap (``create_group(max_members=...)``): carried in the CREATE op, enforced by
every replica in the resolver's fold order, so concurrent adds at two admins never exceed it
and the same add wins everywhere, whatever the delivery order (docs/membership.md, "Cap")."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.encoding import Value
from microsync.errors import DecodeError, GroupFull, NotAMember
from microsync.feed.trust import add_certificate
from microsync.group.join import InviteBook, issue_invite
from microsync.group.membership import resolve
from microsync.group.ops import (
    MAX_MEMBERS_CAP,
    DeviceGrant,
    EpochAnnouncement,
    History,
    Op,
    OpKind,
    Role,
)
from microsync.group.replica import GroupReplica
from microsync.testing.hostile import Hostile
from tests.conftest import make_rng
from tests.group_helpers import Peer, attach, items_of, make_peers, sync, sync_all

_CREATE = dict(
    kind=OpKind.CREATE,
    group_name="Family",
    history=History.SHARED,
    nonce=bytes(range(32)),
    name="Ana",
    devices=(DeviceGrant(b"cert", b"prekey"),),
    epoch=EpochAnnouncement(0, b"\x01" * 32, b"\x02" * 32),
)
# the CREATE as every version before the cap wrote it, and with a cap of 12 (key "m")
OLD_CREATE = bytes.fromhex(
    "a7616481824463657274467072656b657961658300582001010101010101010101010101010101010101"
    "010101010101010101010101015820020202020202020202020202020202020202020202020202020202"
    "020202020261676646616d696c79616866736861726564616b01616e63416e61616f5820000102030405"
    "060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)
CAPPED_CREATE = bytes.fromhex(
    "a8616481824463657274467072656b657961658300582001010101010101010101010101010101010101"
    "010101010101010101010101015820020202020202020202020202020202020202020202020202020202"
    "020202020261676646616d696c79616866736861726564616b01616d0c616e63416e61616f5820000102"
    "030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)


# --------------------------------------------------------------------------- encoding


def test_known_answer_vectors_for_the_create_with_and_without_a_cap() -> None:
    assert Op(**_CREATE).to_bytes() == OLD_CREATE  # an uncapped create is unchanged
    assert Op(**_CREATE, max_members=12).to_bytes() == CAPPED_CREATE
    assert Op.from_bytes(OLD_CREATE).max_members is None
    assert Op.from_bytes(CAPPED_CREATE).max_members == 12


@pytest.mark.parametrize("cap", [0, -1, MAX_MEMBERS_CAP + 1, True, "12", 2**64, None])
def test_a_cap_out_of_range_or_mistyped_does_not_decode(cap: Value) -> None:
    fields = encoding.decode(OLD_CREATE, max_size=4096)
    assert isinstance(fields, dict)
    with pytest.raises(DecodeError):
        Op.from_bytes(encoding.encode({**fields, "m": cap}))


def test_a_cap_on_any_other_kind_does_not_decode() -> None:
    rotate = {"k": int(OpKind.ROTATE), "e": [1, b"1" * 32, b"2" * 32]}
    Op.from_bytes(encoding.encode(rotate))
    with pytest.raises(DecodeError):
        Op.from_bytes(encoding.encode({**rotate, "m": 3}))


# --------------------------------------------------------------------------- one replica


def capped_group(*names: str, cap: int, admins: str = "", history: str = "shared") -> list[Peer]:
    """The first peer founds a group capped at ``cap`` and adds the others, who all sync."""
    peers = make_peers(*names, seed="cap")
    founder = peers[0]
    founder.replica = GroupReplica.create(
        founder.store, founder.member, "Family", history=history, max_members=cap, now=1
    )
    for i, peer in enumerate(peers[1:], start=2):
        role = Role.ADMIN if peer.identity.name in admins else Role.MEMBER
        founder.group.add(peer.person, peer.identity.name, [peer.member.grant()], role=role, now=i)
    sync(founder, *peers[1:])
    return peers


def newcomers(peers: list[Peer], *names: str) -> list[Peer]:
    """Devices outside the group whose certificates every store knows."""
    new = make_peers(*names, seed="cap-new")
    for a in [*peers, *new]:
        for b in [*peers, *new]:
            add_certificate(a.store, b.identity.certificate)
    return new


def add(by: Peer, who: Peer, now: int) -> bytes:
    return by.group.add(who.person, who.identity.name, [who.member.grant()], now=now).id


def test_a_full_group_refuses_the_next_add_and_an_invite() -> None:
    a, b, c = peers = capped_group("A", "B", "C", cap=3)
    assert a.group.state.max_members == 3 and a.group.state.full()
    assert b.group.state.max_members == 3  # every member holds the cap
    [d] = newcomers(peers, "D")
    with pytest.raises(NotAMember):
        add(a, d, 10)
    with pytest.raises(GroupFull, match="cap of 3"):
        issue_invite(a.group, InviteBook(a.store), rng=make_rng("i"), now=10, ttl_ms=60_000)
    assert {m.name for m in a.group.state.members.values()} == {"A", "B", "C"}
    assert c.group.state.signature() == a.group.state.signature()


def test_a_removal_makes_room_again() -> None:
    a, _b, c = peers = capped_group("A", "B", "C", cap=3)
    [d] = newcomers(peers, "D")
    a.group.remove(c.person, now=10)
    add(a, d, 11)
    assert {m.name for m in a.group.state.members.values()} == {"A", "B", "D"}
    assert a.group.state.full()


def test_an_uncapped_group_has_no_cap() -> None:
    [a] = make_peers("A", seed="nocap")
    a.replica = GroupReplica.create(a.store, a.member, "Family", now=1)
    assert a.group.state.max_members is None and not a.group.state.full()


# --------------------------------------------------------------------------- concurrent adds


def test_concurrent_adds_at_two_admins_never_exceed_the_cap() -> None:
    a, b = peers = capped_group("A", "B", cap=3, admins="B")
    d, e = newcomers(peers, "D", "E")
    adds = {"D": add(a, d, 10), "E": add(b, e, 10)}  # each admin saw room for one more
    sync_all(peers)
    order = a.group.resolution.order
    first = min(adds, key=lambda n: order.index(adds[n]))  # type: ignore[arg-type]
    loser = e if first == "D" else d
    for peer in peers:
        names = {m.name for m in peer.group.state.members.values()}
        assert names == {"A", "B", first}
        assert peer.group.resolution.effective >= {adds[first]}  # type: ignore[operator]
        assert adds[loser.identity.name] not in peer.group.resolution.effective
        assert not peer.group.state.counts(loser.identity.device_id, 1)  # nothing of it counts
        assert peer.group.state.current_epoch() is None  # its bundle reached it: rotate
    assert a.group.state.signature() == b.group.state.signature()
    a.group.rotate(now=20)
    sync_all(peers)
    assert loser.identity.device_id not in a.group.state.current_epoch().recipients  # type: ignore[union-attr]


def test_racing_adds_that_start_epochs_converge_on_one_epoch() -> None:
    """With ``history="none"`` each add starts an epoch: the voided add's epoch is void, and
    every replica writes under the same one (after the rotation its exposure asks for)."""
    a, b, c = peers = capped_group("A", "B", "C", cap=4, admins="B", history="none")
    d, e = newcomers(peers, "D", "E")
    add(a, d, 10)
    add(b, e, 10)
    sync_all(peers)
    assert all(p.group.state.signature() == a.group.state.signature() for p in peers)
    assert len(a.group.state.members) == 4
    a.group.rotate(now=20)
    sync_all(peers)
    epochs = [p.group.state.current_epoch() for p in peers]
    assert epochs[0] is not None and all(e == epochs[0] for e in epochs)
    assert c.group.current_epoch_key() is not None


def _race_history() -> tuple[list[Peer], list[tuple[bytes, bytes | None]]]:
    """Three admins add two newcomers each at once into a group with room for two; then a
    removal makes room for one, and the three add one each at once again. O only watches."""
    a, b, c, _o, x = peers = capped_group("A", "B", "C", "O", "X", cap=7, admins="BC")
    new = newcomers(peers, "D", "E", "F", "G", "H", "I", "J", "K", "L")
    for i, admin in enumerate((a, b, c)):
        add(admin, new[2 * i], 10)
        add(admin, new[2 * i + 1], 11)
    sync_all(peers)
    a.group.remove(x.person, now=20)
    sync_all(peers)
    for i, admin in enumerate((a, b, c)):
        add(admin, new[6 + i], 30)
    sync_all(peers)
    items = [it for p in peers for it in items_of(p.store, a.group.id)]
    return peers, items


_RACE = _race_history()


def test_the_race_history_holds_exactly_the_cap() -> None:
    peers, _ = _RACE
    watcher = peers[3].group
    names = {m.name for m in watcher.state.members.values()}
    assert len(names) == 7 and {"A", "B", "C", "O"} <= names and "X" not in names
    assert len(names & set("DEFGHI")) == 2 and len(names & set("JKL")) == 1
    for peer in peers[:4]:
        assert peer.group.state.signature() == watcher.state.signature()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 5))
def test_any_delivery_order_gives_the_same_members_within_the_cap(
    rnd: random.Random, batch: int
) -> None:
    peers, items = _RACE
    reference = peers[3].group
    [observer] = make_peers("O", seed="cap")  # the same device on a fresh, empty store
    for other in [*peers, *newcomers(peers, "D", "E", "F", "G", "H", "I", "J", "K", "L")]:
        add_certificate(observer.store, other.identity.certificate)
    replica = attach(observer, reference.id)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    for start in range(0, len(shuffled), batch):
        replica.receive(shuffled[start : start + batch])
    assert replica.state.signature() == reference.state.signature()
    assert replica.resolution.effective == reference.resolution.effective
    assert len(replica.state.members) <= 7


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_resolving_the_set_in_any_order_is_the_same(rnd: random.Random) -> None:
    peers, _ = _RACE
    group = peers[3].group
    records = {i: r for i in group.resolution.order if (r := group.operation(i)) is not None}
    ids = list(records)
    rnd.shuffle(ids)
    shuffled = resolve(group.id, {i: records[i] for i in ids})
    assert shuffled.state.signature() == group.state.signature()
    assert shuffled.effective == group.resolution.effective


# --------------------------------------------------------------------------- hostile


def test_a_hostile_admins_over_cap_add_is_void_everywhere() -> None:
    _a, b, _c = peers = capped_group("A", "B", "C", cap=3, admins="B")
    [m] = newcomers(peers, "M")
    evil = Hostile(b.group)  # B's own device, modified to skip the cap check
    op = Op(
        kind=OpKind.ADD,
        person=m.person,
        name="M",
        role=Role.ADMIN,
        devices=(m.member.grant(),),
        positions=((m.identity.device_id, 0),),
    )
    forged = evil.append_op(op, hlc=50, deps=[b.group.resolution.order[-1]])
    sync_all(peers)
    for peer in peers:
        assert forged.id not in peer.group.resolution.effective
        assert m.person not in peer.group.state.members
        assert not peer.group.admits(m.identity.device_id, 1)


def test_an_invite_redeemed_into_a_group_filled_meanwhile_stays_unconsumed() -> None:
    a, b = peers = capped_group("A", "B", cap=3, admins="B")
    d, e = newcomers(peers, "D", "E")
    a.group.create_invite(b"d" * 32, expires_at=10**12, role=Role.MEMBER, now=5)
    a.group.create_invite(b"e" * 32, expires_at=10**12, role=Role.MEMBER, now=6)
    sync(a, b)
    joins = {
        "D": a.group.add(d.person, "D", [d.member.grant()], invite_id=b"d" * 32, now=10).id,
        "E": b.group.add(e.person, "E", [e.member.grant()], invite_id=b"e" * 32, now=10).id,
    }
    sync_all(peers)
    order = a.group.resolution.order
    first = min(joins, key=lambda n: order.index(joins[n]))  # type: ignore[arg-type]
    loser = "E" if first == "D" else "D"
    for peer in peers:
        invites = peer.group.state.invites
        assert invites[first.lower().encode() * 32].consumed_by == joins[first]
        assert invites[loser.lower().encode() * 32].consumed_by is None
        assert {m.name for m in peer.group.state.members.values()} == {"A", "B", first}
