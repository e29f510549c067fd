"""Membership resolution (microsync.group.membership): a function of the SET of operations,
and each concurrent case of docs/membership.md, played out between replicas on memory stores."""

from __future__ import annotations

import functools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.errors import DecryptionError, NotAMember
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.feed.trust import add_certificate
from microsync.group.membership import (
    INVITE_CLOCK_TOLERANCE_MS,
    OpRecord,
    group_id_for,
    resolve,
)
from microsync.group.ops import Role
from microsync.identity import DeviceRevocation
from tests.group_helpers import (
    Item,
    Peer,
    attach,
    found,
    group_of,
    items_of,
    make_peers,
    outsider,
    second_device,
    stored_entry,
    sync,
    sync_all,
)

FAR = 10**12  # an invite expiry nobody reaches


def converged(peers: list[Peer]) -> None:
    sync_all(peers)
    first = peers[0].group
    for peer in peers[1:]:
        assert peer.group.state.signature() == first.state.signature()
        assert peer.group.resolution.effective == first.resolution.effective
        assert peer.group.resolution.order == first.resolution.order


def members(peer: Peer) -> dict[str, Role]:
    return {m.name: m.role for m in peer.group.state.members.values()}


def readable(reader: Peer, writer: Peer, entry: Entry) -> bytes | None:
    sync(writer, reader)
    try:
        return reader.group.decrypt(stored_entry(reader.store, entry))
    except DecryptionError:
        return None


# --------------------------------------------------------------------------- order independence


@functools.cache
def busy_history() -> tuple[GroupId, dict[EntryId, OpRecord], list[Item], str]:
    """A history with every kind of race in it, as seen by an observer who never acts.

    Returns the group, the observer's opened records, every entry, and the observer's name.
    """
    a, b, c, d, e, o = peers = group_of("A", "B", "C", "D", "E", "O", admins="ABC")
    for peer in peers:
        sync(a, peer)
    a.group.create_invite(b"i" * 32, expires_at=FAR, role=Role.MEMBER, now=10)
    sync_all(peers)
    x, y, z = make_peers("X", "Y", "Z")
    for peer in peers:
        for new in (x, y, z):
            add_certificate(peer.store, new.identity.certificate)
    # a round of concurrent operations, none seeing the others
    a.group.remove(b.person, now=20)  # A removes B; B may not remove A, who outranks B
    with pytest.raises(NotAMember):
        b.group.remove(a.person, now=20)
    c.group.set_role(d.person, Role.ADMIN, now=20)  # promote racing ...
    c.group.add(x.person, "X", [x.member.grant()], invite_id=b"i" * 32, now=20)
    d.group.rotate(now=20)  # ... a rotation
    e.group.leave(now=21)
    sync_all(peers)
    # a second round: the one admin left acts, with a concurrent rotation
    c.group.add(y.person, "Y", [y.member.grant()], now=30)
    d.group.rotate(now=30)
    sync_all(peers)
    records = {i: o.group.operation(i) for i in o.group.resolution.order}
    assert all(r is not None for r in records.values())
    assert not o.group.locked()
    items = [it for p in peers for it in items_of(p.store, a.group.id)]
    return a.group.id, records, items, "O"  # type: ignore[return-value]


def test_busy_history_resolves_as_documented() -> None:
    group, records, _, _ = busy_history()
    state = resolve(group, records).state
    names = {m.name: m.role for m in state.members.values()}
    # A removed B; E left; X came in on the invite; Y was added by C
    assert names == {
        "A": Role.ADMIN,
        "C": Role.ADMIN,
        "D": Role.ADMIN,
        "O": Role.MEMBER,
        "X": Role.MEMBER,
        "Y": Role.MEMBER,
    }
    assert state.invites[b"i" * 32].consumed_by is not None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_resolve_is_a_function_of_the_set(rnd: random.Random) -> None:
    group, records, _, _ = busy_history()
    reference = resolve(group, records)
    ids = list(records)
    rnd.shuffle(ids)
    shuffled = resolve(group, {i: records[i] for i in ids})
    assert shuffled.state.signature() == reference.state.signature()
    assert shuffled.effective == reference.effective
    assert shuffled.order == reference.order
    assert shuffled.state.current_epoch() == reference.state.current_epoch()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False))
def test_a_causally_closed_subset_resolves_the_same_in_any_order(rnd: random.Random) -> None:
    group, records, _, _ = busy_history()
    order = resolve(group, records).order
    prefix = set(order[: rnd.randint(1, len(order))])  # a topological prefix is closed
    ids = list(prefix)
    rnd.shuffle(ids)
    first = resolve(group, {i: records[i] for i in ids})
    rnd.shuffle(ids)
    second = resolve(group, {i: records[i] for i in ids})
    assert first.state.signature() == second.state.signature()
    assert first.effective == second.effective


def test_ops_with_missing_dependencies_are_left_out() -> None:
    group, records, _, _ = busy_history()
    order = resolve(group, records).order
    dropped = order[1]  # the founder's first add: everything after depends on it
    partial = resolve(group, {i: r for i, r in records.items() if i != dropped})
    assert partial.order == (order[0],)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_replicas_receiving_in_any_order_converge(rnd: random.Random, batch: int) -> None:
    group, records, items, name = busy_history()
    reference = resolve(group, records)
    [observer] = make_peers(name)  # the same device on a fresh, empty store
    for other in make_peers("A", "B", "C", "D", "E", "X", "Y", "Z"):
        add_certificate(observer.store, other.identity.certificate)
    replica = attach(observer, group)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    for start in range(0, len(shuffled), batch):
        replica.receive(shuffled[start : start + batch])
    assert replica.state.signature() == reference.state.signature()
    assert replica.resolution.effective == reference.effective
    assert not replica.locked()
    assert replica.current_epoch_key() is not None


# --------------------------------------------------------------------------- concurrent cases


def test_admins_of_one_rank_cannot_remove_or_demote_each_other() -> None:
    """B and C were both made admins by the founder A: neither may take the other's rights
    (so two admins can never remove each other at once); A may remove either."""
    a, b, c = peers = group_of("A", "B", "C", admins="ABC")
    with pytest.raises(NotAMember, match="cannot remove C: an admin may remove only"):
        b.group.remove(c.person, now=10)
    with pytest.raises(NotAMember):
        c.group.set_role(b.person, Role.MEMBER, now=10)
    with pytest.raises(NotAMember):
        b.group.remove(a.person, now=10)
    converged(peers)
    assert members(a) == {"A": Role.ADMIN, "B": Role.ADMIN, "C": Role.ADMIN}
    a.group.remove(b.person, now=11)
    converged(peers)
    assert members(c) == {"A": Role.ADMIN, "C": Role.ADMIN}


def test_whoever_an_admin_makes_admin_ranks_below_it() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="AB")
    b.group.set_role(c.person, Role.ADMIN, now=10)  # C: rank 2, below B (rank 1)
    converged(peers)
    assert [a.group.state.members[p.person].rank for p in peers] == [0, 1, 2]
    with pytest.raises(NotAMember):
        c.group.remove(b.person, now=11)
    b.group.set_role(c.person, Role.MEMBER, now=12)
    converged(peers)
    assert members(a) == {"A": Role.ADMIN, "B": Role.ADMIN, "C": Role.MEMBER}


def test_what_a_removed_admin_wrote_before_it_knew_does_not_count() -> None:
    """A removes B while B, not knowing, removes C: B's removal lies past the cut-off A's
    removal drew through B's feed, so it counts nowhere, whatever it declares."""
    a, b, c, d = peers = group_of("A", "B", "C", "D", admins="AB")
    removal = a.group.remove(b.person, now=10)
    late = b.group.remove(c.person, now=10)
    post = b.group.append_content(100, b"concurrent", now=10)
    converged(peers)
    for peer in (a, c, d):
        assert members(peer) == {"A": Role.ADMIN, "C": Role.MEMBER, "D": Role.MEMBER}
        assert removal.id in peer.group.resolution.effective
        assert late.id not in peer.group.resolution.effective
        assert not peer.group.state.counts(b.device, post.header.seq)


def test_a_rotation_racing_a_removal_never_reaches_the_removed_member() -> None:
    """A removes B while C, not having seen it, rotates to everyone (B included). Whichever
    wins, what A writes afterwards must stay closed to B. (With these seeds, seed s10 leaks.)"""
    leaks = []
    for seed in range(12):
        a, b, c = peers = group_of("A", "B", "C", seed=f"s{seed}")
        a.group.remove(b.person, now=10)
        c.group.rotate(now=10)
        converged(peers)
        entry = a.group.append_content(100, b"secret", now=11)
        if readable(b, a, entry) is not None:
            leaks.append(seed)
    assert leaks == []


def test_an_add_racing_a_remove_of_the_same_person_loses() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="ABC")
    d = outsider(peers, "D")
    a.group.add(d.person, "D", [d.member.grant()], now=10)
    sync(a, b)
    removal = b.group.remove(d.person, now=11)  # B saw the add and removes D
    readd = c.group.add(d.person, "D", [d.member.grant()], now=11)  # C saw neither
    assert d.person in c.group.state.members  # valid in its causal past
    converged(peers)
    for peer in peers:
        assert d.person not in peer.group.state.members
        assert removal.id in peer.group.resolution.effective
        assert readd.id not in peer.group.resolution.effective
        assert d.device not in peer.group.state.entitled_devices()


def test_a_promote_racing_a_demote_loses() -> None:
    a, _b, c, d = peers = group_of("A", "B", "C", "D", admins="ABC")
    a.group.set_role(d.person, Role.ADMIN, now=10)
    demote = a.group.set_role(d.person, Role.MEMBER, now=11)  # A saw its own promote
    promote = c.group.set_role(d.person, Role.ADMIN, now=11)  # C saw neither
    converged(peers)
    for peer in peers:
        assert members(peer)["D"] is Role.MEMBER
        assert demote.id in peer.group.resolution.effective
        assert promote.id not in peer.group.resolution.effective
    with pytest.raises(NotAMember):  # D is not an admin anywhere, its own device included
        d.group.set_role(c.person, Role.MEMBER, now=12)


def test_an_add_by_an_admin_concurrently_removed_is_void() -> None:
    a, b, c = peers = group_of("A", "B", "C", admins="AB")
    d = outsider(peers, "D")
    removal = a.group.remove(b.person, now=10)
    add = b.group.add(d.person, "D", [d.member.grant()], now=10)
    converged(peers)
    for peer in (a, c):
        assert members(peer) == {"A": Role.ADMIN, "C": Role.MEMBER}
        assert add.id not in peer.group.resolution.effective
        assert removal.id in peer.group.resolution.effective
    # the would-be joiner gets no key of the epoch the removal started
    sync(b, d)
    entry = a.group.append_content(100, b"after", now=11)
    assert readable(d, a, entry) is None
    assert not d.group.is_member


def test_a_demoted_admins_concurrent_add_is_void() -> None:
    a, b, _c = peers = group_of("A", "B", "C", admins="AB")
    d = outsider(peers, "D")
    demote = a.group.set_role(b.person, Role.MEMBER, now=10)
    add = b.group.add(d.person, "D", [d.member.grant()], now=10)
    converged(peers)
    for peer in peers:
        assert members(peer) == {"A": Role.ADMIN, "B": Role.MEMBER, "C": Role.MEMBER}
        assert add.id not in peer.group.resolution.effective
        assert demote.id in peer.group.resolution.effective


def test_an_add_made_after_seeing_ones_own_demotion_is_refused() -> None:
    a, b = peers = group_of("A", "B", admins="AB")
    d = outsider(peers, "D")
    a.group.set_role(b.person, Role.MEMBER, now=10)
    sync(a, b)
    dump = b.store.dump()
    with pytest.raises(NotAMember):
        b.group.add(d.person, "D", [d.member.grant()], now=11)
    assert b.store.dump() == dump


def test_concurrent_rotations_pick_the_smallest_commitment_and_keep_both() -> None:
    a, b, c = peers = group_of("A", "B", "C")
    rotations = [a.group.rotate(now=10), b.group.rotate(now=10)]
    # each writes under its own new epoch before hearing of the other
    written = [
        (a, a.group.append_content(100, b"from A", now=11)),
        (b, b.group.append_content(100, b"from B", now=11)),
    ]
    converged(peers)
    state = c.group.state
    top = [e for (n, _), e in state.epochs.items() if n == 1]
    assert len(top) == 2 and {e.op for e in top} == {r.id for r in rotations}
    winner = min(top, key=lambda e: e.commitment)
    for peer in peers:
        assert peer.group.state.current_epoch() == winner
        key = peer.group.current_epoch_key()
        assert key is not None and key.commitment == winner.commitment
        held = peer.group.epoch_keys()
        assert all(held[(e.number, e.commitment)].root is not None for e in top)
        for writer, entry in written:
            assert readable(peer, writer, entry) in (b"from A", b"from B")


def test_a_leave_makes_the_next_writer_rotate_without_the_leaver() -> None:
    a, b, c = peers = group_of("A", "B", "C")
    a.group.rotate(now=9)  # the current epoch is wrapped to all three
    sync(a, b, c)
    leave = c.group.leave(now=10)
    converged(peers)
    for peer in peers:
        assert leave.id in peer.group.resolution.effective
        assert peer.group.state.current_epoch() is None
        assert "C" not in members(peer)
    assert not c.group.is_member
    with pytest.raises(NotAMember):
        c.group.rotate(now=11)
    entry = a.group.append_content(100, b"without C", now=11)
    assert a.group.state.max_epoch == 2
    current = a.group.state.current_epoch()
    assert current is not None and c.device not in current.recipients
    assert readable(b, a, entry) == b"without C"
    assert readable(c, a, entry) is None


def test_a_member_added_without_rotation_cannot_read_after_leaving() -> None:
    a, _b, c = peers = group_of("A", "B", "C")  # B and C hold epoch 0 from their adds
    c.group.leave(now=10)
    converged(peers)
    entry = a.group.append_content(100, b"without C", now=11)
    assert readable(c, a, entry) is None


def test_a_revoked_devices_ops_after_the_cutoff_are_void() -> None:
    a, b = peers = group_of("A", "B")
    tablet = second_device(peers, a, "A-tablet")
    a.group.add_device(tablet.member.grant(), now=10)
    sync(a, b, tablet)
    before = tablet.group.rotate(now=11)  # seen by A before the revocation: stays
    sync(tablet, a)
    assert a.group.store.feed_status(a.group.id, tablet.device).head_seq == before.header.seq
    assert a.identity.person_key is not None
    revocation = DeviceRevocation.issue(a.identity.person_key, tablet.device, 12)
    revoke = a.group.revoke_device(revocation, now=12)
    after = tablet.group.create_invite(b"t" * 32, expires_at=FAR, role=Role.MEMBER, now=12)
    assert after.header.seq > before.header.seq
    converged([a, b, tablet])
    for peer in (a, b):
        res = peer.group.resolution
        assert before.id in res.effective and revoke.id in res.effective
        assert after.id not in res.effective
        assert b"t" * 32 not in peer.group.state.invites
        assert peer.group.state.revoked == {tablet.device: before.header.seq}
        assert tablet.device not in peer.group.state.entitled_devices()
    entry = a.group.append_content(100, b"post-revocation", now=13)
    assert readable(tablet, a, entry) is None
    assert readable(b, a, entry) == b"post-revocation"


def test_an_invite_consumed_twice_concurrently_admits_only_the_first() -> None:
    a, b = peers = group_of("A", "B", admins="AB")
    d, e = outsider(peers, "D"), outsider(peers, "E")
    a.group.create_invite(b"i" * 32, expires_at=FAR, role=Role.MEMBER, now=10)
    sync(a, b)
    adds = {
        "D": a.group.add(d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=11),
        "E": b.group.add(e.person, "E", [e.member.grant()], invite_id=b"i" * 32, now=11),
    }
    converged(peers)
    order = a.group.resolution.order
    first = min(adds, key=lambda n: order.index(adds[n].id))
    second = "E" if first == "D" else "D"
    for peer in peers:
        res = peer.group.resolution
        assert adds[first].id in res.effective and adds[second].id not in res.effective
        assert first in members(peer) and second not in members(peer)
        assert peer.group.state.invites[b"i" * 32].consumed_by == adds[first].id


def test_a_revoked_invite_cannot_be_consumed() -> None:
    a, b = peers = group_of("A", "B", admins="AB")
    d = outsider(peers, "D")
    a.group.create_invite(b"i" * 32, expires_at=FAR, role=Role.MEMBER, now=10)
    a.group.revoke_invite(b"i" * 32, now=11)
    sync(a, b)
    dump = b.store.dump()
    with pytest.raises(NotAMember):
        b.group.add(d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=12)
    assert b.store.dump() == dump
    assert "D" not in members(b)


@pytest.mark.parametrize("seed", [f"r{i}" for i in range(6)])  # both orders of the two ops
def test_an_invite_revoked_concurrently_with_its_consumption_admits_no_one(seed: str) -> None:
    a, b = peers = group_of("A", "B", admins="AB", seed=seed)
    d = outsider(peers, "D")
    a.group.create_invite(b"i" * 32, expires_at=FAR, role=Role.MEMBER, now=10)
    sync(a, b)
    revoke = a.group.revoke_invite(b"i" * 32, now=11)
    add = b.group.add(d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=11)
    converged(peers)
    for peer in peers:
        assert revoke.id in peer.group.resolution.effective
        assert add.id not in peer.group.resolution.effective
        assert "D" not in members(peer)


@pytest.mark.parametrize(
    ("late_by", "admitted"),
    [
        (-1, True),
        (0, True),
        (INVITE_CLOCK_TOLERANCE_MS, True),
        (INVITE_CLOCK_TOLERANCE_MS + 1, False),
    ],
)
def test_invite_expiry_with_clock_tolerance(late_by: int, admitted: bool) -> None:
    a, b = peers = group_of("A", "B", admins="AB")
    d = outsider(peers, "D")
    expires = 50_000
    a.group.create_invite(b"i" * 32, expires_at=expires, role=Role.MEMBER, now=10)
    sync(a, b)
    if admitted:
        b.group.add(d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=expires + late_by)
        converged(peers)
        assert "D" in members(a)
    else:
        with pytest.raises(NotAMember):
            b.group.add(
                d.person, "D", [d.member.grant()], invite_id=b"i" * 32, now=expires + late_by
            )
        assert "D" not in members(b)


def test_an_invites_role_is_what_it_grants() -> None:
    a, _b = peers = group_of("A", "B", admins="AB")
    d = outsider(peers, "D")
    a.group.create_invite(b"i" * 32, expires_at=FAR, role=Role.MEMBER, now=10)
    with pytest.raises(NotAMember):
        a.group.add(d.person, "D", [d.member.grant()], role=Role.ADMIN, invite_id=b"i" * 32, now=11)


def test_group_id_binds_the_founder_and_nonce() -> None:
    [a] = make_peers("A")
    group = found(a)
    genesis = a.group.operation(a.group.resolution.order[0])
    assert genesis is not None and genesis.op.nonce is not None
    assert group == group_id_for(a.device, genesis.op.nonce)  # type: ignore[arg-type]
    assert group != group_id_for(make_peers("B")[0].device, genesis.op.nonce)  # type: ignore[arg-type]
