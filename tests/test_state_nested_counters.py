"""Counters inside nested maps (issue 18, gap 2): a counter at a path merges like a top-level
one (every concurrent add counts), and a delete of its field or of any map above it behaves
like every nested kind: it removes the adds its author had seen, and concurrent adds survive
(add-wins), the field showing again with their sum. Snapshots keep it byte for byte; hostile
snapshots are refused; convergence under any causal order against an order-free model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microsync import encoding
from microsync.errors import DecodeError
from microsync.state import CounterAdd, CounterChanged, Document, MapDelete, Op
from microsync.state.nesting import prefixes
from microsync.state.paths import join
from tests.test_state_nested import SETTINGS, Made, deliver, ready, wire

A, B, C = b"A" * 4, b"B" * 4, b"C" * 4


def exchange(*docs: Document, ops: list[Op]) -> None:
    """Every document applies every op it lacks (in the order given: causal here)."""
    for doc in docs:
        for op in ops:
            if doc.versions.get(op.id.actor, 0) < op.id.counter:
                doc.apply(wire(op))


def visits(doc: Document, who: str = "ana") -> int:
    return doc.map("contacts").map(who).counter("visits").value


def test_concurrent_adds_to_a_nested_counter_all_count() -> None:
    a, b = Document(A), Document(B)
    ops = [a.map("contacts").map("ana").counter("visits").add(2)]
    ops.append(b.map("contacts").map("ana").counter("visits").add(3))
    ops.append(b.map("contacts").map("ana").counter("visits").add(-1))
    exchange(a, b, ops=ops)
    assert visits(a) == visits(b) == 4
    assert a.to_value() == b.to_value() == {"contacts": {"ana": {"visits": 4}}}
    assert a.snapshot_bytes() == b.snapshot_bytes()


@pytest.mark.parametrize("deleted", ["record", "field", "whole map"])
def test_a_delete_removes_the_seen_adds_and_a_concurrent_add_survives(deleted: str) -> None:
    a, b = Document(A), Document(B)
    rec = a.map("contacts").map("ana")
    seen = [rec.counter("visits").add(2), rec.set("birthday", "03-12", now=1)]
    exchange(b, ops=seen)
    concurrent = a.map("contacts").map("ana").counter("visits").add(5)  # B has not seen it
    on_b = b.map("contacts")
    delete = {
        "record": lambda: on_b.delete("ana"),
        "field": lambda: on_b.map("ana").delete("visits"),
        "whole map": on_b.clear,
    }[deleted]()
    assert visits(b) == 0
    exchange(a, ops=[delete])
    exchange(b, ops=[concurrent])
    assert visits(a) == visits(b) == 5  # add-wins: only what the deleter saw is gone
    shown = {"visits": 5} if deleted != "field" else {"visits": 5, "birthday": "03-12"}
    assert a.to_value() == b.to_value() == {"contacts": {"ana": shown}}
    assert a.snapshot_bytes() == b.snapshot_bytes()


def test_a_delete_that_saw_every_add_hides_the_field() -> None:
    a = Document(A)
    a.map("contacts").map("ana").counter("visits").add(4)
    a.map("contacts").map("ben").counter("visits").add(1)
    changes = a.apply(wire(a.map("contacts").map("ana").delete("visits")))
    assert changes == []  # applied locally already: a duplicate does nothing
    assert visits(a) == 0 and a.to_value() == {"contacts": {"ben": {"visits": 1}}}
    later = a.map("contacts").map("ana").counter("visits").add(2)  # a new add shows again
    assert visits(a) == 2 and later.key == join("contacts", "ana", "visits")


def test_a_remote_delete_reports_the_counter_it_changed() -> None:
    a, b = Document(A), Document(B)
    exchange(b, ops=[a.map("m").counter("n").add(3)])
    delete = a.map("m").clear()
    changes = b.apply(wire(delete))
    assert CounterChanged(key=join("m", "n"), value=0) in changes


def test_a_top_level_counter_is_no_field_and_keeps_its_value() -> None:
    """As before nesting: a delete of a top-level key reaches the fields below it, never a
    counter at the key itself (and top-level counters keep their snapshot bytes)."""
    a = Document(A)
    a.counter("n").add(3)
    a.map("n").counter("inner").add(1)
    a.map("n").clear()
    assert a.counter("n").value == 3 and a.map("n").counter("inner").value == 0


def test_a_counter_in_a_list_element_s_map_goes_with_the_element() -> None:
    a, b = Document(A), Document(B)
    trips = a.list("trips")
    ops: list[Op] = [trips.insert(0, {}, {})]
    ops.append(trips.map(0).counter("nights").add(3))
    ops.append(trips.map(1).counter("nights").add(1))
    exchange(b, ops=ops)
    assert b.to_value() == {"trips": [{"nights": 3}, {"nights": 1}]}
    ops.append(b.list("trips").delete(0))
    exchange(a, ops=ops)
    assert a.to_value() == b.to_value() == {"trips": [{"nights": 1}]}
    assert a.list("trips").map(0).counter("nights").value == 1


def test_nested_counters_survive_a_snapshot_byte_for_byte() -> None:
    a = Document(A)
    a.map("c").map("ana").counter("visits").add(2)
    a.map("c").map("ana").counter("visits").add(-7)
    a.map("c").map("ben").counter("visits").add(1)
    a.map("c").delete("ben")
    data = a.snapshot_bytes()
    copy = Document.from_snapshot(data, B)
    assert copy.snapshot_bytes() == data and copy.to_value() == a.to_value()
    assert copy.map("c").map("ana").counter("visits").value == -5
    top = encoding.decode(data, max_size=1 << 20)
    assert isinstance(top, list) and len(top) == 9  # the field counters section
    only = Document(A)
    only.map("c").counter("n").add(1)  # no delete ever: the cleared section is written empty
    top = encoding.decode(only.snapshot_bytes(), max_size=1 << 20)
    assert isinstance(top, list) and top[7] == [] and len(top) == 9


def _forged(field_counters: object, cleared: object = ()) -> bytes:
    a = Document(A)
    a.map("c").counter("n").add(1)
    top = encoding.decode(a.snapshot_bytes(), max_size=1 << 20)
    assert isinstance(top, list)
    top[7] = list(cleared)  # type: ignore[arg-type]
    top[8] = field_counters  # type: ignore[assignment]
    return encoding.encode(top)


@pytest.mark.parametrize(
    "sections",
    [
        [[join("c", "n"), [[A, [[1, 0]]]]]],  # an add of zero
        [[join("c", "n"), [[A, [[1, 1], [1, 1]]]]]],  # one add twice
        [[join("c", "n"), [[A, [[2, 1]]]]]],  # an add the versions never applied
        [["n", [[A, [[1, 1]]]]]],  # a field counter at a top-level key
        [[join("c", "n"), [[A, []]]]],  # an actor with no adds
        [],  # an empty section
        [[join("c", "n"), [[A, [[1, 1]]], [A, [[1, 1]]]]]],  # an actor twice
    ],
)
def test_a_hostile_field_counter_snapshot_is_refused(sections: object) -> None:
    with pytest.raises(DecodeError):
        Document.from_snapshot(_forged(sections), B)


# ------------------------------------------------------------------ convergence


def counter_edit(doc: Document, data: st.DataObject) -> Op | None:
    who = data.draw(st.sampled_from(["ana", "ben"]))
    kind = data.draw(st.sampled_from(["add", "add", "add", "field", "record", "map"]))
    contacts = doc.map("contacts")
    if kind == "add":
        return contacts.map(who).counter("visits").add(data.draw(st.sampled_from([-3, -1, 1, 2])))
    if kind == "field":
        return contacts.map(who).delete("visits")
    return contacts.delete(who) if kind == "record" else contacts.clear()


def counter_model(made: list[Made]) -> dict[str, int]:
    """Each counter's value from the set of operations alone: the sum of its adds that no
    delete at its key or above it had seen."""
    ops = [m.op for m in made]
    deletes = [op for op in ops if isinstance(op, MapDelete)]
    out = {}
    for who in ("ana", "ben"):
        key = join("contacts", who, "visits")
        out[who] = sum(
            op.delta
            for op in ops
            if isinstance(op, CounterAdd)
            and op.key == key
            and not any(
                op.id.counter <= dict(d.seen).get(op.id.actor, 0)
                for d in deletes
                if d.key in prefixes(key)
            )
        )
    return out


@SETTINGS
@given(st.data(), st.integers(4, 40), st.randoms(use_true_random=False))
def test_nested_counters_converge_under_any_causal_order(
    data: st.DataObject, steps: int, rng: random.Random
) -> None:
    docs = [Document(actor) for actor in (A, B, C)]
    made: list[Made] = []
    for _ in range(steps):
        doc = docs[data.draw(st.integers(0, 2))]
        if data.draw(st.booleans()):
            past = dict(doc.versions)
            op = counter_edit(doc, data)
            if op is not None:
                made.append(Made(op, past))
        else:
            options = [m for m in made if ready(doc, m)]
            if options:
                deliver(doc, data.draw(st.sampled_from(options)))
    for doc in docs:
        while options := [
            m
            for m in made
            if ready(doc, m) and doc.versions.get(m.op.id.actor, 0) < m.op.id.counter
        ]:
            deliver(doc, rng.choice(options))
    want = counter_model(made)
    for doc in docs:
        assert {who: visits(doc, who) for who in ("ana", "ben")} == want
        assert doc.to_value() == docs[0].to_value()
        assert doc.snapshot_bytes() == docs[0].snapshot_bytes()
    again = Document.from_snapshot(docs[0].snapshot_bytes(), b"Z" * 4)
    assert again.to_value() == docs[0].to_value()


def test_the_forger_s_untouched_snapshot_decodes() -> None:
    """The control for the hostile cases: only the section each one changes is refused."""
    good = _forged([[join("c", "n"), [[A, [[1, 1]]]]]])
    assert Document.from_snapshot(good, B).map("c").counter("n").value == 1
