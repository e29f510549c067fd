"""Nested documents in the state layer: maps inside maps and lists of maps, each field merging
on its own; the record-delete rule (what the deleter saw goes, concurrent edits survive); the
wire form (old operations byte for byte, new ones pinned); hostile bounds; convergence under
any causal delivery order, against an order-free model and a sequential one."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from microsync import encoding
from microsync.encoding import Value
from microsync.errors import DecodeError, LocalProtocolError
from microsync.state import (
    CounterAdd,
    Document,
    MapDelete,
    MissingDependency,
    Op,
    OpId,
    RegisterSet,
    SetAdd,
    SetRemove,
    TextDelete,
    TextInsert,
    Timestamp,
    decode_op,
    encode_op,
)
from microsync.state.paths import MAX_DEPTH, MAX_PATH_BYTES, join

EXAMPLES = int(os.environ.get("MICROSYNC_STATE_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
A, B = b"A" * 4, b"B" * 4


def wire(op: Op) -> Op:
    return decode_op(encode_op(op))


# ------------------------------------------------------------------ the rule, by example


def test_concurrent_field_edits_of_one_record_both_survive() -> None:
    phone, laptop = Document(A), Document(B)
    ana = phone.map("contacts").map("ana")
    base: list[Op] = [ana.set("birthday", "03-12", now=1), ana.text("notes").insert(0, "tea")]
    for op in base:
        laptop.apply(wire(op))
    mine: list[Op] = [phone.map("contacts").map("ana").set("birthday", "03-14", now=5)]
    theirs: list[Op] = [
        laptop.map("contacts").map("ana").text("notes").insert(3, ", no milk"),
        laptop.map("contacts").map("ana").orset("quirks").add("owls"),
    ]
    for op in theirs:
        phone.apply(wire(op))
    for op in mine:
        laptop.apply(wire(op))
    want = {"birthday": "03-14", "notes": "tea, no milk", "quirks": ["owls"]}
    assert phone.to_value() == laptop.to_value() == {"contacts": {"ana": want}}
    assert phone.snapshot_bytes() == laptop.snapshot_bytes()
    assert phone.map("contacts").map("ana").value == want


def test_a_record_delete_removes_what_was_seen_and_concurrent_edits_survive() -> None:
    phone, laptop = Document(A), Document(B)
    ana = phone.map("contacts").map("ana")
    base: list[Op] = [
        ana.set("birthday", "03-12", now=1),
        ana.text("notes").insert(0, "tea"),
        ana.orset("quirks").add("owls"),
        phone.map("contacts").map("ben").set("birthday", "01-01", now=1),
    ]
    for op in base:
        laptop.apply(wire(op))
    gone = phone.map("contacts").delete("ana")  # the phone deletes the record
    edits: list[Op] = [  # concurrently, the laptop edits two of its fields
        laptop.map("contacts").map("ana").text("notes").insert(0, "green "),
        laptop.map("contacts").map("ana").orset("quirks").add("cats"),
    ]
    for op in edits:
        phone.apply(wire(op))
    laptop.apply(wire(gone))
    want = {
        "contacts": {"ana": {"notes": "green ", "quirks": ["cats"]}, "ben": {"birthday": "01-01"}}
    }
    assert phone.to_value() == laptop.to_value() == want
    assert phone.snapshot_bytes() == laptop.snapshot_bytes()
    assert phone.map("contacts").map("ana").get("birthday") is None


def test_a_concurrent_register_write_survives_only_if_it_wins() -> None:
    a, b = Document(A), Document(B)
    first = a.map("r").set("f", "seen", now=100)
    b.apply(wire(first))
    losing = b.map("r").set("g", "x", now=1)  # another field: survives
    b_same = RegisterSet(id=OpId(50, B), key=join("r", "f"), ts=Timestamp(1, 0, B), value="old")
    gone = a.clear("r")
    for op in (losing, b_same):
        a.apply(wire(op))
    b.apply(wire(b_same))
    b.apply(wire(gone))
    # "old" lost to "seen" by timestamp, and "seen" was deleted: the field stays empty
    assert a.to_value() == b.to_value() == {"r": {"g": "x"}}


def test_clearing_a_whole_map_keeps_only_concurrent_writes() -> None:
    a, b = Document(A), Document(B)
    ops: list[Op] = [a.map("contacts").map("ana").set("f", 1, now=1), a.counter("n").add(2)]
    ops.append(a.map("contacts").map("ben").text("t").insert(0, "x"))
    for op in ops:
        b.apply(wire(op))
    gone = a.map("contacts").clear()
    late = b.map("contacts").map("cy").set("f", 3, now=2)
    a.apply(wire(late))
    b.apply(wire(gone))
    assert a.to_value() == b.to_value() == {"n": 2, "contacts": {"cy": {"f": 3}}}
    assert a.map("contacts").value == {"cy": {"f": 3}}


def test_a_delete_waits_for_what_it_saw() -> None:
    a, b = Document(A), Document(B)
    first = a.map("m").set("f", 1, now=1)
    gone = a.map("m").delete("f")
    with pytest.raises(MissingDependency):
        b.apply(wire(gone))
    assert b.to_value() == {} and not b.cleared
    b.apply(wire(first))
    b.apply(wire(gone))
    assert b.to_value() == a.to_value() == {}


def test_a_list_of_records_each_field_merging_on_its_own() -> None:
    a, b = Document(A), Document(B)
    ops: list[Op] = [a.list("trips").insert(0, {}, {})]
    ops.append(a.list("trips").map(0).set("where", "Rome", now=1))
    ops.append(a.list("trips").map(1).set("where", "Oslo", now=1))
    for op in ops:
        b.apply(wire(op))
    mine: list[Op] = [a.list("trips").map(0).set("when", "May", now=2)]
    theirs: list[Op] = [b.list("trips").map(0).text("plan").insert(0, "Colosseum")]
    theirs.append(b.list("trips").delete(1))
    for op in theirs:
        a.apply(wire(op))
    for op in mine:
        b.apply(wire(op))
    want = [{"where": "Rome", "when": "May", "plan": "Colosseum"}]
    assert a.to_value() == b.to_value() == {"trips": want}
    assert a.list("trips").map(0).value == want[0]


def test_nested_state_survives_a_snapshot_byte_for_byte() -> None:
    a = Document(A)
    a.map("c").map("x").set("f", [1, {"k": 2}], now=1)
    a.map("c").map("x").text("t").insert(0, "hi")
    a.list("l").insert(0, {})
    a.list("l").map(0).orset("s").add("e")
    a.map("c").delete("x")
    a.map("c").map("x").set("g", 3, now=2)
    again = Document.from_snapshot(a.snapshot_bytes(), B)
    assert again.snapshot_bytes() == a.snapshot_bytes()
    assert again.to_value() == a.to_value() == {"c": {"x": {"g": 3}}, "l": [{"s": ["e"]}]}


def test_a_document_without_nesting_has_the_same_snapshot_bytes() -> None:
    a = Document(A)
    a.set("k", 1, now=1)
    data = a.snapshot_bytes()
    top = encoding.decode(data, max_size=len(data))
    assert isinstance(top, list) and len(top) == 7  # no cleared section: the old format


# ------------------------------------------------------------------ the wire form

ELEMENT = OpId(7, B)
VECTORS: list[tuple[Op, str]] = [
    (  # a top-level op: the key is a text string, as it always was
        RegisterSet(id=OpId(1, A), key="title", ts=Timestamp(5, 0, A), value="x"),
        "870101444141414101657469746c658205006178",
    ),
    (  # a field of a nested map: the key is [top, field, ...]
        RegisterSet(
            id=OpId(2, A),
            key=join("contacts", "ana", "birthday"),
            ts=Timestamp(5, 1, A),
            value="03-12",
        ),
        "8701014441414141028368636f6e746163747363616e616862697274686461798205016530332d3132",
    ),
    (  # a field of the map held by list element (7, B)
        TextInsert(id=OpId(3, A), key=join("trips", ELEMENT, "plan"), origin=None, text="Rome"),
        "870106444141414103836574726970738207444242424264706c616ef664526f6d65",
    ),
    (  # kind 11: delete a record as seen at A:3, B:7
        MapDelete(id=OpId(4, A), key=join("contacts", "ana"), seen=((A, 3), (B, 7))),
        "86010b4441414141048268636f6e746163747363616e61828244414141410382444242424207",
    ),
]


@pytest.mark.parametrize(("op", "hexed"), VECTORS, ids=["top", "nested", "element", "delete"])
def test_known_answers(op: Op, hexed: str) -> None:
    assert encode_op(op).hex() == hexed
    assert decode_op(bytes.fromhex(hexed)) == op


def _raw(key: Value, *fields: Value, kind: int = 1) -> bytes:
    return encoding.encode([1, kind, A, 1, key, *fields])


REG: tuple[Value, Value] = ([5, 0], "v")


@pytest.mark.parametrize(
    "key",
    [
        ["a"],  # a path needs a segment below the key
        ["a", *["s"] * (MAX_DEPTH + 1)],  # too deep
        ["a", "x" * 257],  # a field name too long
        ["a", ""],  # empty field name
        ["a", "b\nc"],  # a control character
        ["\x00a", "b"],  # a top key starting with NUL
        ["a", [0, A]],  # element counter out of range
        ["a", [1, b""]],  # empty element actor
        ["a", [1, A, 3]],  # malformed element
        ["a", 5],  # not a field name
        [["a"], "b"],  # top key not text
        "\x00a\x00b",  # the stored form is not a wire key
        ["a", *["y" * 256] * MAX_DEPTH],  # over MAX_PATH_BYTES
    ],
)
def test_hostile_paths_are_refused(key: Value) -> None:
    with pytest.raises(DecodeError):
        decode_op(_raw(key, *REG))


def test_path_bounds_hold_at_the_limit() -> None:
    deepest: Value = ["a", *["s"] * MAX_DEPTH]
    op = decode_op(_raw(deepest, *REG))
    assert encode_op(op) == _raw(deepest, *REG)
    assert len("\x00".join(["x" * 256] * MAX_DEPTH).encode()) > MAX_PATH_BYTES


def test_a_counter_may_be_a_field_of_a_map() -> None:
    """Counters were top-level only; a nested one now decodes, round trips and folds."""
    op = decode_op(_raw(["a", "b"], 3, kind=3))
    assert encode_op(op) == _raw(["a", "b"], 3, kind=3)
    doc = Document(B)
    doc.apply(op)
    assert doc.map("a").counter("b").value == 3 and doc.to_value() == {"a": {"b": 3}}
    with pytest.raises(DecodeError):
        decode_op(_raw(["a", "b"], 0, kind=3))  # a zero delta, nested or not


@pytest.mark.parametrize(
    "seen",
    [
        [[B, 1], [A, 1]],  # not sorted
        [[A, 1], [A, 2]],  # an actor twice
        [[A, 0]],  # counter out of range
        [[b"", 1]],  # empty actor
        [[A, 1, 2]],  # malformed
        [[A, 1]] * 5000,  # over MAX_SEEN
    ],
)
def test_hostile_deletes_are_refused(seen: Value) -> None:
    with pytest.raises(DecodeError):
        decode_op(_raw(["a", "b"], seen, kind=11))


def test_local_handles_refuse_what_receivers_would() -> None:
    doc = Document(A)
    m = doc.map("a")
    for _ in range(MAX_DEPTH):  # the deepest map is allowed
        m = m.map("s")
    with pytest.raises(LocalProtocolError):
        m.map("too deep")
    with pytest.raises(LocalProtocolError):
        doc.map("a").map("x" * 257)
    with pytest.raises(LocalProtocolError):
        doc.map("\x00a")
    with pytest.raises(IndexError):
        doc.list("l").map(0)


def test_a_hostile_snapshot_path_is_refused() -> None:
    a = Document(A)
    a.map("c").set("f", 1, now=1)
    data = a.snapshot_bytes()
    bad = data.replace(b"\x00c\x00f", b"\x00c\x00\n")
    with pytest.raises(DecodeError):
        Document.from_snapshot(bad, B)


# ------------------------------------------------------------------ convergence


@dataclass
class Made:
    op: Op
    past: dict[bytes, int]


FIELDS = ("contacts", "ana"), ("contacts", "ben"), ("trips",)


def nested_edit(doc: Document, data: st.DataObject, now: int) -> Op | None:
    """A random edit of a small nested universe: two contact records with a register, a text
    and a set each, record and field deletes, and a list of records."""
    kind = data.draw(
        st.sampled_from(
            ["reg", "text", "untext", "add", "discard", "rm", "drop", "li", "ld", "lf", "count"]
        )
    )
    who = data.draw(st.sampled_from(["ana", "ben"]))
    rec = doc.map("contacts").map(who)
    if kind == "reg":
        return rec.set("birthday", data.draw(st.integers(0, 3)), now=now)
    if kind == "text":
        t = rec.text("notes")
        return t.insert(data.draw(st.integers(0, len(t))), data.draw(st.sampled_from("xyz")))
    if kind == "untext":
        t = rec.text("notes")
        return t.delete(data.draw(st.integers(0, len(t) - 1))) if len(t) else None
    if kind == "add":
        return rec.orset("quirks").add(data.draw(st.integers(0, 2)))
    if kind == "discard":
        return rec.orset("quirks").discard(data.draw(st.integers(0, 2)))
    if kind == "rm":
        return doc.map("contacts").delete(who)
    if kind == "drop":
        return rec.delete(data.draw(st.sampled_from(["birthday", "notes", "quirks", "visits"])))
    if kind == "count":
        return rec.counter("visits").add(data.draw(st.sampled_from([-2, -1, 1, 3])))
    trips = doc.list("trips")
    if kind == "li":
        return trips.insert(data.draw(st.integers(0, len(trips))), {})
    if not len(trips):
        return None
    i = data.draw(st.integers(0, len(trips) - 1))
    if kind == "ld":
        return trips.delete(i)
    return trips.map(i).set("where", data.draw(st.integers(0, 3)), now=now)


@dataclass
class Peer:
    doc: Document
    held: list[Made] = field(default_factory=list)


def deliver(doc: Document, made: Made) -> None:
    if doc.versions.get(made.op.id.actor, 0) < made.op.id.counter:
        doc.apply(wire(made.op))


def ready(doc: Document, made: Made) -> bool:
    return all(doc.versions.get(a, 0) >= c for a, c in made.past.items())


def session(data: st.DataObject, peers: int, steps: int) -> tuple[list[Peer], list[Made]]:
    """Peers edit, and receive random operations they can apply (any causal order)."""
    ps = [Peer(Document(bytes([65 + i]) * 4)) for i in range(peers)]
    made: list[Made] = []
    for step in range(steps):
        p = ps[data.draw(st.integers(0, peers - 1))]
        if data.draw(st.booleans()):
            past = dict(p.doc.versions)
            op = nested_edit(p.doc, data, 1000 + step)
            if op is not None:
                made.append(Made(op, past))
        else:
            options = [m for m in made if ready(p.doc, m)]
            if options:
                deliver(p.doc, data.draw(st.sampled_from(options)))
    return ps, made


def replay(made: list[Made], rng: random.Random, who: bytes) -> Document:
    """A fresh replica applying every operation in a random causal order."""
    doc, pending = Document(who), list(made)
    while pending:
        pick = rng.choice([m for m in pending if ready(doc, m)])
        pending.remove(pick)
        deliver(doc, pick)
    return doc


@SETTINGS
@given(st.data(), st.integers(2, 3), st.integers(5, 40), st.randoms(use_true_random=False))
def test_nested_documents_converge_under_any_causal_order(
    data: st.DataObject, peers: int, steps: int, rng: random.Random
) -> None:
    ps, made = session(data, peers, steps)
    for p in ps:  # everyone gets everything, in a random causal order
        while True:
            options = [
                m
                for m in made
                if ready(p.doc, m) and p.doc.versions.get(m.op.id.actor, 0) < m.op.id.counter
            ]
            if not options:
                break
            deliver(p.doc, rng.choice(options))
    first = ps[0].doc
    for p in ps[1:]:
        assert p.doc.to_value() == first.to_value()
        assert p.doc.snapshot_bytes() == first.snapshot_bytes()
    fresh = replay(made, rng, b"Z" * 4)
    assert fresh.snapshot_bytes() == first.snapshot_bytes()
    again = Document.from_snapshot(first.snapshot_bytes(), b"Y" * 4)
    assert again.to_value() == first.to_value()
    assert model(made) == observed(first)
    shown = first.to_value()
    for who in ("ana", "ben"):  # a map's value is its part of the whole
        want = shown.get("contacts", {}).get(who, {})  # type: ignore[union-attr]
        assert first.map("contacts").map(who).value == want
    trips = first.list("trips")
    for i, item in enumerate(shown.get("trips", [])):  # type: ignore[arg-type]
        assert trips.map(i).value == item


# ------------------------------------------------------------------ an order-free model


def _covers(seen: dict[bytes, int], i: OpId) -> bool:
    return i.counter <= seen.get(i.actor, 0)


def model(made: list[Made]) -> dict[str, object]:
    """What the set of operations should show, computed without any delivery order: each
    record field from its own operations, minus what the deletes above it had seen."""
    ops = [m.op for m in made]
    deletes = [op for op in ops if isinstance(op, MapDelete)]

    def hidden(key: str, i: OpId) -> bool:
        from microsync.state.nesting import prefixes

        return any(_covers(dict(d.seen), i) for d in deletes if d.key in prefixes(key))

    out: dict[str, object] = {}
    for who in ("ana", "ben"):
        reg_key = join("contacts", who, "birthday")
        writes = [op for op in ops if isinstance(op, RegisterSet) and op.key == reg_key]
        if writes:
            win = max(writes, key=lambda op: (op.ts, op.id))
            out[f"{who}.birthday"] = None if hidden(reg_key, win.id) else win.value
        set_key = join("contacts", who, "quirks")
        removed = {
            t for op in ops if isinstance(op, SetRemove) and op.key == set_key for t in op.tags
        }
        present = {
            op.element
            for op in ops
            if isinstance(op, SetAdd)
            and op.key == set_key
            and op.id not in removed
            and not hidden(set_key, op.id)
        }
        out[f"{who}.quirks"] = sorted(present)  # type: ignore[type-var]
        text_key = join("contacts", who, "notes")
        chars = {
            OpId(op.id.counter + k, op.id.actor)
            for op in ops
            if isinstance(op, TextInsert) and op.key == text_key
            for k in range(len(op.text))
        }
        gone = {
            OpId(r.counter + k, r.actor)
            for op in ops
            if isinstance(op, TextDelete) and op.key == text_key
            for r in op.ranges
            for k in range(r.length)
        }
        out[f"{who}.notes"] = {c for c in chars - gone if not hidden(text_key, c)}
        count_key = join("contacts", who, "visits")
        out[f"{who}.visits"] = sum(
            op.delta
            for op in ops
            if isinstance(op, CounterAdd) and op.key == count_key and not hidden(count_key, op.id)
        )
    return out


def observed(doc: Document) -> dict[str, object]:
    out: dict[str, object] = {}
    for who in ("ana", "ben"):
        rec = doc.map("contacts").map(who)
        reg_key = join("contacts", who, "birthday")
        if reg_key in doc.registers.entries:
            out[f"{who}.birthday"] = rec.get("birthday")
        out[f"{who}.quirks"] = rec.orset("quirks").value
        out[f"{who}.visits"] = rec.counter("visits").value
        seq = doc.texts.get(join("contacts", who, "notes"))
        out[f"{who}.notes"] = (
            set()
            if seq is None
            else {
                OpId(r.counter + k, r.actor)
                for r in seq.runs()
                if r.visible
                for k in range(r.length)
            }
        )
    return out


# ------------------------------------------------------------------ a sequential model


class OneDevice(RuleBasedStateMachine):
    """One replica against a plain nested dict: every local edit does what it says."""

    def __init__(self) -> None:
        super().__init__()
        self.doc = Document(A)
        self.want: dict[str, dict[str, Value]] = {}
        self.now = 0

    @rule(who=st.sampled_from(["ana", "ben"]), v=st.integers(0, 9))
    def set_birthday(self, who: str, v: int) -> None:
        self.now += 1
        self.doc.map("contacts").map(who).set("birthday", v, now=self.now)
        self.want.setdefault(who, {})["birthday"] = v

    @rule(who=st.sampled_from(["ana", "ben"]), text=st.text("ab", min_size=1, max_size=3))
    def append_note(self, who: str, text: str) -> None:
        t = self.doc.map("contacts").map(who).text("notes")
        t.insert(len(t), text)
        rec = self.want.setdefault(who, {})
        rec["notes"] = str(rec.get("notes", "")) + text

    @rule(who=st.sampled_from(["ana", "ben"]), q=st.integers(0, 2))
    def add_quirk(self, who: str, q: int) -> None:
        self.doc.map("contacts").map(who).orset("quirks").add(q)
        rec = self.want.setdefault(who, {})
        rec["quirks"] = sorted({*rec.get("quirks", []), q})  # type: ignore[misc]

    @rule(who=st.sampled_from(["ana", "ben"]), delta=st.sampled_from([-3, -1, 1, 2]))
    def count_a_call(self, who: str, delta: int) -> None:
        self.doc.map("contacts").map(who).counter("calls").add(delta)
        rec = self.want.setdefault(who, {})
        rec["calls"] = int(rec.get("calls", 0)) + delta  # type: ignore[arg-type]

    @precondition(lambda self: bool(self.want))
    @rule(data=st.data())
    def delete_record(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from(sorted(self.want)))
        self.doc.map("contacts").delete(who)
        del self.want[who]

    @precondition(lambda self: bool(self.want))
    @rule(data=st.data())
    def delete_field(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from(sorted(self.want)))
        name = data.draw(st.sampled_from(sorted(self.want[who])))
        self.doc.map("contacts").map(who).delete(name)
        del self.want[who][name]
        if not self.want[who]:
            del self.want[who]

    @invariant()
    def shows_the_model(self) -> None:
        shown = self.doc.to_value().get("contacts", {})
        assert shown == self.want
        assert self.doc.map("contacts").value == self.want


TestOneDevice = OneDevice.TestCase
TestOneDevice.settings = settings(max_examples=EXAMPLES, deadline=None, stateful_step_count=30)
