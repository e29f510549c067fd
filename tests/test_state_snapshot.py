"""Snapshots: a known document's bytes, restoring, and strict rejection of bad snapshots."""

from __future__ import annotations

import pytest

from microsync import encoding
from microsync.errors import DecodeError
from microsync.state import Document, UnknownOpVersion


def sample() -> Document:
    doc = Document(b"A")
    doc.set("title", "groceries", now=1_000)
    doc.counter("visits").add(2)
    doc.orset("tags").add("food")
    lst = doc.list("items")
    lst.insert(0, "milk", "eggs", "bread")
    lst.move(2, 0)
    lst.delete(1)
    text = doc.text("note")
    text.insert(0, "hello world")
    text.delete(0, 6)
    return doc


def test_snapshot_restores_the_same_state() -> None:
    doc = sample()
    assert doc.to_value() == {
        "title": "groceries",
        "visits": 2,
        "tags": ["food"],
        "items": ["bread", "eggs"],
        "note": "world",
    }
    data = doc.snapshot_bytes()
    copy = Document.from_snapshot(data, b"B")
    assert copy.to_value() == doc.to_value()
    assert copy.snapshot_bytes() == data
    assert copy.clock == doc.clock


def test_restored_document_keeps_editing_with_fresh_ids() -> None:
    doc = sample()
    copy = Document.from_snapshot(doc.snapshot_bytes(), b"A")
    op = copy.text("note").insert(5, "!")
    assert op.id.counter == doc.clock + 1
    doc.apply(op)
    assert doc.text("note").value == "world!"


def test_a_clock_floor_numbers_new_operations_above_it() -> None:
    doc = Document(b"A", clock=1_000)
    assert doc.counter("c").add(1).id.counter == 1_001
    again = Document.from_snapshot(doc.snapshot_bytes(), b"A", clock=5_000)
    assert again.counter("c").add(1).id.counter == 5_001
    assert Document.from_snapshot(doc.snapshot_bytes(), b"A").clock == 1_001


def test_an_empty_document_has_a_snapshot_too() -> None:
    data = Document(b"A").snapshot_bytes()
    assert Document.from_snapshot(data, b"A").to_value() == {}


@pytest.mark.parametrize("cut", [1, 10, 50])
def test_truncated_or_extended_snapshots_are_rejected(cut: int) -> None:
    data = sample().snapshot_bytes()
    with pytest.raises(DecodeError):
        Document.from_snapshot(data[:-cut], b"A")
    with pytest.raises(DecodeError):
        Document.from_snapshot(data + b"\x00", b"A")


def test_unknown_snapshot_version() -> None:
    top = encoding.decode(sample().snapshot_bytes(), max_size=1 << 20)
    assert isinstance(top, list)
    top[0] = 2
    with pytest.raises(UnknownOpVersion):
        Document.from_snapshot(encoding.encode(top), b"A")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.__setitem__(1, [[b"A", 0]]),  # counter 0
        lambda t: t.__setitem__(6, [["note", [[5, 1, "x"]]]]),  # actor index out of range
        lambda t: t.__setitem__(6, [["note", [[0, 1, "x"], [0, 1, "y"]]]]),  # duplicate run
        lambda t: t.__setitem__(6, [["note", [[0, 2, "q"], [0, 1, "xyz"]]]]),  # overlap
        lambda t: t.__setitem__(5, [["items", [[0, 1, "yes", [1]]]]]),  # visibility not bool
        lambda t: t.__setitem__(2, [["k", 1, 0, 1, b"A", 1, 2]]),  # deleted not bool
        lambda t: t.pop(),  # a section missing
    ],
)
def test_malformed_snapshots_are_rejected(mutate: object) -> None:
    top = encoding.decode(sample().snapshot_bytes(), max_size=1 << 20)
    mutate(top)  # type: ignore[operator]
    with pytest.raises(DecodeError):
        Document.from_snapshot(encoding.encode(top), b"A")
