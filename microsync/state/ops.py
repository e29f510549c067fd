"""The operations of a document: one frozen dataclass per kind, and the events applying them
reports.

Every operation names the document key it acts on and has a unique :class:`OpId`. Which CRDT a
key belongs to is part of the operation kind, so one key of each kind can coexist (a text
``"notes"`` and a counter ``"notes"`` are two different things; see ``docs/state.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from microsync.encoding import Value
from microsync.state.clock import Timestamp
from microsync.state.ids import OpId

__all__ = [
    "Change",
    "CounterAdd",
    "CounterChanged",
    "IdRange",
    "ListDelete",
    "ListDeleted",
    "ListInsert",
    "ListInserted",
    "ListMove",
    "MapCleared",
    "MapDelete",
    "Op",
    "RegisterChanged",
    "RegisterDelete",
    "RegisterSet",
    "SetAdd",
    "SetChanged",
    "SetRemove",
    "TextDelete",
    "TextDeleted",
    "TextInsert",
    "TextInserted",
    "references",
    "span",
]


class IdRange(NamedTuple):
    """Elements ``(counter + i, actor)`` for ``i < length``."""

    counter: int
    actor: bytes
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterSet:
    """Set register ``key`` to ``value``: last writer wins by ``(ts, id)``."""

    id: OpId
    key: str
    ts: Timestamp
    value: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterDelete:
    """Delete register ``key``: a tombstone that takes part in last-writer-wins like a set."""

    id: OpId
    key: str
    ts: Timestamp


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterAdd:
    """Add ``delta`` (positive or negative, never 0) to counter ``key``."""

    id: OpId
    key: str
    delta: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAdd:
    """Add ``element`` to set ``key``, tagged with this operation's id."""

    id: OpId
    key: str
    element: Value


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRemove:
    """Remove ``element`` from set ``key``: withdraw the add ``tags`` its author had observed."""

    id: OpId
    key: str
    element: Value
    tags: tuple[OpId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextInsert:
    """Insert ``text`` after element ``origin`` (``None``: at the start) of text ``key``.
    Character ``i`` gets id ``(id.counter + i, id.actor)``."""

    id: OpId
    key: str
    origin: OpId | None
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelete:
    """Delete the characters in ``ranges`` of text ``key`` (tombstones)."""

    id: OpId
    key: str
    ranges: tuple[IdRange, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListInsert:
    """Insert ``values`` after element ``origin`` of list ``key``; value ``i`` gets id
    ``(id.counter + i, id.actor)``."""

    id: OpId
    key: str
    origin: OpId | None
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDelete:
    """Delete the list elements in ``ranges`` (wherever they have moved to)."""

    id: OpId
    key: str
    ranges: tuple[IdRange, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListMove:
    """Move element ``element`` of list ``key`` to a new position after ``origin``; of
    concurrent moves of one element, the greatest id wins."""

    id: OpId
    key: str
    origin: OpId | None
    element: OpId


@dataclass(frozen=True, slots=True, kw_only=True)
class MapDelete:
    """Delete the field ``key`` of a nested map, whatever it holds (a value, a text, a set, a
    list, a map and everything below it), as its author had seen it: ``seen`` is the author's
    version vector ``((actor, last counter), ...)`` sorted by actor. What was written under
    ``key`` concurrently (not seen) survives; see ``docs/state.md``, "Nested documents"."""

    id: OpId
    key: str
    seen: tuple[tuple[bytes, int], ...]


Op: TypeAlias = (
    RegisterSet
    | RegisterDelete
    | CounterAdd
    | SetAdd
    | SetRemove
    | TextInsert
    | TextDelete
    | ListInsert
    | ListDelete
    | ListMove
    | MapDelete
)


def span(op: Op) -> int:
    """How many counters ``op`` uses: one per inserted element, else one."""
    if isinstance(op, TextInsert):
        return len(op.text)
    if isinstance(op, ListInsert):
        return len(op.values)
    return 1


def references(op: Op) -> tuple[OpId, ...]:
    """The element and operation ids ``op`` names, which must be applied before it (besides its
    author's earlier operations): an insert's or move's origin, the moved element, the first
    and last element of each deleted range, a remove's tags. For an integrator mapping ids to
    the feed entries that carry them, to fill an entry's ``deps``."""
    if isinstance(op, TextInsert | ListInsert):
        return () if op.origin is None else (op.origin,)
    if isinstance(op, ListMove):
        return (op.element,) if op.origin is None else (op.origin, op.element)
    if isinstance(op, TextDelete | ListDelete):
        ends = {OpId(r.counter + i, r.actor) for r in op.ranges for i in (0, r.length - 1)}
        return tuple(sorted(ends))
    if isinstance(op, SetRemove):
        return op.tags
    if isinstance(op, MapDelete):
        return tuple(OpId(counter, actor) for actor, counter in op.seen)
    return ()


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterChanged:
    """Register ``key`` now holds ``value`` (``deleted``: it holds nothing)."""

    key: str
    value: Value
    deleted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterChanged:
    """Counter ``key`` now has ``value``."""

    key: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetChanged:
    """``element`` entered (``present``) or left set ``key``."""

    key: str
    element: Value
    present: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TextInserted:
    """``text`` was inserted at character ``index`` of text ``key``."""

    key: str
    index: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDeleted:
    """``length`` characters were deleted from ``index`` of text ``key``."""

    key: str
    index: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ListInserted:
    """``values`` were inserted at ``index`` of list ``key``."""

    key: str
    index: int
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListDeleted:
    """``count`` values were deleted from ``index`` of list ``key``."""

    key: str
    index: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MapCleared:
    """The field ``key`` of a nested map was deleted (what its deleter had seen of it)."""

    key: str


Change: TypeAlias = (
    RegisterChanged
    | CounterChanged
    | SetChanged
    | TextInserted
    | TextDeleted
    | ListInserted
    | ListDeleted
    | MapCleared
)
"""What applying an operation changed, in order; indexes apply one event after the other."""
