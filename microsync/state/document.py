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
from microsync.errors import LocalProtocolError, MicrosyncError
from microsync.state.clock import HLC, Timestamp
from microsync.state.codec import check_value
from microsync.state.counter import FieldCounter, PNCounter
from microsync.state.handles import CounterHandle, ListHandle, SetHandle, TextHandle, text_value
from microsync.state.ids import MAX_ACTOR, OpId
from microsync.state.listcrdt import Edit, ListCRDT
from microsync.state.maps import MapHandle
from microsync.state.nesting import clear, register_visible, render
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
    MapDelete,
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
from microsync.state.paths import MAX_KEY, is_path, segments
from microsync.state.registers import Register, Registers
from microsync.state.sequence import Sequence

__all__ = ["CounterHandle", "Document", "ListHandle", "MapHandle", "SetHandle", "TextHandle"]

Changes = list[Change]
Edits = list[Edit]
Elements = list[OpId]


class Document:
    """The replicated state of one named document, written by the device ``actor``."""

    def __init__(self, actor: bytes, *, clock: int = 0) -> None:
        """``actor`` identifies this writer in the group (a device id). ``clock``, if given, is
        a counter this actor may already have used: new operations are numbered above it."""
        if not 0 < len(actor) <= MAX_ACTOR:
            raise ValueError(f"actor must be 1 to {MAX_ACTOR} bytes")
        self.actor = actor
        self.clock = clock  # the greatest counter seen (Lamport)
        self.versions: dict[bytes, int] = {}  # actor -> last counter applied
        self.hlc = HLC(actor)
        self.registers = Registers()
        self.counters: dict[str, PNCounter] = {}  # at top-level keys
        self.field_counters: dict[str, FieldCounter] = {}  # fields of nested maps
        self.sets: dict[str, ORSet] = {}
        self.lists: dict[str, ListCRDT] = {}
        self.texts: dict[str, Sequence] = {}
        self.cleared: dict[str, dict[bytes, int]] = {}  # key -> seen of its MapDeletes (max)

    # ------------------------------------------------------------------ reading

    def get(self, key: str, default: Value = None) -> Value:
        """The value of register ``key`` (``default`` if never set or deleted)."""
        reg = self.registers.get(key)
        if reg is None or reg.deleted or not register_visible(self, key, reg.id):
            return default
        return reg.value

    def to_value(self) -> dict[str, Value]:
        """Every key with its value: registers, then counters, sets, lists and texts (a later
        kind shadows an earlier one on the same key; keep one kind per key). Nested maps show
        as dicts under their top-level key (:func:`microsync.state.nesting.render`)."""
        regs = self.registers.entries
        out: dict[str, Value] = {
            k: v
            for k, v in self.registers.values().items()
            if not is_path(k) and register_visible(self, k, regs[k].id)
        }
        out.update({k: c.value for k, c in sorted(self.counters.items()) if c})
        out.update({k: s.values() for k, s in sorted(self.sets.items()) if s and not is_path(k)})
        lists = sorted(self.lists.items())
        out.update({k: lst.values() for k, lst in lists if lst and not is_path(k)})
        texts = sorted(self.texts.items())
        out.update({k: text_value(t) for k, t in texts if t and not is_path(k)})
        return render(self, out)

    def snapshot_bytes(self) -> bytes:
        """The canonical encoding of the whole state (see :mod:`microsync.state.snapshot`)."""
        from microsync.state.snapshot import encode_snapshot

        return encode_snapshot(self)

    @classmethod
    def from_snapshot(cls, data: bytes, actor: bytes, *, clock: int = 0) -> Document:
        """A document for ``actor`` holding the state ``data`` encodes (``clock`` as in the
        constructor; new operations are numbered above it and above the snapshot)."""
        from microsync.state.snapshot import decode_snapshot

        return decode_snapshot(data, cls(actor, clock=clock))

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

    def clear(self, key: str) -> MapDelete:
        """Delete ``key`` and everything below it, as this replica has seen it (the rule for
        concurrent edits: :mod:`microsync.state.nesting`)."""
        seen = tuple(sorted(self.versions.items()))
        op = MapDelete(id=self._next_id(), key=_check_stored(key), seen=seen)
        self._apply(op)
        return op

    def map(self, key: str) -> MapHandle:
        """The map ``key``: nested fields, each merging on its own (:mod:`microsync.state.maps`)."""
        return MapHandle(self, _check_stored(key))

    def counter(self, key: str) -> CounterHandle:
        """The counter ``key`` (empty until first added to): a top-level key, or a field of a
        nested map (deleted with it, as seen: :mod:`microsync.state.counter`)."""
        return CounterHandle(self, _check_stored(key))

    def orset(self, key: str) -> SetHandle:
        """The observed-remove set ``key``."""
        return SetHandle(self, _check_stored(key))

    def list(self, key: str) -> ListHandle:
        """The list ``key``."""
        return ListHandle(self, _check_stored(key))

    def text(self, key: str) -> TextHandle:
        """The text ``key``."""
        return TextHandle(self, _check_stored(key))

    # ------------------------------------------------------------------ remote operations

    def apply(self, op: Op, *, now: int | None = None) -> Changes:
        """Apply a remote operation (delivered in causal order, see the module docstring) and
        return what it changed. ``now`` (ms), when given, advances the clock past register
        timestamps (far-future ones excepted, see :mod:`microsync.state.clock`)."""
        counter, actor = op.id
        if counter <= self.versions.get(actor, 0):
            return []
        # the hot paths, text edits, skip the dispatch of _fold and span()
        changes: Changes
        if type(op) is TextInsert:
            text = self.texts.get(op.key)
            if text is None:
                text = self._text(op.key)
            pos = text.integrate(actor, counter, op.origin, op.text)
            changes = [] if pos is None else [TextInserted(key=op.key, index=pos, text=op.text)]
            counter += len(op.text) - 1
        elif type(op) is TextDelete:
            ranges = op.ranges
            if len(ranges) == 1:  # what a local delete of one run makes
                r = ranges[0]
                removed = self._text(op.key).hide(r.counter, r.actor, r.length)
                changes = [TextDeleted(key=op.key, index=i, length=n) for i, n in removed]
            else:
                changes = self._text_delete(op.key, ranges)
        else:
            if now is not None and isinstance(op, RegisterSet | RegisterDelete):
                self.hlc.receive(op.ts, now)
            return self._apply(op)
        self.versions[actor] = counter
        if counter > self.clock:
            self.clock = counter
        return changes

    # ------------------------------------------------------------------ internals

    def _next_id(self) -> OpId:
        return OpId(self.clock + 1, self.actor)

    def _stamp(self, key: str, now: int) -> Timestamp:
        return self.registers.stamp(_check_stored(key), self.hlc.send(now))

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
                if is_path(key):
                    field = self.field_counters.setdefault(key, FieldCounter())
                    field.add(op.id, op.delta)
                    return [CounterChanged(key=key, value=field.value)]
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
            case MapDelete():
                return clear(self, op)
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


def _check_key(key: str) -> str:
    if type(key) is not str or len(key) > MAX_KEY or key.startswith("\x00"):
        raise LocalProtocolError(f"a key is text of at most {MAX_KEY} characters (no NUL first)")
    return key


def _check_stored(key: str) -> str:
    """A top-level key, or a path made by :func:`microsync.state.paths.join`."""
    if type(key) is str and is_path(key):
        try:
            segments(key)
        except MicrosyncError as e:
            raise LocalProtocolError(str(e)) from None
        return key
    return _check_key(key)


def _list_changes(key: str, edits: list[Edit]) -> list[Change]:
    out: list[Change] = []
    for kind, index, arg in edits:
        if kind == "insert":
            out.append(ListInserted(key=key, index=index, values=arg))
        else:
            out.append(ListDeleted(key=key, index=index, count=arg))
    return out
