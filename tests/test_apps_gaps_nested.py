"""Nested documents end to end through ``group.doc()`` (issue 18, gap 2): counters inside
maps and inside list elements' maps, lists of records holding lists and maps, on real
devices that edit offline and sync, across a restart; convergence under random edits and
random pairwise syncs (Hypothesis)."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from tests.test_app_group import family_of, share


async def test_a_nested_counter_merges_across_devices_and_a_record_delete_is_add_wins(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        phone, laptop = await family_of(stack, tmp_path, "Phone", "Laptop")
        ana = phone.doc("dex").map("contacts").map("ana")
        await ana.set("birthday", "1990-03-12")
        await ana.counter("calls").add(2)
        share(phone, laptop)
        # offline: the laptop deletes Ana's record while the phone logs one more call
        await laptop.doc("dex").map("contacts").delete("ana")
        await ana.counter("calls").add(1)
        await laptop.doc("dex").map("contacts").map("ben").counter("calls").add(4)
        share(phone, laptop)
        want = {"contacts": {"ana": {"calls": 1}, "ben": {"calls": 4}}}
        for group in (phone, laptop):
            assert group.doc("dex").to_value() == want
            assert group.doc("dex").map("contacts").map("ana").counter("calls").value == 1
        await phone.device.close()
        again = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Phone"))
        assert again.group(phone.id).doc("dex").to_value() == want


async def test_a_list_of_records_with_lists_maps_and_counters_inside(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        trips = alice.doc("plans").list("trips")
        await trips.insert(0, {"where": "Rome"}, {"where": "Oslo"})
        rome = trips.map(0)
        await rome.list("stops").insert(0, "Colosseum", "Forum")
        await rome.map("hotel").set("name", "Sole")
        await rome.counter("nights").add(3)
        share(alice, bob)
        on_bob = bob.doc("plans").list("trips")
        await on_bob.map(0).counter("nights").add(1)  # concurrent with Alice's edits
        await on_bob.map(1).orset("who").add("bob")
        await trips.map(0).list("stops").insert(2, "Trevi")
        await trips.map(0).counter("nights").add(-1)
        share(alice, bob)
        want = [
            {
                "where": "Rome",
                "stops": ["Colosseum", "Forum", "Trevi"],
                "hotel": {"name": "Sole"},
                "nights": 3,
            },
            {"where": "Oslo", "who": ["bob"]},
        ]
        assert alice.doc("plans").to_value() == bob.doc("plans").to_value() == {"trips": want}
        assert on_bob.map(0).value == want[0]
        await on_bob.delete(0)  # the element goes, and its map with it
        share(alice, bob)
        assert alice.doc("plans").to_value() == {"trips": [want[1]]}
        await bob.device.close()
        again = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Bob"))
        assert again.group(bob.id).doc("plans").to_value() == {"trips": [want[1]]}


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 30))
async def test_random_nested_counter_edits_converge(
    tmp_path_factory, seed: int, steps: int
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        groups = await family_of(stack, tmp_path_factory.mktemp("counters"), "A", "B", "C")
        added: dict[str, int] = {}
        for _ in range(steps):
            group = rng.choice(groups)
            who = rng.choice(["ana", "ben"])
            contacts = group.doc("dex").map("contacts")
            roll = rng.random()
            if roll < 0.45:
                delta = rng.choice([-2, 1, 3])
                await contacts.map(who).counter("calls").add(delta)
                added[who] = added.get(who, 0) + delta
            elif roll < 0.55:
                await contacts.delete(who)
            elif roll < 0.62:
                await contacts.map(who).delete("calls")
            elif roll < 0.7:
                await contacts.map(who).set("seen", rng.randint(0, 9))
            else:
                share(*rng.sample(groups, 2))
        share(*groups)
        values = [g.doc("dex").to_value() for g in groups]
        assert values[0] == values[1] == values[2]
        for who in ("ana", "ben"):
            counts = {g.doc("dex").map("contacts").map(who).counter("calls").value for g in groups}
            assert len(counts) == 1
        assert all(g.doc("dex").waiting == 0 for g in groups)
