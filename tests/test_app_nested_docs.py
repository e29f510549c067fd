"""Nested documents through real profiles (``group.doc(name).map(...)``): a contact record
edited field by field on two devices while apart keeps both edits; a record delete against a
concurrent field edit ends the same on every device; restarts rebuild the nested state; a
member's hostile nested operation folds as nothing everywhere; one ``.value`` spelling."""

from __future__ import annotations

import random
import time
import warnings
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync import encoding
from microsync.app.ops import DocOp
from microsync.encoding import Value
from microsync.errors import LocalProtocolError
from microsync.state import Document
from microsync.testing import app_state
from tests.test_app_group import family_of, share


async def test_a_contact_edited_field_by_field_on_two_devices_keeps_both(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        phone, laptop = await family_of(stack, tmp_path, "Phone", "Laptop")
        ana = phone.doc("dex").map("contacts").map("ana")
        await ana.set("birthday", "1990-03-12")
        await ana.text("notes").insert(0, "tea")
        await ana.orset("quirks").add("owls")
        share(phone, laptop)
        # apart: the phone fixes the birthday, the laptop adds to the notes and the quirks
        await phone.doc("dex").map("contacts").map("ana").set("birthday", "1990-03-14")
        there = laptop.doc("dex").map("contacts").map("ana")
        await there.text("notes").insert(3, ", no milk")
        await there.orset("quirks").add("cats")
        share(phone, laptop)
        want = {"birthday": "1990-03-14", "notes": "tea, no milk", "quirks": ["cats", "owls"]}
        for group in (phone, laptop):
            assert group.doc("dex").to_value() == {"contacts": {"ana": want}}
            assert group.doc("dex").map("contacts").map("ana").value == want


async def test_a_record_delete_against_a_field_edit_ends_alike(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        a, b, c = await family_of(stack, tmp_path, "A", "B", "C")
        contacts = a.doc("dex").map("contacts")
        await contacts.map("ana").set("birthday", "03-12")
        await contacts.map("ana").text("notes").insert(0, "tea")
        await contacts.map("ben").set("birthday", "01-01")
        share(a, b, c)
        await a.doc("dex").map("contacts").delete("ana")  # A deletes the record
        await b.doc("dex").map("contacts").map("ana").orset("quirks").add("owls")  # B edits
        share(a, c)  # C sees the delete first, the edit later
        share(b, c)
        share(a, b, c)
        want = {"contacts": {"ana": {"quirks": ["owls"]}, "ben": {"birthday": "01-01"}}}
        for group in (a, b, c):
            assert group.doc("dex").to_value() == want
            assert group.doc("dex").waiting == 0
        await c.doc("dex").map("contacts").clear()  # the whole map, as C has seen it
        share(a, b, c)
        assert [g.doc("dex").to_value() for g in (a, b, c)] == [{}] * 3


async def test_a_list_of_records_and_restarts(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        trips = alice.doc("plans").list("trips")
        await trips.insert(0, {}, {})
        await trips.map(0).set("where", "Rome")
        await trips.map(1).set("where", "Oslo")
        share(alice, bob)
        await alice.doc("plans").list("trips").map(0).set("when", "May")
        await bob.doc("plans").list("trips").map(0).text("plan").insert(0, "Colosseum")
        await bob.doc("plans").list("trips").delete(1)
        share(alice, bob)
        expected = {"trips": [{"where": "Rome", "when": "May", "plan": "Colosseum"}]}
        assert alice.doc("plans").to_value() == bob.doc("plans").to_value() == expected
        path = bob.device.path
        await bob.device.close()
    async with await microsync.Device.open(path) as again:
        assert again.group(alice.id).doc("plans").to_value() == expected


def _hostile_payloads(actor: bytes) -> list[bytes]:
    """Validly framed doc ops a member could sign, each breaking one nesting bound."""
    reg: list[Value] = [[1, 0], "x"]
    return [
        encoding.encode([1, 1, actor, 2000, ["a", *["s"] * 9], *reg]),  # too deep
        encoding.encode([1, 1, actor, 2001, ["a", "k" * 300], *reg]),  # key too long
        encoding.encode([1, 1, actor, 2002, ["a", "b\x07"], *reg]),  # control character
        encoding.encode([1, 3, actor, 2003, ["a", "b"], 0]),  # a nested counter adding 0
        encoding.encode([1, 11, actor, 2004, ["a", "b"], [[actor, 1]] * 2]),  # bad seen
    ]


async def test_a_members_hostile_nested_ops_fold_as_nothing(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await alice.doc("dex").map("contacts").map("ana").set("birthday", "03-12")
        share(alice, bob, carol)
        state = app_state(carol)
        now = time.time_ns() // 1_000_000
        for payload in _hostile_payloads(bytes(carol.device.id)):
            state.write(DocOp(doc="dex", payload=payload), now)
        state.close_doc("dex")
        share(alice, bob, carol)
        for group in (alice, bob, carol):
            d = group.doc("dex")
            assert d.to_value() == {"contacts": {"ana": {"birthday": "03-12"}}}
            assert d.waiting == 0
        with pytest.raises(LocalProtocolError):
            alice.doc("dex").map("contacts").map("x" * 300)


async def test_one_value_spelling_across_handles(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        d = alice.doc("d")
        await d.orset("s").add("milk")
        await d.counter("n").add(2)
        await d.list("l").insert(0, 1)
        await d.text("t").insert(0, "hi")
        await d.map("m").set("f", 1)
        assert (d.orset("s").value, d.counter("n").value, d.list("l").value) == (["milk"], 2, [1])
        assert (d.text("t").value, d.map("m").value) == ("hi", {"f": 1})
        with pytest.warns(DeprecationWarning):
            assert d.orset("s").values() == ["milk"]
        kit = Document(b"K")  # the test kit's documents (AppView.doc) are state Documents
        kit.orset("s").add(1)
        assert kit.orset("s").value == [1]
        with pytest.warns(DeprecationWarning):
            assert kit.orset("s").values == [1]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert d.orset("s").value == ["milk"]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 25))
async def test_random_nested_edits_converge(tmp_path_factory, seed: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    async with AsyncExitStack() as stack:
        groups = await family_of(stack, tmp_path_factory.mktemp("nested"), "A", "B", "C")
        for _ in range(steps):
            group = rng.choice(groups)
            rec = group.doc("dex").map("contacts").map(rng.choice(["ana", "ben"]))
            roll = rng.random()
            if roll < 0.25:
                await rec.set("birthday", rng.randint(0, 9))
            elif roll < 0.45:
                notes = rec.text("notes")
                await notes.insert(rng.randint(0, len(notes)), rng.choice("xyz"))
            elif roll < 0.6:
                await rec.orset("quirks").add(rng.randint(0, 3))
            elif roll < 0.7:
                await group.doc("dex").map("contacts").delete(rng.choice(["ana", "ben"]))
            elif roll < 0.78:
                await rec.delete(rng.choice(["birthday", "notes", "quirks"]))
            else:
                share(*rng.sample(groups, 2))
        share(*groups)
        values = [g.doc("dex").to_value() for g in groups]
        assert values[0] == values[1] == values[2]
        assert all(g.doc("dex").waiting == 0 for g in groups)
