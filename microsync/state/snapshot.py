"""Snapshots: the canonical bytes of a document's whole state, and back.

    [version=1, versions, registers, counters, sets, lists, texts, (cleared, (field counters))]

* ``versions``: ``[[actor, last counter], ...]`` sorted by actor. Sequences name actors by their
  index in this list.
* ``registers``: ``[[key, wall, tick, counter, actor, deleted, value], ...]`` sorted by key
  (tombstones included: they must keep beating older writes).
* ``counters``: ``[[key, [[actor, increments, decrements], ...]], ...]``.
* ``sets``: ``[[key, [[element, [[counter, actor], ...]], ...]], ...]``, elements in the order of
  their encodings, tags sorted.
* ``lists``: ``[[key, runs]]``, a run ``[actor index, counter, visible, [value, ...]]``, or
  ``[actor index, counter, visible, [value], [counter, actor index]]`` for a move slot.
* ``texts``: ``[[key, runs]]``, a run ``[actor index, counter, text]`` or, hidden,
  ``[actor index, counter, length]``.
* ``cleared`` (only when a nested field was ever deleted, so older snapshots keep their
  bytes): ``[[key, [[actor, counter], ...]], ...]``, the greatest ``seen`` of the deletes of
  each key (:mod:`microsync.state.nesting`).
* ``field counters`` (only when a counter in a nested map holds adds; ``cleared`` is then
  written, empty if need be): ``[[key, [[actor, [[counter, delta], ...]], ...]], ...]``, the
  adds no delete has removed (:class:`~microsync.state.counter.FieldCounter`), actors sorted,
  adds in counter order.

A key is a top-level key or a stored path (:mod:`microsync.state.paths`).

Runs are written maximal: adjacent runs of one actor with consecutive counters and the same
visibility are written as one, whatever splits the replica's history left. Since the order and
ids of elements are the same on every replica that applied the same operations, so are the
bytes. A snapshot is a cache of the fold of signed entries; it never overrides them (the
integrator decides which snapshots to trust; ``docs/state.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from microsync import encoding
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError
from microsync.state.clock import Timestamp
from microsync.state.codec import MAX_KEY, VERSION, UnknownOpVersion, check_value
from microsync.state.counter import FieldCounter, PNCounter
from microsync.state.document import Document
from microsync.state.ids import MAX_ACTOR, MAX_COUNTER, OpId
from microsync.state.listcrdt import ListCRDT
from microsync.state.orset import ORSet
from microsync.state.paths import MAX_PATH_BYTES, check_top_key, is_path, segments
from microsync.state.registers import Register
from microsync.state.sequence import MoveSlot, Run, Sequence

__all__ = ["MAX_SNAPSHOT_BYTES", "decode_snapshot", "encode_snapshot"]

MAX_SNAPSHOT_BYTES: Final = 256 << 20
_DEPTH: Final = 8 + 8  # the structure, plus a value's own nesting


# ---------------------------------------------------------------------------------- encode


def encode_snapshot(doc: Document) -> bytes:
    """The canonical snapshot of ``doc``."""
    actors = sorted(doc.versions)
    index = {a: i for i, a in enumerate(actors)}
    regs: list[Value] = [
        [k, r.ts.wall, r.ts.counter, r.id.counter, r.id.actor, r.deleted, r.value]
        for k, r in sorted(doc.registers.entries.items())
    ]
    counters: list[Value] = [
        [k, [[a, p, n] for a, (p, n) in sorted(c.totals.items())]]
        for k, c in sorted(doc.counters.items())
        if c
    ]
    sets: list[Value] = [
        [
            k,
            [
                [s.elements[e][0], [list(t) for t in sorted(s.elements[e][1])]]
                for e in sorted(s.elements)
            ],
        ]
        for k, s in sorted(doc.sets.items())
        if s
    ]
    lists: list[Value] = [
        [k, [_list_run(r, index) for r in _merged(lst.seq)]]
        for k, lst in sorted(doc.lists.items())
        if lst
    ]
    texts: list[Value] = [
        [k, [_text_run(r, index) for r in _merged(t)]] for k, t in sorted(doc.texts.items()) if t
    ]
    versions: list[Value] = [[a, doc.versions[a]] for a in actors]
    top: list[Value] = [VERSION, versions, regs, counters, sets, lists, texts]
    fields: list[Value] = [
        [k, [[a, [[c, d] for c, d in adds]] for a, adds in sorted(f.adds.items())]]
        for k, f in sorted(doc.field_counters.items())
        if f
    ]
    if doc.cleared or fields:  # only nested documents have it: older snapshots keep their bytes
        top.append(
            [
                [k, [[a, c] for a, c in sorted(seen.items())]]
                for k, seen in sorted(doc.cleared.items())
            ]
        )
    if fields:
        top.append(fields)
    return encoding.encode(top)


def _set_entries(s: ORSet) -> list[Value]:
    out: list[Value] = []
    for e in sorted(s.elements):
        element, tags = s.elements[e]
        out.append([element, [list(t) for t in sorted(tags)]])
    return out


def _merged(seq: Sequence) -> Iterator[tuple[Run, Any, int]]:
    """``(first run, content, length)`` of each maximal run."""
    pending: tuple[Run, Any, int] | None = None
    for run in seq.runs():
        if pending is not None:
            first, content, length = pending
            if (
                type(run) is Run
                and type(first) is Run
                and run.actor == first.actor
                and run.visible == first.visible
                and first.counter + length == run.counter
            ):
                more = None if content is None else content + run.content
                pending = (first, more, length + run.length)
                continue
            yield pending
        pending = (run, run.content, run.length)
    if pending is not None:
        yield pending


def _text_run(merged: tuple[Run, Any, int], index: dict[bytes, int]) -> Value:
    run, content, length = merged
    return [index[run.actor], run.counter, content if run.visible else length]


def _list_run(merged: tuple[Run, Any, int], index: dict[bytes, int]) -> Value:
    run, content, _ = merged
    out: list[Value] = [index[run.actor], run.counter, run.visible, list(content)]
    if isinstance(run, MoveSlot):
        out.append([run.elem.counter, index[run.elem.actor]])
    return out


# ---------------------------------------------------------------------------------- decode


def decode_snapshot(data: bytes, doc: Document) -> Document:
    """Fill the empty ``doc`` from snapshot ``data``; :class:`DecodeError` if malformed."""
    top = expect_list(
        encoding.decode(data, max_size=MAX_SNAPSHOT_BYTES, max_depth=_DEPTH), "snapshot"
    )
    if not top or top[0] != VERSION or type(top[0]) is not int:
        raise UnknownOpVersion("unknown snapshot version")
    if len(top) not in (7, 8, 9):
        raise DecodeError("snapshot: expected 7 to 9 fields")
    _, versions, regs, counters, sets, lists, texts = top[:7]
    for path, seen in _keyed(top[7] if len(top) >= 8 else []):
        mark = doc.cleared[path] = {}
        for item in expect_list(seen, "seen"):
            who, last = expect_list(item, "seen", 2)
            mark[_actor(who)] = _counter(last)
    actors = _versions(doc, versions)
    for item in expect_list(regs, "registers"):
        k, wall, tick, counter, actor, deleted, value = expect_list(item, "register", 7)
        a = _actor(actor)
        ts = Timestamp(expect_int(wall, "wall"), expect_int(tick, "tick", 0, 2**32), a)
        if type(deleted) is not bool:
            raise DecodeError("register: deleted is not a boolean")
        reg = Register(ts, OpId(_counter(counter), a), check_value(value), deleted)
        doc.registers.entries[_key(k)] = reg
    for k, totals in _keyed(counters):
        c = doc.counters[k] = PNCounter()
        for t in expect_list(totals, "counter"):
            actor, p, n = expect_list(t, "total", 3)
            c.totals[_actor(actor)] = (expect_int(p, "p", 0, 2**64), expect_int(n, "n", 0, 2**64))
    for k, adds in _keyed(top[8] if len(top) == 9 else []):
        doc.field_counters[k] = _restore_field_counter(k, adds, doc.versions)
    for k, elements in _keyed(sets):
        s = doc.sets[k] = ORSet()
        for e in expect_list(elements, "set"):
            element, tags = expect_list(e, "element", 2)
            for t in expect_list(tags, "tags"):
                tc, ta = expect_list(t, "tag", 2)
                s.add(check_value(element), OpId(_counter(tc), _actor(ta)))
    for k, runs in _keyed(lists):
        doc.lists[k] = _restore_list(runs, actors)
        if doc.lists[k].seq.overlapping():
            raise DecodeError("list: runs overlap")
    for k, runs in _keyed(texts):
        doc.texts[k] = _restore_text(runs, actors)
        if doc.texts[k].overlapping():
            raise DecodeError("text: runs overlap")
    if doc.snapshot_bytes() != data:
        raise DecodeError("snapshot is not canonical")
    return doc


def _versions(doc: Document, versions: Value) -> list[bytes]:
    actors = []
    for item in expect_list(versions, "versions"):
        actor, last = expect_list(item, "version", 2)
        a = _actor(actor)
        doc.versions[a] = _counter(last)
        actors.append(a)
    doc.clock = max([doc.clock, *doc.versions.values()])
    return actors


def _keyed(items: Value) -> Iterator[tuple[str, Value]]:
    for item in expect_list(items, "section"):
        k, body = expect_list(item, "entry", 2)
        yield _key(k), body


def _restore_field_counter(key: str, actors: Value, versions: dict[bytes, int]) -> FieldCounter:
    if not is_path(key):
        raise DecodeError("field counter: at a top-level key")
    counter = FieldCounter()
    for item in expect_list(actors, "field counter"):
        actor, adds = expect_list(item, "field counter actor", 2)
        a, last = _actor(actor), 0
        for add in expect_list(adds, "adds"):
            c, delta = expect_list(add, "add", 2)
            number, d = _counter(c), expect_int(delta, "delta", -MAX_COUNTER, MAX_COUNTER)
            if d == 0 or number <= last or number > versions.get(a, 0):
                raise DecodeError("field counter: an add out of order, zero or not applied")
            counter.add(OpId(number, a), d)
            last = number
    return counter  # actors out of order: the canonical check refuses it


def _restore_text(runs: Value, actors: list[bytes]) -> Sequence:
    seq = Sequence(keep_hidden=False)
    for item in expect_list(runs, "text"):
        a, c, content = expect_list(item, "run", 3)
        actor, counter = _actor_at(a, actors), _counter(c)
        if type(content) is int:
            _place(seq, actor, counter, expect_int(content, "length", 1, MAX_COUNTER), None, False)
        else:
            text = expect_str(content, "text", MAX_SNAPSHOT_BYTES)
            _place(seq, actor, counter, len(text), text, True)
    return seq


def _restore_list(runs: Value, actors: list[bytes]) -> ListCRDT:
    lst = ListCRDT()
    for item in expect_list(runs, "list"):
        fields = expect_list(item, "run")
        if len(fields) not in (4, 5) or type(fields[2]) is not bool:
            raise DecodeError("list run: malformed")
        actor, counter = _actor_at(fields[0], actors), _counter(fields[1])
        values = [check_value(v) for v in expect_list(fields[3], "values")]
        if len(fields) == 4:
            _place(lst.seq, actor, counter, len(values), values, fields[2])
            continue
        ec, ea = expect_list(fields[4], "element", 2)
        elem = OpId(_counter(ec), _actor_at(ea, actors))
        if len(values) != 1 or lst.seq.contains(OpId(counter, actor)):
            raise DecodeError("list run: malformed move slot")
        lst.restore_slot(MoveSlot(actor, counter, values[0], elem, fields[2], lst.seq.blocks[-1]))
    return lst


def _place(seq: Sequence, actor: bytes, counter: int, n: int, content: Any, visible: bool) -> None:
    if n == 0 or seq.contains(OpId(counter, actor)) or seq.contains(OpId(counter + n - 1, actor)):
        raise DecodeError("sequence run: empty or overlapping")
    seq.append_run(actor, counter, content, n, visible)


def _key(v: Value) -> str:
    key = expect_str(v, "key", MAX_PATH_BYTES)
    if is_path(key):
        segments(key)  # DecodeError unless canonical and within bounds
        return key
    return check_top_key(expect_str(v, "key", MAX_KEY))


def _actor(v: Value) -> bytes:
    actor = expect_bytes(v, "actor", max_size=MAX_ACTOR)
    if not actor:
        raise DecodeError("actor: empty")
    return actor


def _actor_at(v: Value, actors: list[bytes]) -> bytes:
    return actors[expect_int(v, "actor index", 0, len(actors) - 1)]


def _counter(v: Value) -> int:
    return expect_int(v, "counter", 1, MAX_COUNTER)
