"""Shared helpers of the ``test_state_*`` tests: random local edits, replicas that remember what
they applied, random causal delivery orders, and shadows that replay change events.

(No tests here; pytest collects this module and finds none.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from microsync.encoding import Value
from microsync.state import (
    Change,
    CounterChanged,
    Document,
    ListDeleted,
    ListInserted,
    Op,
    RegisterChanged,
    SetChanged,
    TextDeleted,
    TextInserted,
)
from microsync.state.codec import decode_op, encode_op
from microsync.state.ops import span

KEYS = ("a", "b")
KINDS = (
    "set",
    "delete",
    "counter",
    "add",
    "discard",
    "list_insert",
    "list_delete",
    "list_move",
    "text_insert",
    "text_delete",
)


@dataclass
class Made:
    """An operation and the version vector of its author just before it (its causal past)."""

    op: Op
    past: dict[bytes, int]


@dataclass
class Replica:
    doc: Document
    log: list[Op] = field(default_factory=list)  # everything applied here, in a causal order
    shadow: dict[tuple[str, str], list[Value]] = field(default_factory=dict)

    def start_shadow(self) -> None:
        """Make the shadows equal to the current texts and lists."""
        self.shadow = {}
        for key in KEYS:
            self.shadow[("text", key)] = list(self.doc.text(key).value)
            self.shadow[("list", key)] = self.doc.list(key).value

    def receive(self, op: Op) -> None:
        """Apply ``op`` (through the codec) and check the events against the value."""
        again = decode_op(encode_op(op))
        assert again == op
        new = op.id.counter > self.doc.versions.get(op.id.actor, 0)
        changes = self.doc.apply(again, now=0)
        if new:
            self.log.append(op)
        else:
            assert changes == []
        replay(self.shadow, changes)


def replay(shadow: dict[tuple[str, str], list[Value]], changes: list[Change]) -> None:
    """Apply text and list events to ``shadow`` (keyed by ``(kind, key)``)."""
    for change in changes:
        match change:
            case TextInserted():
                seq = shadow[("text", change.key)]
                seq[change.index : change.index] = list(change.text)
            case TextDeleted():
                del shadow[("text", change.key)][change.index : change.index + change.length]
            case ListInserted():
                seq = shadow[("list", change.key)]
                seq[change.index : change.index] = list(change.values)
            case ListDeleted():
                del shadow[("list", change.key)][change.index : change.index + change.count]
            case RegisterChanged() | CounterChanged() | SetChanged():
                pass


def check_shadow(replica: Replica) -> None:
    """The events replayed so far describe the current texts and lists."""
    for (kind, key), seq in replica.shadow.items():
        if kind == "text":
            assert "".join(seq) == replica.doc.text(key).value  # type: ignore[arg-type]
        else:
            assert seq == replica.doc.list(key).value


def local_edit(
    doc: Document, data: st.DataObject, now: int, kinds: tuple[str, ...] = KINDS
) -> Op | None:
    """A random local edit of ``doc`` (``None`` when the drawn edit is impossible)."""
    kind = data.draw(st.sampled_from(kinds), label="kind")
    key = data.draw(st.sampled_from(KEYS), label="key")
    small = st.integers(0, 3)
    if kind == "set":
        return doc.set(key, data.draw(small), now=now)
    if kind == "delete":
        return doc.delete(key, now=now)
    if kind == "counter":
        return doc.counter(key).add(data.draw(st.sampled_from([-2, -1, 1, 3])))
    if kind == "add":
        return doc.orset(key).add(data.draw(small))
    if kind == "discard":
        return doc.orset(key).discard(data.draw(small))
    if kind.startswith("list"):
        return _list_edit(doc, key, kind, data)
    return _text_edit(doc, key, kind, data)


def _list_edit(doc: Document, key: str, kind: str, data: st.DataObject) -> Op | None:
    lst = doc.list(key)
    n = len(lst)
    if kind == "list_insert":
        values = data.draw(st.lists(st.integers(0, 99), min_size=1, max_size=3))
        return lst.insert(data.draw(st.integers(0, n)), *values)
    if n == 0:
        return None
    i = data.draw(st.integers(0, n - 1))
    if kind == "list_delete":
        return lst.delete(i, data.draw(st.integers(1, n - i)))
    return lst.move(i, data.draw(st.integers(0, n - 1)))


def _text_edit(doc: Document, key: str, kind: str, data: st.DataObject) -> Op | None:
    text = doc.text(key)
    n = len(text)
    if kind == "text_insert":
        s = data.draw(st.text(alphabet="xyzé", min_size=1, max_size=4))
        return text.insert(data.draw(st.integers(0, n)), s)
    if n == 0:
        return None
    i = data.draw(st.integers(0, n - 1))
    return text.delete(i, data.draw(st.integers(1, min(3, n - i))))


def causal_order(made: list[Made], rng: random.Random) -> list[Op]:
    """A random order of ``made`` in which every op comes after its causal past."""
    applied: dict[bytes, int] = {}
    pending = list(made)
    out: list[Op] = []
    while pending:
        ready = [
            i
            for i, m in enumerate(pending)
            if all(applied.get(a, 0) >= c for a, c in m.past.items())
            and applied.get(m.op.id.actor, 0) < m.op.id.counter
        ]
        assert ready, "no operation is ready: the causal pasts are inconsistent"
        m = pending.pop(rng.choice(ready))
        out.append(m.op)
        applied[m.op.id.actor] = m.op.id.counter + span(m.op) - 1
    return out


def actor(i: int) -> bytes:
    """A 32-byte actor id, like a device id."""
    return bytes([i + 1]) * 32
