"""A document: named registers, counters, sets, lists and texts, as a fold of operations.

Theory of operation
-------------------
Local edits (``doc.set``, ``doc.text(key).insert`` ...) change the document at once and return
the one operation to publish. Remote operations go through :meth:`Document.apply`, which returns
the :data:`~microsync.state.ops.Change` events they caused. Ids are ``(counter, actor)``:
``actor`` is given by the integrator (a device id); ``counter`` is a Lamport clock, one above
the greatest counter the document has seen, so a new operation's id is greater than the id of
everything it was made after (see :mod:`microsync.state.ids`).

Causal-delivery contract: :meth:`apply` must see an actor's operations in the order the actor
made them, and every operation after the operations it names (an insert's origin, deleted or
moved elements, removed tags); the feed layer guarantees both through entries' ``deps``. An
operation that names an element not here raises :class:`~microsync.state.ids.MissingDependency`
and changes nothing. Duplicates are harmless: ``versions`` holds the last counter applied per
actor, and an operation at or below it is skipped.

The state after any causal order of the same set of operations is the same, down to the bytes of
:meth:`snapshot_bytes` (:mod:`microsync.state.snapshot`).
"""

from __future__ import annotations

from typing import assert_never

from microsync.encoding import Value
from microsync.errors import LocalProtocolError
from microsync.state.clock import HLC, Timestamp
from microsync.state.codec import MAX_KEY, check_value
from microsync.state.counter import PNCounter
from microsync.state.ids import MAX_ACTOR, OpId
from microsync.state.listcrdt import Edit, ListCRDT
from microsync.state.ops import (
    Change,
    CounterAdd,
    CounterChanged,
    IdRange,
    ListDelete,
    ListDeleted,
    ListInsert,
    ListInserted,
    ListMove,
    Op,
    RegisterChanged,
    RegisterDelete,
    RegisterSet,
    SetAdd,
    SetChanged,
    SetRemove,
    TextDelete,
    TextDeleted,
    TextInsert,
    TextInserted,
    span,
)
from microsync.state.orset import ORSet
from microsync.state.registers import Register, Registers
from microsync.state.sequence import Sequence

__all__ = ["CounterHandle", "Document", "ListHandle", "SetHandle", "TextHandle"]

Changes = list[Change]
Edits = list[Edit]
Elements = list[OpId]


class Document:
    """The replicated state of one named document, written by the device ``actor``."""

    def __init__(self, actor: bytes) -> None:
        if not 0 < len(actor) <= MAX_ACTOR:
            raise ValueError(f"actor must be 1 to {MAX_ACTOR} bytes")
        self.actor = actor
        self.clock = 0  # the greatest counter seen (Lamport)
        self.versions: dict[bytes, int] = {}  # actor -> last counter applied
        self.hlc = HLC(actor)
        self.registers = Registers()
        self.counters: dict[str, PNCounter] = {}
        self.sets: dict[str, ORSet] = {}
        self.lists: dict[str, ListCRDT] = {}
        self.texts: dict[str, Sequence] = {}

    # ------------------------------------------------------------------ reading

    def get(self, key: str, default: Value = None) -> Value:
        """The value of register ``key`` (``default`` if never set or deleted)."""
        reg = self.registers.get(key)
        return default if reg is None or reg.deleted else reg.value

    def to_value(self) -> dict[str, Value]:
        """Every key with its value: registers, then counters, sets, lists and texts (a later
        kind shadows an earlier one on the same key; keep one kind per key)."""
        out: dict[str, Value] = dict(self.registers.values())
        out.update({k: c.value for k, c in sorted(self.counters.items()) if c})
        out.update({k: s.values() for k, s in sorted(self.sets.items()) if s})
        out.update({k: lst.values() for k, lst in sorted(self.lists.items()) if lst})
        out.update({k: text_value(t) for k, t in sorted(self.texts.items()) if t})
        return out

    def snapshot_bytes(self) -> bytes:
        """The canonical encoding of the whole state (see :mod:`microsync.state.snapshot`)."""
        from microsync.state.snapshot import encode_snapshot

        return encode_snapshot(self)

    @classmethod
    def from_snapshot(cls, data: bytes, actor: bytes) -> Document:
        """A document for ``actor`` holding the state ``data`` encodes."""
        from microsync.state.snapshot import decode_snapshot

        return decode_snapshot(data, cls(actor))

    # ------------------------------------------------------------------ local edits

    def set(self, key: str, value: Value, *, now: int) -> RegisterSet:
        """Set register ``key`` to ``value`` at wall time ``now`` (ms)."""
        ts = self._stamp(key, now)
        op = RegisterSet(id=self._next_id(), key=key, ts=ts, value=check_value(value))
        self._apply(op)
        return op

    def delete(self, key: str, *, now: int) -> RegisterDelete:
        """Delete register ``key`` at wall time ``now`` (ms)."""
        op = RegisterDelete(id=self._next_id(), key=key, ts=self._stamp(key, now))
        self._apply(op)
        return op

    def counter(self, key: str) -> CounterHandle:
        """The counter ``key`` (empty until first added to)."""
        return CounterHandle(self, _check_key(key))

    def orset(self, key: str) -> SetHandle:
        """The observed-remove set ``key``."""
        return SetHandle(self, _check_key(key))

    def list(self, key: str) -> ListHandle:
        """The list ``key``."""
        return ListHandle(self, _check_key(key))

    def text(self, key: str) -> TextHandle:
        """The text ``key``."""
        return TextHandle(self, _check_key(key))

    # ------------------------------------------------------------------ remote operations

    def apply(self, op: Op, *, now: int | None = None) -> Changes:
        """Apply a remote operation (delivered in causal order, see the module docstring) and
        return what it changed. ``now`` (ms), when given, advances the clock past register
        timestamps (far-future ones excepted, see :mod:`microsync.state.clock`)."""
        if op.id.counter <= self.versions.get(op.id.actor, 0):
            return []
        if now is not None and isinstance(op, RegisterSet | RegisterDelete):
            self.hlc.receive(op.ts, now)
        return self._apply(op)

    # ------------------------------------------------------------------ internals

    def _next_id(self) -> OpId:
        return OpId(self.clock + 1, self.actor)

    def _stamp(self, key: str, now: int) -> Timestamp:
        return self.registers.stamp(_check_key(key), self.hlc.send(now))

    def _seen(self, op_id: OpId, n: int) -> None:
        last = op_id.counter + n - 1
        self.versions[op_id.actor] = last
        if last > self.clock:
            self.clock = last

    def _apply(self, op: Op) -> Changes:
        changes = self._fold(op)
        self._seen(op.id, span(op))
        return changes

    def _fold(self, op: Op) -> Changes:
        key = op.key
        match op:
            case TextInsert():
                pos = self._text(key).integrate(op.id.actor, op.id.counter, op.origin, op.text)
                return [] if pos is None else [TextInserted(key=key, index=pos, text=op.text)]
            case TextDelete():
                return self._text_delete(key, op.ranges)
            case RegisterSet() | RegisterDelete():
                deleted = isinstance(op, RegisterDelete)
                value = None if isinstance(op, RegisterDelete) else op.value
                if self.registers.write(key, Register(op.ts, op.id, value, deleted)):
                    return [RegisterChanged(key=key, value=value, deleted=deleted)]
                return []
            case CounterAdd():
                counter = self.counters.setdefault(key, PNCounter())
                counter.add(op.id.actor, op.delta)
                return [CounterChanged(key=key, value=counter.value)]
            case SetAdd():
                if self.sets.setdefault(key, ORSet()).add(op.element, op.id):
                    return [SetChanged(key=key, element=op.element, present=True)]
                return []
            case SetRemove():
                if self.sets.setdefault(key, ORSet()).remove(op.element, op.tags):
                    return [SetChanged(key=key, element=op.element, present=False)]
                return []
            case ListInsert():
                lst = self._list(key)
                edits = lst.insert(op.id.actor, op.id.counter, op.origin, list(op.values))
                return _list_changes(key, edits)
            case ListDelete():
                return self._list_delete(key, op.ranges)
            case ListMove():
                lst = self._list(key)
                return _list_changes(key, lst.move(op.id, op.origin, op.element))
            case _:
                assert_never(op)

    def _text(self, key: str) -> Sequence:
        text = self.texts.get(key)
        if text is None:
            text = self.texts[key] = Sequence(keep_hidden=False)
        return text

    def _list(self, key: str) -> ListCRDT:
        lst = self.lists.get(key)
        if lst is None:
            lst = self.lists[key] = ListCRDT()
        return lst

    def _text_delete(self, key: str, ranges: tuple[IdRange, ...]) -> Changes:
        text = self._text(key)
        if len(ranges) > 1:  # all or nothing (hide checks a single range itself)
            for r in ranges:
                text.check(r.counter, r.actor, r.length)
        changes: Changes = []
        for r in ranges:
            for index, n in text.hide(r.counter, r.actor, r.length):
                changes.append(TextDeleted(key=key, index=index, length=n))
        return changes

    def _list_delete(self, key: str, ranges: tuple[IdRange, ...]) -> Changes:
        lst = self._list(key)
        elements: Elements = [OpId(r.counter + i, r.actor) for r in ranges for i in range(r.length)]
        for element in elements:  # all or nothing
            lst.winner(element)
        edits: Edits = []
        for element in elements:
            edits += lst.delete(element)
        return _list_changes(key, edits)


def text_value(text: Sequence) -> str:
    """The visible characters of a text sequence."""
    return "".join([run.content for run in text.runs() if run.visible])


def _check_key(key: str) -> str:
    if type(key) is not str or len(key) > MAX_KEY:
        raise LocalProtocolError(f"a key is text of at most {MAX_KEY} characters")
    return key


def _list_changes(key: str, edits: list[Edit]) -> list[Change]:
    out: list[Change] = []
    for kind, index, arg in edits:
        if kind == "insert":
            out.append(ListInserted(key=key, index=index, values=arg))
        else:
            out.append(ListDeleted(key=key, index=index, count=arg))
    return out


# ---------------------------------------------------------------------------------- handles


class CounterHandle:
    """A PN-counter of a document."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key

    @property
    def value(self) -> int:
        counter = self._doc.counters.get(self.key)
        return 0 if counter is None else counter.value

    def add(self, delta: int) -> CounterAdd:
        """Add ``delta`` (non-zero; negative to decrement)."""
        if type(delta) is not int or delta == 0:
            raise ValueError("delta must be a non-zero integer")
        doc = self._doc
        op = CounterAdd(id=doc._next_id(), key=self.key, delta=delta)
        doc._apply(op)
        return op


class SetHandle:
    """An observed-remove set of a document."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key

    @property
    def values(self) -> list[Value]:
        s = self._doc.sets.get(self.key)
        return [] if s is None else s.values()

    def __contains__(self, element: Value) -> bool:
        s = self._doc.sets.get(self.key)
        return s is not None and element in s

    def add(self, element: Value) -> SetAdd:
        """Add ``element``."""
        doc = self._doc
        op = SetAdd(id=doc._next_id(), key=self.key, element=check_value(element))
        doc._apply(op)
        return op

    def discard(self, element: Value) -> SetRemove | None:
        """Remove ``element`` as seen here (``None``: it is not present, nothing to publish)."""
        doc = self._doc
        s = doc.sets.get(self.key)
        tags = s.tags(element) if s is not None else ()
        if not tags:
            return None
        op = SetRemove(id=doc._next_id(), key=self.key, element=element, tags=tags)
        doc._apply(op)
        return op


class ListHandle:
    """A list of a document."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key
        self._list = doc.lists.get(key)

    def _crdt(self) -> ListCRDT:
        if self._list is None:
            self._list = self._doc.lists.setdefault(self.key, ListCRDT())
        return self._list

    @property
    def value(self) -> list[Value]:
        lst = self._doc.lists.get(self.key)
        return [] if lst is None else lst.values()

    def __len__(self) -> int:
        lst = self._doc.lists.get(self.key)
        return 0 if lst is None else len(lst)

    def insert(self, index: int, *values: Value) -> ListInsert:
        """Insert ``values`` so that the first one is at ``index``."""
        if not values:
            raise ValueError("nothing to insert")
        checked = [check_value(v) for v in values]
        doc, seq = self._doc, self._crdt().seq
        if not 0 <= index <= len(seq):
            raise IndexError(f"index {index} out of range for length {len(seq)}")
        op_id = doc._next_id()
        origin = seq.local_insert(index, doc.actor, op_id.counter, checked)
        doc._seen(op_id, len(values))
        return ListInsert(id=op_id, key=self.key, origin=origin, values=tuple(checked))

    def delete(self, index: int, count: int = 1) -> ListDelete:
        """Delete ``count`` elements from ``index``."""
        lst = self._crdt()
        if count <= 0 or not 0 <= index <= index + count <= len(lst):
            raise IndexError(f"cannot delete {count} at {index} of {len(lst)}")
        ranges: list[IdRange] = []
        for i in range(count):
            e = lst.element_at(index + i)
            last = ranges[-1] if ranges else None
            if last and last.actor == e.actor and last.counter + last.length == e.counter:
                ranges[-1] = IdRange(last.counter, e.actor, last.length + 1)
            else:
                ranges.append(IdRange(e.counter, e.actor, 1))
        op = ListDelete(id=self._doc._next_id(), key=self.key, ranges=tuple(ranges))
        self._doc._apply(op)
        return op

    def move(self, index: int, to: int) -> ListMove:
        """Move the element at ``index`` so that it ends up at ``to``."""
        lst = self._crdt()
        if not (0 <= index < len(lst) and 0 <= to < len(lst)):
            raise IndexError(f"cannot move {index} to {to} in a list of {len(lst)}")
        element = lst.element_at(index)
        before = to - 1 if to - 1 < index else to
        origin = lst.seq.id_at(before) if to > 0 else None
        op = ListMove(id=self._doc._next_id(), key=self.key, origin=origin, element=element)
        self._doc._apply(op)
        return op


class TextHandle:
    """A text of a document: insert and delete by character index."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key
        self._seq = doc.texts.get(key)

    def _text(self) -> Sequence:
        if self._seq is None:
            self._seq = self._doc.texts.setdefault(self.key, Sequence(keep_hidden=False))
        return self._seq

    @property
    def value(self) -> str:
        seq = self._doc.texts.get(self.key)
        return "" if seq is None else text_value(seq)

    def __str__(self) -> str:
        return self.value

    def __len__(self) -> int:
        seq = self._doc.texts.get(self.key)
        return 0 if seq is None else len(seq)

    def insert(self, index: int, text: str) -> TextInsert:
        """Insert ``text`` so that it starts at character ``index``."""
        if not text or type(text) is not str:
            raise ValueError("nothing to insert")
        if not text.isascii():
            text.encode()  # UnicodeEncodeError (a ValueError) on lone surrogates
        seq, doc = self._text(), self._doc
        if not 0 <= index <= seq.length:
            raise IndexError(f"index {index} out of range for length {seq.length}")
        counter = doc.clock + 1
        origin = seq.local_insert(index, doc.actor, counter, text)
        last = counter + len(text) - 1
        doc.versions[doc.actor] = doc.clock = last
        return TextInsert(id=OpId(counter, doc.actor), key=self.key, origin=origin, text=text)

    def delete(self, index: int, length: int = 1) -> TextDelete:
        """Delete ``length`` characters from ``index``."""
        seq, doc = self._text(), self._doc
        if length <= 0 or not 0 <= index <= index + length <= seq.length:
            raise IndexError(f"cannot delete {length} at {index} of {seq.length}")
        counter = doc.clock + 1
        ranges = tuple(IdRange(*r) for r in seq.local_delete(index, length))
        doc.versions[doc.actor] = doc.clock = counter
        return TextDelete(id=OpId(counter, doc.actor), key=self.key, ranges=ranges)
