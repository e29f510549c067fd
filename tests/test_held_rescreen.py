"""Held entries cost what a batch can admit (issue 19; the keeper catch-up of issue 16).

A new member's entries may all arrive before the add that admits its device (a keeper pull
oldest first). Each batch must not re-screen everything already held, nor verify a held
entry's signature a second time when it is finally stored; and whatever the arrival order
and batching, the receiver ends with the same store as one receiving in causal order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nacl.bindings
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.errors import HeldQuotaExceeded
from microsync.feed import GroupId, Ingested, Outcome
from microsync.group.held import HeldLimits, HeldUsage
from microsync.group.ops import Role
from microsync.testing import SimNetwork
from microsync.testing.device import SimDevice

Item = tuple[bytes, bytes | None]


def world(posts: int, seed: int = 7) -> tuple[GroupId, SimDevice, SimDevice, list[Item]]:
    """Alice, Bob and Dan in a group; Alice then adds Carol, who posts ``posts`` times. Bob
    and Dan have seen none of that: returns the items Alice holds that they lack, Carol's
    posts first and her add last (the worst order)."""
    net = SimNetwork(seed)
    alice, bob, dan, carol = (net.add_device(n) for n in ("alice", "bob", "dan", "carol"))
    group = net.create_group(alice, "Den")
    for person in (bob, dan):
        alice.replica(group).add(
            person.person_id, person.name, [person.grant()], now=net.clock.advance()
        )
    net.settle(group)
    known = {s.entry.id for a in bob.store.feeds(group) for s in bob.store.entries(group, a)}
    alice.replica(group).add(
        carol.person_id, "Carol", [carol.grant()], role=Role.MEMBER, now=net.clock.advance()
    )
    net.deliver(alice, carol, group, order="in_order")
    for n in range(posts):
        text = AppOp(Kind.POST, text=f"post {n}").to_bytes()
        carol.replica(group).append_content(APP_TYPE, text, now=net.clock.advance())
    net.deliver(carol, alice, group, order="in_order")
    new = [
        s
        for a in alice.store.feeds(group)
        for s in alice.store.entries(group, a)
        if s.entry.id not in known
    ]
    new.sort(key=lambda s: s.entry.header.device != carol.device_id)  # Carol's first
    return group, bob, dan, [(s.entry.wire, s.body) for s in new]


def feeds(device: SimDevice, group: GroupId) -> dict[bytes, list[bytes]]:
    return {
        a: [s.entry.wire + (s.body or b"") for s in device.store.entries(group, a)]
        for a in device.store.feeds(group)
    }


def receive(device: SimDevice, group: GroupId, items: list[Item], batch: int) -> None:
    for start in range(0, len(items), batch):
        device.replica(group).receive(items[start : start + batch])


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    calls = [0]
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_each_held_entry_is_screened_and_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    group, bob, dan, items = world(posts=300)
    dan.replica(group).receive(items)  # the reference: one batch (it settles at once)
    screened = counting(monkeypatch, HeldUsage, "add")
    verified = counting(monkeypatch, nacl.bindings, "crypto_sign_open")
    receive(bob, group, items, batch=16)  # 19 batches of Carol's posts held, then her add
    assert feeds(bob, group) == feeds(dan, group)
    assert max(len(f) for f in feeds(bob, group).values()) == 300  # Carol's feed, all of it
    held = (len(items) - 1) // 16 * 16  # the last batch, with the add, is stored at once
    assert screened[0] == held  # each held entry counted once, not once per later batch
    assert verified[0] <= len(items) + 2  # each signature once (was twice for Carol's posts)
    assert bob.replica(group)._intake._held == {}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.randoms(use_true_random=False), batch=st.sampled_from([1, 5, 16, 400]))
def test_any_order_and_batching_stores_the_same(order: Any, batch: int) -> None:
    group, bob, dan, items = world(posts=40)
    dan.replica(group).receive(sorted(items, key=lambda i: i[0] != items[-1][0]))
    shuffled = list(items)
    order.shuffle(shuffled)
    receive(bob, group, shuffled, batch)
    assert feeds(bob, group) == feeds(dan, group)
    assert bob.replica(group)._intake._held == {}


def test_the_held_bounds_still_hold_across_batches() -> None:
    group, bob, _dan, items = world(posts=30)
    replica = bob.replica(group)
    replica.held_limits = HeldLimits(entries=12, bytes=2**20)
    results = []
    for start in range(0, 30, 5):
        results += replica.receive(items[start : start + 5])
    held = [r for r in results if isinstance(r, Ingested) and r.outcome is Outcome.HELD]
    assert len(held) == 12
    assert sum(isinstance(r, HeldQuotaExceeded) for r in results) == 18
    [added] = replica.receive(items[-1:])  # the add: the 12 held are stored, no more
    assert isinstance(added, Ingested)
    assert len(added.accepted) == 1 + 12  # the add, then what was held, and no more
    assert sorted(len(f) for f in feeds(bob, group).values())[-1] == 12
    assert replica._intake._held == {}


def test_a_batch_says_whether_it_found_a_fork() -> None:
    from microsync.testing.hostile import Hostile
    from tests.test_hostile_members import family

    net = SimNetwork(3)
    group, (_alice, mallory, bob) = family(net, "alice", "mallory", "bob")
    evil = Hostile.of_sim(mallory, group)
    first = evil.append_content(APP_TYPE, AppOp(Kind.POST, text="one").to_bytes())
    seq = first.header.seq
    epoch, body = evil.seal_content(APP_TYPE, AppOp(Kind.POST, text="two").to_bytes(), seq=seq)
    second = evil.craft(type=APP_TYPE, body=body, epoch=epoch, seq=seq)
    stored = mallory.store.entry_at(group, first.header.device, seq)
    assert stored is not None
    replica = bob.replica(group)
    plain = replica.receive_batch([(first.wire, stored.body)], peer=mallory.device_id)
    assert not plain.forked
    forked = replica.receive_batch([(second.wire, body)], peer=mallory.device_id)
    assert forked.forked
    [result] = forked.results
    assert isinstance(result, Ingested) and result.outcome is Outcome.FORK
    assert bob.store.feeds(group)[first.header.device].forked_at == seq
