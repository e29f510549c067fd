"""Nested maps of a document: ``doc.map("contacts").map("ana").text("notes")``.

A :class:`MapHandle` names a key (a top-level key or a path, :mod:`microsync.state.paths`);
its fields are CRDTs at longer keys, so each field merges on its own. ``list.map(index)`` is the
map held by a list element (a list of records). Local edits return the operation to publish,
like every handle (:mod:`microsync.state.handles`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.encoding import Value
from microsync.errors import DecodeError, LocalProtocolError
from microsync.state.handles import CounterHandle, ListHandle, SetHandle, TextHandle
from microsync.state.nesting import map_value
from microsync.state.ops import MapDelete, RegisterSet
from microsync.state.paths import Segment, join, segments

if TYPE_CHECKING:
    from microsync.state.document import Document

__all__ = ["MapHandle", "child_key", "element_map"]


def child_key(key: str, segment: Segment) -> str:
    """The stored key of field (or element) ``segment`` below ``key``
    (:class:`LocalProtocolError` past the nesting bounds)."""
    top, segs = segments(key)
    try:
        return join(top, *segs, segment)
    except DecodeError as e:
        raise LocalProtocolError(str(e)) from None


def element_map(doc: Document, key: str, index: int) -> MapHandle:
    """The map held by the element at ``index`` of list ``key``."""
    lst = doc.lists.get(key)
    if lst is None or not 0 <= index < len(lst):
        raise IndexError(f"no element {index} in list {key!r}")
    return MapHandle(doc, child_key(key, lst.element_at(index)))


class MapHandle:
    """A map of a document: named fields, each a value, text, set, list, counter or map."""

    def __init__(self, doc: Document, key: str) -> None:
        self._doc, self.key = doc, key

    def _field(self, name: str) -> str:
        if type(name) is not str:
            raise LocalProtocolError("a field name is text")
        return child_key(self.key, name)

    @property
    def value(self) -> dict[str, Value]:
        """The map as plain values (nested maps as dicts)."""
        return map_value(self._doc, self.key)

    def get(self, name: str, default: Value = None) -> Value:
        """The value of field ``name`` (``default`` if unset or deleted)."""
        return self._doc.get(self._field(name), default)

    def set(self, name: str, value: Value, *, now: int) -> RegisterSet:
        """Set field ``name`` (last writer wins, by hybrid clock)."""
        return self._doc.set(self._field(name), value, now=now)

    def delete(self, name: str) -> MapDelete:
        """Delete field ``name`` whatever it holds, as seen here (``docs/state.md``)."""
        return self._doc.clear(self._field(name))

    def clear(self) -> MapDelete:
        """Delete this whole map (every field, and a value, text, set or list at its own key),
        as seen here."""
        return self._doc.clear(self.key)

    def map(self, name: str) -> MapHandle:
        """The map in field ``name``."""
        return MapHandle(self._doc, self._field(name))

    def text(self, name: str) -> TextHandle:
        """The text in field ``name``."""
        return self._doc.text(self._field(name))

    def orset(self, name: str) -> SetHandle:
        """The observed-remove set in field ``name``."""
        return self._doc.orset(self._field(name))

    def list(self, name: str) -> ListHandle:
        """The list in field ``name``."""
        return self._doc.list(self._field(name))

    def counter(self, name: str) -> CounterHandle:
        """The counter in field ``name`` (deleted with the map, as seen; concurrent adds
        survive: :mod:`microsync.state.counter`)."""
        return self._doc.counter(self._field(name))
