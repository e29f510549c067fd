"""Moderation on simulated devices (``microsync.testing``): an admin deletes anyone's post or
hides a member's posts for everyone; a non-admin's moderation, or one written after its
author's demotion, is void on every replica, whatever the delivery order; the admin check is
made at the moderating entry's own position in its feed (docs/app.md, "Moderation")."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.app.ops import APP_TYPE, AppOp, DeleteOp, HideOp, PostOp
from microsync.feed.entry import Entry, GroupId, parse_entry
from microsync.group.ops import Role
from microsync.testing import Hostile, SimDevice, SimNetwork, app_view

ORDERS = ("random", "in_order", "newest_first")


def family(net: SimNetwork, *names: str, admins: str = "") -> tuple[GroupId, list[SimDevice]]:
    devices = [net.add_device(n) for n in names]
    group = net.create_group(devices[0], "Family")
    for device in devices[1:]:
        role = Role.ADMIN if device.name in admins else Role.MEMBER
        devices[0].replica(group).add(
            device.person_id, device.name, [device.grant()], role=role, now=net.clock.advance()
        )
    net.settle(group)
    return group, devices


def write(net: SimNetwork, device: SimDevice, group: GroupId, op: AppOp, *deps: Entry) -> Entry:
    replica = device.replica(group)
    return replica.append_content(
        APP_TYPE, op.to_bytes(), now=net.clock.advance(), deps=[d.id for d in deps]
    )


def shown(device: SimDevice, group: GroupId) -> list[str]:
    return sorted(p.text or "" for p in app_view(device, group).timeline.visible())


def digests(devices: list[SimDevice], group: GroupId) -> set[tuple[object, ...]]:
    return {app_view(d, group).digest() for d in devices}


def test_an_admin_deletes_someone_elses_post_for_everyone() -> None:
    net = SimNetwork(seed=31)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    post = write(net, carol, group, PostOp(text="spam"))
    write(net, carol, group, PostOp(text="hello"))
    net.settle(group)
    delete = write(net, alice, group, DeleteOp(post=post.id), post)
    net.settle(group)
    for device in (alice, bob, carol):
        assert shown(device, group) == ["hello"]
        timeline = app_view(device, group).timeline
        assert timeline.posts[post.id].deleted and delete.id not in timeline.rejected
    assert len(digests([alice, bob, carol], group)) == 1


def test_a_members_forged_moderation_is_void_everywhere() -> None:
    """Bob's device, modified, writes a validly signed delete of Alice's post and a hide of
    Carol's posts: every replica refuses both (Bob is no admin at their position)."""
    net = SimNetwork(seed=32)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    post = write(net, alice, group, PostOp(text="rules"))
    mine = write(net, carol, group, PostOp(text="cake"))
    net.settle(group)
    evil = Hostile.of_sim(bob, group)
    forged = [
        evil.append_content(APP_TYPE, DeleteOp(post=post.id).to_bytes(), hlc=9, deps=[post.id]),
        evil.append_content(
            APP_TYPE, HideOp(upto=((carol.device_id, 99),)).to_bytes(), hlc=9, deps=[]
        ),
    ]
    net.settle(group)
    for device in (alice, bob, carol):
        assert shown(device, group) == ["cake", "rules"]
        assert {f.id for f in forged} <= app_view(device, group).timeline.rejected
    assert mine.id in app_view(alice, group).timeline.posts


def test_a_delete_written_after_the_authors_demotion_is_void_one_before_counts() -> None:
    """Bob, an admin, deletes one post; Alice demotes him naming his feed head; Bob, not having
    heard, deletes another. The first counts everywhere, the second nowhere."""
    net = SimNetwork(seed=33)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol", admins="bob")
    one = write(net, carol, group, PostOp(text="one"))
    two = write(net, carol, group, PostOp(text="two"))
    net.settle(group)
    write(net, bob, group, DeleteOp(post=one.id), one)
    net.settle(group)
    alice.replica(group).set_role(bob.person_id, Role.MEMBER, now=net.clock.advance())
    late = write(net, bob, group, DeleteOp(post=two.id), two)  # bob has not heard yet
    net.deliver(bob, carol, group)  # carol sees the late delete before the demotion ...
    assert shown(carol, group) == []
    net.settle(group)  # ... and then the demotion, which reaches back over it
    for device in (alice, bob, carol):
        assert shown(device, group) == ["two"]
        assert late.id in app_view(device, group).timeline.rejected
    assert len(digests([alice, bob, carol], group)) == 1


def test_a_promotion_seen_late_makes_the_delete_count() -> None:
    net = SimNetwork(seed=34)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    post = write(net, carol, group, PostOp(text="spam"))
    net.settle(group)
    alice.replica(group).set_role(bob.person_id, Role.ADMIN, now=net.clock.advance())
    net.deliver(alice, bob, group, order="in_order")
    write(net, bob, group, DeleteOp(post=post.id), post)
    own = [
        i for i in net.outbox(bob, carol, group) if parse_entry(i[0]).header.device == bob.device_id
    ]
    carol.replica(group).receive(own)  # carol: bob's delete, not alice's promotion
    assert shown(carol, group) == ["spam"]
    net.settle(group)
    assert shown(carol, group) == [] == shown(alice, group)


def test_a_hide_covers_posts_that_arrive_after_it() -> None:
    """Alice removes Carol and hides what she wrote; Bob gets the hide before one of Carol's
    posts (written before her removal): it is hidden on arrival, as everywhere."""
    net = SimNetwork(seed=35)
    group, (alice, bob, carol) = family(net, "alice", "bob", "carol")
    first = write(net, carol, group, PostOp(text="first"))
    net.deliver(carol, alice, group, order="in_order")
    write(net, carol, group, PostOp(text="second"))
    net.deliver(carol, alice, group, order="in_order")
    removal = alice.replica(group).remove(carol.person_id, now=net.clock.advance())
    [(device, seq)] = [p for p in alice.replica(group).operation(removal.id).op.positions]  # type: ignore[union-attr]
    write(net, alice, group, HideOp(upto=((device, seq),)))
    net.deliver(alice, bob, group, order="newest_first")
    net.settle(group)
    for viewer in (alice, bob):
        assert shown(viewer, group) == []
        assert app_view(viewer, group).timeline.posts[first.id].deleted
    assert len(digests([alice, bob], group)) == 1


# --------------------------------------------------------------------------- convergence


def _history(net: SimNetwork) -> tuple[GroupId, list[SimDevice]]:
    """Concurrent moderation of every kind, mostly not delivered yet: Bob (admin) deletes
    Carol's post, Alice sees it and demotes him, and he deletes another not having heard;
    Dave (member) forges a delete and a hide; Alice hides Dave's posts; Carol deletes her
    own."""
    group, devices = family(net, "alice", "bob", "carol", "dave", admins="bob")
    alice, bob, carol, dave = devices
    posts = [write(net, carol, group, PostOp(text=f"c{i}")) for i in range(3)]
    posts += [write(net, dave, group, PostOp(text=f"d{i}")) for i in range(2)]
    posts.append(write(net, alice, group, PostOp(text="a0")))
    net.settle(group)
    write(net, bob, group, DeleteOp(post=posts[0].id), posts[0])
    net.deliver(bob, alice, group, order="in_order")  # alice demotes him after seeing it
    alice.replica(group).set_role(bob.person_id, Role.MEMBER, now=net.clock.advance())
    write(net, bob, group, DeleteOp(post=posts[1].id), posts[1])
    evil = Hostile.of_sim(dave, group)
    evil.append_content(APP_TYPE, DeleteOp(post=posts[5].id).to_bytes(), deps=[posts[5].id])
    evil.append_content(APP_TYPE, HideOp(upto=((carol.device_id, 50),)).to_bytes())
    write(net, alice, group, HideOp(upto=((dave.device_id, posts[4].header.seq),)))
    write(net, carol, group, DeleteOp(post=posts[2].id), posts[2])
    return group, devices


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from(ORDERS))),
)
def test_moderation_converges_under_any_delivery(
    seed: int, steps: list[tuple[int, int, str]]
) -> None:
    net = SimNetwork(seed=seed)
    group, devices = _history(net)
    for src, dst, order in steps:
        if src != dst:
            net.deliver(devices[src], devices[dst], group, order=order)  # type: ignore[arg-type]
            app_view(devices[dst], group)  # fold as it goes: arrival order matters
    net.settle(group)
    assert len(digests(devices, group)) == 1
    fresh = {app_view(d, group, fresh=True).digest() for d in devices}
    assert fresh == digests(devices, group)  # a restart shows the same
    assert shown(devices[0], group) == ["a0", "c1"]


@pytest.mark.parametrize("order", ORDERS)
def test_the_history_shows_what_the_rules_say(order: str) -> None:
    net = SimNetwork(seed=36)
    group, devices = _history(net)
    for src in devices:
        for dst in devices:
            if src is not dst:
                net.deliver(src, dst, group, order=order)  # type: ignore[arg-type]
    net.settle(group)
    # c0: bob's delete before his demotion; c1: his delete after it, void; c2: carol's own;
    # d0, d1: alice's hide; a0: dave's forged delete is void, as is his hide of carol's posts
    for device in devices:
        assert shown(device, group) == ["a0", "c1"]
