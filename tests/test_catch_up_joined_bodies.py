"""What ``GroupReplica.receive_batch`` reports as joined (``Received.accepted``) carries each
entry's body as the store holds it: an item's own body, checked against its header, is used
directly; an entry that came without one, or a pending entry an item unblocked, gets the
body the batch carried for it elsewhere or the stored one (``group/intake.py``). Checked on
any order and batching of a real group's entries, with bodies dropped and items repeated."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.feed import GroupId
from microsync.testing import SimNetwork
from microsync.testing.device import SimDevice

Item = tuple[bytes, bytes | None]


def _world(posts: int) -> tuple[GroupId, SimDevice, list[Item]]:
    """Alice and Bob in a group, Alice's posts; Bob has seen none of them."""
    net = SimNetwork(3)
    alice, bob = net.add_device("alice"), net.add_device("bob")
    group = net.create_group(alice, "Den")
    alice.replica(group).add(bob.person_id, bob.name, [bob.grant()], now=net.clock.advance())
    net.settle(group)
    known = {s.entry.id for a in bob.store.feeds(group) for s in bob.store.entries(group, a)}
    for n in range(posts):
        text = AppOp(Kind.POST, text=f"post {n}").to_bytes()
        alice.replica(group).append_content(APP_TYPE, text, now=net.clock.advance())
    items = [
        (s.entry.wire, s.body)
        for a in alice.store.feeds(group)
        for s in alice.store.entries(group, a)
        if s.entry.id not in known
    ]
    return group, bob, items


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    batch=st.sampled_from([1, 3, 7, 50]),
    dropped=st.floats(0, 0.5),
    repeated=st.floats(0, 0.3),
)
def test_every_joined_entry_carries_the_body_the_store_holds(
    seed: int, batch: int, dropped: float, repeated: float
) -> None:
    group, bob, items = _world(posts=30)
    rng = random.Random(seed)
    sent = [(w, None if rng.random() < dropped else b) for w, b in items]
    sent += [rng.choice(items) for _ in range(int(len(items) * repeated))]  # bodies with them
    rng.shuffle(sent)
    joined = []
    for start in range(0, len(sent), batch):
        joined += bob.replica(group).receive_batch(sent[start : start + batch]).accepted
    assert len({s.entry.id for s in joined}) == len(joined) == len(items)
    for s in joined:
        h = s.entry.header
        stored = bob.store.entry_at(group, h.device, h.seq)
        assert stored is not None and stored.entry.id == s.entry.id
        assert s.body == stored.body


def test_a_refused_copys_body_is_never_reported_as_the_entrys() -> None:
    """Hostile: an entry sent without its body, and a copy of it with another body (which its
    header's hash refuses), in one batch, in and out of order: nothing reports that body."""
    group, bob, items = _world(posts=4)
    forged = b"\x00" * 80
    first, second, third = items[0], items[1], items[2]
    batch = [
        (third[0], None),  # waits for the second; promoted when it arrives
        (third[0], forged),
        first,
        (first[0], forged),
        (second[0], forged),
        second,
    ]
    received = bob.replica(group).receive_batch(batch)
    assert len(received.accepted) == 3
    assert all(s.body != forged for s in received.accepted)
    for s in received.accepted:
        h = s.entry.header
        stored = bob.store.entry_at(group, h.device, h.seq)
        assert stored is not None and s.body == stored.body
