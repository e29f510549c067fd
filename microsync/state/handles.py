"""Handles: the local-edit API of one value of a :class:`~microsync.state.document.Document`.

``doc.counter(key)``, ``doc.orset(key)``, ``doc.list(key)`` and ``doc.text(key)`` return these.
Each edit changes the document at once and returns the one operation to publish. A handle
creates its value in the document on its first edit, never on a read, so reading a key leaves
the document (and its snapshot) unchanged.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from microsync.encoding import Value
from microsync.state.codec import check_value
from microsync.state.ids import OpId
from microsync.state.listcrdt import ListCRDT
from microsync.state.ops import (
    CounterAdd,
    IdRange,
    ListDelete,
    ListInsert,
    ListMove,
    SetAdd,
    SetRemove,
    TextDelete,
    TextInsert,
)
from microsync.state.sequence import Sequence

if TYPE_CHECKING:
    from microsync.state.document import Document
    from microsync.state.maps import MapHandle

__all__ = ["CounterHandle", "ListHandle", "SetHandle", "TextHandle", "text_value"]


def text_value(text: Sequence) -> str:
    """The visible characters of a text sequence."""
    return "".join([run.content for run in text.runs() if run.visible])


class CounterHandle:
    """A PN-counter of a document."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key

    @property
    def value(self) -> int:
        doc = self._doc
        counter = doc.field_counters.get(self.key) or doc.counters.get(self.key)
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
    def value(self) -> list[Value]:
        """The elements, in the order of their canonical encodings (``value``, like every
        handle)."""
        s = self._doc.sets.get(self.key)
        return [] if s is None else s.values()

    @property
    def values(self) -> list[Value]:
        """Deprecated spelling of :attr:`value`."""
        warnings.warn("SetHandle.values is deprecated: use .value", DeprecationWarning, 2)
        return self.value

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

    def map(self, index: int) -> MapHandle:
        """The map held by the element at ``index`` (a list of records: insert ``{}``, then
        edit ``list.map(i)``; each field merges on its own)."""
        from microsync.state.maps import element_map

        return element_map(self._doc, self.key, index)

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
