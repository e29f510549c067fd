"""Outsiders' devices are not stored (issue 13, item 3).

A member (or a removed member) writes entries "by" made-up people into the group: a post by a
forged "Mum" and junk feeds of 40 forged devices, with their certificates handed out at sync.
Only devices a causally valid membership operation of the group admitted may be stored, shown
or forwarded; everything else is held in memory (bounded) or refused with a typed error. A
legitimate member added after the victim last synced is still accepted, whatever order its
entries and its add arrive in.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.errors import BadSignature, HeldQuotaExceeded
from microsync.feed import GroupId, Ingested, Outcome
from microsync.feed.trust import add_certificate
from microsync.group.ops import DeviceGrant, Op, OpKind, Role
from microsync.identity import DeviceCertificate, DeviceId, LocalIdentity
from microsync.testing import SimNetwork, store_of
from microsync.testing.device import SimDevice
from microsync.testing.hostile import Hostile
from tests.test_app_group import family_of, raw_profile_bytes
from tests.test_device_groups import entries, introduce, pair
from tests.test_hostile_members import family

FORGED = 40
JUNK_PER_FEED = 30
JUNK = b"x" * 4000


def post(text: str) -> bytes:
    return AppOp(Kind.POST, text=text).to_bytes()


def plant_outsiders(evil: Hostile) -> list[LocalIdentity]:
    """A post by a made-up "Mum" and 40 made-up devices' junk feeds (one of them also claims
    to add a made-up person), every certificate planted to be handed to peers."""
    mum = evil.forge_identity("Mum")
    evil.plant_certificate(mum.certificate)
    evil.as_device(mum).append_content(APP_TYPE, post("Mum here, new number: 07700 900123"))
    forged = [evil.forge_identity(f"junk {i}") for i in range(FORGED)]
    for identity in forged:
        evil.plant_certificate(identity.certificate)
        writer = evil.as_device(identity)
        for n in range(JUNK_PER_FEED):
            writer.append_content(APP_TYPE, post("junk") + JUNK, hlc=n + 1)
    stranger = evil.forge_identity("Stranger")
    grant = DeviceGrant(stranger.certificate.to_bytes(), stranger.prekey_certificate.to_bytes())
    add = Op(
        kind=OpKind.ADD,
        person=stranger.person_id,
        name="Stranger",
        role=Role.MEMBER,
        devices=(grant,),
    )
    evil.as_device(forged[0]).append_op(add, hlc=JUNK_PER_FEED + 1)
    return [mum, *forged]


def texts(group: microsync.Group) -> list[str]:
    return [p.text for p in group.feed()]


async def test_forged_people_are_not_stored_shown_or_forwarded_over_tcp(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, mallory, bob, carol = await family_of(
            stack, tmp_path, "Alice", "Mallory", "Bob", "Carol"
        )
        victim, third = bob.device, carol.device
        await mallory.post("hello from Mallory")
        forged = plant_outsiders(Hostile.of_group(mallory))
        forged_ids = {i.device_id for i in forged}
        before = len(raw_profile_bytes(victim))
        await mallory.device.start(lan=False, port=0)
        assert mallory.device.port
        await victim.sync_with("127.0.0.1", mallory.device.port)

        held = victim.group(bob.id)
        assert "hello from Mallory" in texts(held)  # the member's own post is stored
        assert not any("Mum" in t or "junk" in t for t in texts(held))  # nothing shown
        stored = set(store_of(victim).feeds(bob.id))
        assert not stored & forged_ids  # nothing stored
        assert all(store_of(victim).certificate(d) is None for d in forged_ids)
        assert victim.refused.get(HeldQuotaExceeded.__name__, 0) > 0  # the typed error
        assert len(raw_profile_bytes(victim)) - before < 512 * 1024  # junk is ~5 MB

        # forwarded: the third device syncs from the victim only
        await victim.start(lan=False, port=0)
        assert victim.port
        await third.sync_with("127.0.0.1", victim.port)
        assert "hello from Mallory" in texts(third.group(carol.id))
        assert not set(store_of(third).feeds(carol.id)) & forged_ids
        assert not any(store_of(victim).certificate(d) for d in forged_ids)
        assert not forged_ids & {_device_of(c) for c in victim.certificates()}
        assert alice.is_member()


def _device_of(certificate: bytes) -> DeviceId:
    return DeviceCertificate.from_bytes(certificate).device


async def test_a_member_added_after_the_last_sync_is_stored_whatever_the_order(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        founder, victim = alice.device, bob.device
        for name in ("Dave", "Erin"):
            joiner = await stack.enter_async_context(
                await microsync.Device.open(tmp_path / name, name=name)
            )
            introduce(founder, joiner)
            invite = await alice.invite(ttl=600)
            response = pair(founder.invite_host().session(), joiner.join_guest(invite.link))
            group = await joiner.finish_join(response)
            joiner.receive(alice.id, entries(founder, alice.id))
            assert group.is_member()
            await group.post(f"hi from {name}")
            founder.receive(alice.id, entries(joiner, alice.id))
        everything = entries(founder, alice.id)
        mine = set(entries(victim, alice.id))
        new = [item for item in everything if item not in mine]
        founder_feed = set(entries_of(founder, alice.id, founder.id))
        adds = [item for item in new if item in founder_feed]
        others = [item for item in new if item not in founder_feed]
        assert others and adds
        victim.receive(alice.id, others)  # Dave's and Erin's entries before their adds
        assert not any("hi from" in t for t in texts(bob))
        victim.receive(alice.id, adds[:1] + others[:1])  # Dave's add, with one of theirs again
        victim.receive(alice.id, adds[1:])  # Erin's add
        assert {"hi from Dave", "hi from Erin"} <= set(texts(bob))
        assert set(store_of(victim).feeds(alice.id)) == set(store_of(founder).feeds(alice.id))


def entries_of(
    device: microsync.Device, group: GroupId, author: DeviceId
) -> list[tuple[bytes, bytes | None]]:
    return [(s.entry.wire, s.body) for s in store_of(device).entries(group, author)]


async def test_a_batch_holding_a_members_entries_and_their_add_stores_both(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        founder, victim = alice.device, bob.device
        dave = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "dave", name="Dave")
        )
        introduce(founder, dave)
        invite = await alice.invite(ttl=600)
        group = await dave.finish_join(
            pair(founder.invite_host().session(), dave.join_guest(invite.link))
        )
        dave.receive(alice.id, entries(founder, alice.id))
        await group.post("hi from Dave")
        founder.receive(alice.id, entries(dave, alice.id))
        new = [i for i in entries(founder, alice.id) if i not in set(entries(victim, alice.id))]
        dave_first = sorted(
            new, key=lambda item: item not in entries_of(founder, alice.id, dave.id)
        )
        victim.receive(alice.id, dave_first)
        assert "hi from Dave" in texts(bob)


# ---------------------------------------------------------------------- sans-IO, any order


def forged_world(seed: int) -> tuple[SimNetwork, GroupId, list[SimDevice], set[DeviceId]]:
    """Alice, Bob and Mallory in a group; Mallory plants 3 forged feeds (certificates copied
    everywhere, as the old handshake did); Alice adds Carol, who posts, after that."""
    net = SimNetwork(seed)
    alice, bob, mallory, carol = (net.add_device(n) for n in ("alice", "bob", "mallory", "carol"))
    group = net.create_group(alice, "Den")
    replica = alice.replica(group)
    for person in (bob, mallory):
        replica.add(person.person_id, person.name, [person.grant()], now=net.clock.advance())
    net.settle(group)
    evil = Hostile.of_sim(mallory, group)
    forged = [evil.forge_identity(f"forged {i}") for i in range(3)]
    for identity in forged:
        for device in net.devices:
            add_certificate(device.store, identity.certificate)
        writer = evil.as_device(identity)
        for n in range(3):
            writer.append_content(APP_TYPE, post(f"junk {n}"), hlc=n + 1)
    replica.add(
        carol.person_id, "Carol", [carol.grant()], role=Role.MEMBER, now=net.clock.advance()
    )
    net.deliver(alice, carol, group, order="in_order")
    carol.replica(group).append_content(APP_TYPE, post("hi from Carol"), now=net.clock.advance())
    return net, group, [alice, bob, mallory, carol], {i.device_id for i in forged}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    rounds=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([1, 3, 50])),
        min_size=1,
        max_size=12,
    ),
)
def test_random_delivery_orders_converge_without_forged_devices(
    seed: int, rounds: list[tuple[int, int, int]]
) -> None:
    net, group, devices, forged = forged_world(seed)
    for src, dst, batch in rounds:
        if src != dst:
            net.deliver(devices[src], devices[dst], group, order="random", batch=batch)
    net.settle(group)
    honest = [d for d in devices if d.name != "mallory"]
    feeds = [
        {a: [s.entry.id for s in d.store.entries(group, a)] for a in d.store.feeds(group)}
        for d in honest
    ]
    assert all(f == feeds[0] for f in feeds)  # the same stores on every member
    assert not set(feeds[0]) & forged  # no forged device stored
    carol = devices[3].device_id
    assert carol in feeds[0]  # the member added later is stored everywhere


def test_held_entries_are_bounded_per_peer_and_per_group() -> None:
    from microsync.group.replica import HeldLimits

    net = SimNetwork(4)
    group, (alice, mallory, bob) = family(net, "alice", "mallory", "bob")
    evil = Hostile.of_sim(mallory, group)
    forged = evil.forge_identity("forged")
    writer = evil.as_device(forged)
    items = []
    for n in range(40):
        entry = writer.append_content(APP_TYPE, post(f"junk {n}"), hlc=n + 1)
        items.append((entry.wire, mallory.store.entry_at(group, forged.device_id, n + 1).body))
    victim = bob.replica(group)
    victim.held_limits = HeldLimits(entries=20, bytes=2**20)
    before = bob.store.dump()
    first = victim.receive(items[:15], peer=mallory.device_id)
    assert all(isinstance(r, Ingested) and r.outcome is Outcome.HELD for r in first[:10])
    assert all(isinstance(r, HeldQuotaExceeded) for r in first[10:])  # half for one peer
    second = victim.receive(items[15:], peer=alice.device_id)
    assert sum(isinstance(r, HeldQuotaExceeded) for r in second) == 25 - 10  # group bound
    assert bob.store.dump() == before  # nothing stored


async def test_junk_stored_before_the_check_is_not_forwarded(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        _, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        legacy = Hostile.of_group(bob)  # what an older version stored on Bob's profile
        forged = legacy.forge_identity("Mum")
        legacy.plant_certificate(forged.certificate)
        legacy.as_device(forged).append_content(APP_TYPE, post("Mum here, new number"))
        await bob.post("hello from Bob")
        await bob.device.start(lan=False, port=0)
        assert bob.device.port
        await carol.device.sync_with("127.0.0.1", bob.device.port)
        assert "hello from Bob" in texts(carol)
        assert forged.device_id not in store_of(carol.device).feeds(carol.id)
        assert store_of(carol.device).certificate(forged.device_id) is None


def test_what_waits_for_admission_is_signed_by_its_device() -> None:
    net = SimNetwork(5)
    group, (_alice, mallory, bob) = family(net, "alice", "mallory", "bob")
    evil = Hostile.of_sim(mallory, group)
    writer = evil.as_device(evil.forge_identity("forged"))
    entry = writer.append_content(APP_TYPE, post("junk"))
    body = mallory.store.entry_at(group, entry.header.device, 1)
    assert body is not None
    forged_signature = entry.wire[:-1] + bytes([entry.wire[-1] ^ 1])
    [bad, good] = bob.replica(group).receive(
        [(forged_signature, body.body), (entry.wire, body.body)], peer=mallory.device_id
    )
    assert isinstance(bad, BadSignature)
    assert isinstance(good, Ingested) and good.outcome is Outcome.HELD
