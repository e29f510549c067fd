"""Observed-remove set: an element is present while some add of it has not been removed.

Each :class:`~microsync.state.ops.SetAdd` tags the element with its operation id. A
:class:`~microsync.state.ops.SetRemove` withdraws the tags its author had observed, and only
those: an add concurrent with a remove survives it ("add wins"). Elements are CBOR values; they
are compared by their canonical encoding.
"""

from __future__ import annotations

from microsync import encoding
from microsync.encoding import Value
from microsync.state.ids import OpId

__all__ = ["ORSet"]


class ORSet:
    """One set."""

    def __init__(self) -> None:
        self.elements: dict[bytes, tuple[Value, set[OpId]]] = {}  # encoding -> (element, tags)

    def __bool__(self) -> bool:
        return bool(self.elements)

    def __contains__(self, element: Value) -> bool:
        return encoding.encode(element) in self.elements

    def tags(self, element: Value) -> tuple[OpId, ...]:
        """The live tags of ``element``, sorted (what a remove of it must name)."""
        entry = self.elements.get(encoding.encode(element))
        return tuple(sorted(entry[1])) if entry else ()

    def add(self, element: Value, tag: OpId) -> bool:
        """Tag ``element``; return whether it just became present."""
        key = encoding.encode(element)
        entry = self.elements.get(key)
        if entry is None:
            self.elements[key] = (element, {tag})
            return True
        entry[1].add(tag)
        return False

    def remove(self, element: Value, tags: tuple[OpId, ...]) -> bool:
        """Withdraw ``tags`` from ``element``; return whether it just left the set."""
        key = encoding.encode(element)
        entry = self.elements.get(key)
        if entry is None:
            return False
        entry[1].difference_update(tags)
        if entry[1]:
            return False
        del self.elements[key]
        return True

    def values(self) -> list[Value]:
        """The present elements, in the order of their canonical encodings."""
        return [self.elements[k][0] for k in sorted(self.elements)]
