"""A ``group.doc()`` handle never goes stale (issue 18, gap 3): the app state folds again
when cut-offs or admins move (a member removed, promoted), and a handle an app kept from
before, with the field handles it took from it, still reads and writes the live state."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from tests.test_app_group import family_of, share


async def test_a_handle_held_across_a_removal_reads_and_writes_the_live_state(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, cy = await family_of(stack, tmp_path, "Alice", "Bob", "Cy")
        doc = bob.doc("home")  # held by the app for its whole life
        items = doc.list("items")
        ana = doc.map("contacts").map("ana")
        await items.insert(0, "milk")
        await ana.set("birthday", "03-12")
        share(alice, bob, cy)

        await alice.remove(cy.device.person_id)  # cut-offs move: Bob's app state folds again
        share(alice, bob)
        await alice.doc("home").list("items").insert(1, "eggs")  # after the removal
        share(alice, bob)
        assert items.value == ["milk", "eggs"]  # the old handle sees the write made since

        await items.insert(0, "bread")  # and writes through it land in the live state
        await ana.text("notes").insert(0, "tea")
        await doc.counter("visits").add(2)
        assert doc.to_value()["items"] == ["bread", "milk", "eggs"]
        assert bob.doc("home").to_value() == doc.to_value()
        share(alice, bob)
        assert alice.doc("home").to_value() == {
            "items": ["bread", "milk", "eggs"],
            "contacts": {"ana": {"birthday": "03-12", "notes": "tea"}},
            "visits": 2,
        }
        assert doc.waiting == 0


async def test_a_handle_held_across_a_promotion_stays_live(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        tags = bob.doc("d").orset("tags")
        await tags.add("a")
        share(alice, bob)
        await alice.promote(bob.device.person_id)  # the admin stretches move
        await alice.doc("d").orset("tags").add("b")
        share(alice, bob)
        assert tags.value == ["a", "b"]
        await tags.discard("a")
        share(alice, bob)
        assert alice.doc("d").orset("tags").value == ["b"]


async def test_handles_on_one_document_share_its_state(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        first, second = alice.doc("d"), alice.doc("d")
        await first.set("k", 1)
        assert second.get("k") == 1 and repr(second) == "SharedDoc('d')"
