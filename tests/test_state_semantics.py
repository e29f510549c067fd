"""What each CRDT means, on small examples: who wins, what survives, where things go."""

from __future__ import annotations

import pytest

from microsync.errors import LocalProtocolError
from microsync.state import (
    CounterChanged,
    Document,
    ListDeleted,
    ListInserted,
    MissingDependency,
    Op,
    OpId,
    RegisterChanged,
    SetChanged,
    TextDeleted,
    TextInsert,
    TextInserted,
    references,
)


def pair() -> tuple[Document, Document]:
    return Document(b"A"), Document(b"B")


def test_register_last_writer_wins_and_tombstones_stay() -> None:
    a, b = pair()
    old = a.set("k", 1, now=100)
    new = b.set("k", 2, now=200)
    assert a.apply(new) == [RegisterChanged(key="k", value=2, deleted=False)]
    assert b.apply(old) == []
    assert a.get("k") == b.get("k") == 2
    gone = a.delete("k", now=300)
    b.apply(gone)
    b.apply(old)  # a duplicate of an older write
    assert b.get("k", "none") == "none" and "k" not in b.to_value()


def test_register_ties_are_broken_by_id() -> None:
    a, b = pair()
    x, y = a.set("k", "a", now=100), b.set("k", "b", now=100)
    a.apply(y), b.apply(x)
    assert a.get("k") == b.get("k") == "b"  # same (wall, tick): the greater node wins


def test_counter_adds_every_actor() -> None:
    a, b = pair()
    ops = [a.counter("c").add(5), b.counter("c").add(-2), b.counter("c").add(1)]
    assert a.apply(ops[1]) == [CounterChanged(key="c", value=3)]
    a.apply(ops[2]), b.apply(ops[0])
    assert a.counter("c").value == b.counter("c").value == 4


def test_orset_add_wins_over_a_concurrent_remove() -> None:
    a, b = pair()
    first = a.orset("s").add("milk")
    b.apply(first)
    again = a.orset("s").add("milk")  # concurrent with b's remove
    removal = b.orset("s").discard("milk")
    assert removal is not None and removal.tags == (first.id,)
    assert b.orset("s").discard("milk") is None  # nothing left to remove here
    a.apply(removal)
    assert b.apply(again) == [SetChanged(key="s", element="milk", present=True)]
    assert "milk" in a.orset("s") and a.orset("s").value == b.orset("s").value == ["milk"]


def test_concurrent_text_inserts_at_one_place_do_not_interleave() -> None:
    a, b = pair()
    base = a.text("t").insert(0, "[]")
    b.apply(base)
    x = [a.text("t").insert(1 + i, c) for i, c in enumerate("abc")]
    y = [b.text("t").insert(1 + i, c) for i, c in enumerate("xyz")]
    for op in y:
        a.apply(op)
    for op in x:
        b.apply(op)
    assert a.text("t").value == b.text("t").value
    assert a.text("t").value in ("[abcxyz]", "[xyzabc]")


def test_remote_text_events_describe_the_change() -> None:
    a, b = pair()
    op = a.text("t").insert(0, "hello")
    assert b.apply(op) == [TextInserted(key="t", index=0, text="hello")]
    cut = a.text("t").delete(1, 3)
    assert b.apply(cut) == [TextDeleted(key="t", index=1, length=3)]
    assert b.text("t").value == a.text("t").value == "ho"


def test_list_move_concurrent_moves_show_the_element_once() -> None:
    a, b = pair()
    b.apply(a.list("l").insert(0, "x", "y", "z"))
    m1 = a.list("l").move(0, 2)
    m2 = b.list("l").move(0, 1)
    a.apply(m2), b.apply(m1)
    assert a.list("l").value == b.list("l").value
    assert sorted(a.list("l").value) == ["x", "y", "z"]  # type: ignore[type-var]


def test_list_move_and_concurrent_delete_delete_wins() -> None:
    a, b = pair()
    b.apply(a.list("l").insert(0, "x", "y"))
    move = a.list("l").move(0, 1)
    delete = b.list("l").delete(0)
    assert a.list("l").value == ["y", "x"]
    assert a.apply(delete) == [ListDeleted(key="l", index=1, count=1)]
    assert b.apply(move) == []
    assert a.list("l").value == b.list("l").value == ["y"]


def test_list_events_of_a_remote_move() -> None:
    a, b = pair()
    b.apply(a.list("l").insert(0, 1, 2, 3))
    changes = b.apply(a.list("l").move(2, 0))
    assert changes == [
        ListDeleted(key="l", index=2, count=1),
        ListInserted(key="l", index=0, values=(3,)),
    ]
    assert b.list("l").value == [3, 1, 2]


def test_operation_with_a_missing_dependency_is_rejected_and_changes_nothing() -> None:
    a, b = pair()
    a.text("t").insert(0, "ab")
    later = a.text("t").insert(1, "X")  # its origin is not at b
    before = b.snapshot_bytes()
    with pytest.raises(MissingDependency):
        b.apply(later)
    assert b.snapshot_bytes() == before
    stray = TextInsert(id=OpId(1, b"Z"), key="t", origin=OpId(7, b"A"), text="q")
    with pytest.raises(MissingDependency):
        b.apply(stray)


def test_duplicates_are_ignored() -> None:
    a, b = pair()
    ops: list[Op] = [a.counter("c").add(1), a.text("t").insert(0, "x"), a.orset("s").add(1)]
    for op in ops + ops:
        b.apply(op)
    for op in ops:
        assert b.apply(op) == []
    assert b.to_value() == a.to_value() == {"c": 1, "s": [1], "t": "x"}


def test_local_edit_errors() -> None:
    doc = Document(b"A")
    with pytest.raises(IndexError):
        doc.text("t").insert(1, "x")
    with pytest.raises(IndexError):
        doc.list("l").delete(0)
    with pytest.raises(ValueError):
        doc.counter("c").add(0)
    with pytest.raises(ValueError):
        doc.text("t").insert(0, "\ud800")  # not encodable
    with pytest.raises(LocalProtocolError):
        doc.set("k" * 300, 1, now=0)
    with pytest.raises(ValueError):
        Document(b"")


def test_ids_use_the_given_actor_and_a_lamport_counter() -> None:
    a, b = pair()
    first = a.text("t").insert(0, "abc")
    assert first.id == OpId(1, b"A")
    assert a.counter("c").add(1).id == OpId(4, b"A")  # after the three characters
    b.apply(first)
    assert b.orset("s").add(1).id == OpId(4, b"B")  # above everything b has seen


def test_references_name_what_must_come_first() -> None:
    a = Document(b"A")
    first = a.text("t").insert(0, "abc")
    second = a.text("t").insert(3, "d")
    assert references(first) == ()
    assert references(second) == (OpId(3, b"A"),)
    cut = a.text("t").delete(0, 4)
    assert references(cut) == (OpId(1, b"A"), OpId(4, b"A"))  # one range: a..d
    add = a.orset("s").add(1)
    removal = a.orset("s").discard(1)
    assert removal is not None and references(removal) == (add.id,)
    a.list("l").insert(0, "x", "y")
    move = a.list("l").move(0, 1)
    assert references(move) == (move.origin, move.element)
    assert references(a.counter("c").add(1)) == ()
