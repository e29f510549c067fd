"""Named shared documents on a group (``Group.doc(name)``): a :class:`microsync.state.Document`
whose operations travel as app entries of kind ``DOC``, encrypted like every post.

Reads are plain methods; every change is ``async`` (it writes an entry). Operations are applied
in the order of the feed's ``deps`` (the timeline's causal order). An operation whose id does not
belong to the device that wrote its entry is refused on every replica (a member cannot write as
another), and one that names an element this replica has not seen yet waits until it has.

The app state holds one folded :class:`SharedDoc` per open document, and drops them all when
it folds again (a removal's cut-off or an admin change reached back over what was folded).
What ``group.doc(name)`` returns is a *live* handle (:meth:`SharedDoc.live`): it holds no
state, and every read or write resolves the folded document afresh, so a handle an app keeps
across a removal reads and writes the state as it is now, never a stale copy.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from microsync.encoding import Value
from microsync.errors import MicrosyncError
from microsync.state import Document, MapHandle, MissingDependency, Op, decode_op
from microsync.state.ops import Change as DocChange

if TYPE_CHECKING:
    from microsync.app.timeline import AppEntry

__all__ = ["SharedCounter", "SharedDoc", "SharedList", "SharedMap", "SharedSet", "SharedText"]

Publish = Callable[[Op], Awaitable[None]]


class SharedDoc:
    """A group's named document: a map of registers (any CBOR value), counters, sets, lists,
    texts and nested maps. Get one with ``group.doc(name)``; changes arrive as ``"doc"``
    events. Every handle shows its plain value as ``.value`` (``to_value()`` for the whole)."""

    def __init__(self, name: str, document: Document, publish: Publish, now: Callable[[], int]):
        self.name = name
        self._document = document
        self._publish = publish
        self._now = now
        self._pending: builtins.list[tuple[AppEntry, Op]] = []
        self._resolve: Callable[[], SharedDoc] | None = None

    @classmethod
    def live(
        cls, name: str, resolve: Callable[[], SharedDoc], publish: Publish, now: Callable[[], int]
    ) -> SharedDoc:
        """A handle on the document ``resolve()`` returns at each use (the one the app state
        holds folded now, refolded after an unload): it never goes stale."""
        handle = cls(name, Document(b"\x00"), publish, now)  # its own document is never used
        handle._resolve = resolve
        return handle

    @property
    def _doc(self) -> Document:
        """The document reads and writes go to: this one's, or the live one's."""
        return self._document if self._resolve is None else self._resolve()._document

    # ------------------------------------------------------------------ reading

    def get(self, key: str, default: Value = None) -> Value:
        """The register ``key`` (``default`` if unset or deleted)."""
        return self._doc.get(key, default)

    def to_value(self) -> dict[str, Value]:
        """The whole document as plain values (counters as ints, sets as sorted lists, texts
        as strings)."""
        return self._doc.to_value()

    # ------------------------------------------------------------------ writing

    async def set(self, key: str, value: Value) -> None:
        """Set register ``key`` (last writer wins, by hybrid logical clock)."""
        await self._publish(self._doc.set(key, value, now=self._now()))

    async def delete(self, key: str) -> None:
        """Delete register ``key``."""
        await self._publish(self._doc.delete(key, now=self._now()))

    def counter(self, key: str) -> SharedCounter:
        """The counter ``key`` (a PN-counter: concurrent adds all count)."""
        return SharedCounter(self, key)

    def orset(self, key: str) -> SharedSet:
        """The observed-remove set ``key``."""
        return SharedSet(self, key)

    def list(self, key: str) -> SharedList:
        """The list ``key``."""
        return SharedList(self, key)

    def text(self, key: str) -> SharedText:
        """The text ``key``."""
        return SharedText(self, key)

    def map(self, key: str) -> SharedMap:
        """The map ``key``: fields that are values, texts, sets, lists or maps, each merging
        on its own (``doc.map("contacts").map("ana").text("notes")``)."""
        return SharedMap(self, self._doc.map(key).key)

    # ------------------------------------------------------------------ remote

    @staticmethod
    def valid(entry: AppEntry, payload: bytes) -> bool:
        """Would this operation be considered at all (well formed, its id the writer's)?"""
        try:
            return decode_op(payload).id.actor == bytes(entry.device)
        except MicrosyncError:
            return False

    def _apply(self, entry: AppEntry, payload: bytes) -> builtins.list[DocChange]:
        """Fold one received operation; refused ones change nothing."""
        try:
            op = decode_op(payload)
        except MicrosyncError:
            return []
        if op.id.actor != bytes(entry.device):
            return []  # written under someone else's id: never counts
        self._pending.append((entry, op))
        return self._drain()

    def _drain(self) -> builtins.list[DocChange]:
        changes: builtins.list[DocChange] = []
        progress = True
        while progress and self._pending:
            progress = False
            waiting = []
            for entry, op in self._pending:
                try:
                    changes.extend(self._doc.apply(op))
                    progress = True
                except MissingDependency:
                    waiting.append((entry, op))
                except MicrosyncError:
                    progress = True  # malformed against this state: dropped
            self._pending = waiting
        return changes

    @property
    def waiting(self) -> int:
        """Operations held back until what they name arrives."""
        return len(self._pending if self._resolve is None else self._resolve()._pending)

    def __repr__(self) -> str:
        return f"SharedDoc({self.name!r})"


class SharedCounter:
    """A PN-counter in a document."""

    def __init__(self, doc: SharedDoc, key: str) -> None:
        self._doc, self._key = doc, key

    @property
    def value(self) -> int:
        return self._doc._doc.counter(self._key).value

    async def add(self, delta: int = 1) -> None:
        """Add ``delta`` (negative to subtract); concurrent adds all count."""
        await self._doc._publish(self._doc._doc.counter(self._key).add(delta))


class SharedSet:
    """An observed-remove set in a document: an add concurrent with a discard wins."""

    def __init__(self, doc: SharedDoc, key: str) -> None:
        self._doc, self._key = doc, key

    @property
    def value(self) -> list[Value]:
        """The elements, in the order of their canonical encodings."""
        return self._doc._doc.orset(self._key).value

    def values(self) -> list[Value]:
        """Deprecated: use :attr:`value` (every handle's plain value is ``.value``)."""
        warnings.warn("SharedSet.values() is deprecated: use .value", DeprecationWarning, 2)
        return self.value

    def __contains__(self, element: Value) -> bool:
        return element in self._doc._doc.orset(self._key)

    async def add(self, element: Value) -> None:
        await self._doc._publish(self._doc._doc.orset(self._key).add(element))

    async def discard(self, element: Value) -> None:
        """Remove ``element`` as this device has seen it (a no-op if absent)."""
        op = self._doc._doc.orset(self._key).discard(element)
        if op is not None:
            await self._doc._publish(op)


class SharedList:
    """An ordered list (RGA) in a document."""

    def __init__(self, doc: SharedDoc, key: str) -> None:
        self._doc, self._key = doc, key

    @property
    def value(self) -> list[Value]:
        return self._doc._doc.list(self._key).value

    def __len__(self) -> int:
        return len(self._doc._doc.list(self._key))

    async def insert(self, index: int, *values: Value) -> None:
        await self._doc._publish(self._doc._doc.list(self._key).insert(index, *values))

    async def delete(self, index: int, count: int = 1) -> None:
        await self._doc._publish(self._doc._doc.list(self._key).delete(index, count))

    async def move(self, index: int, to: int) -> None:
        await self._doc._publish(self._doc._doc.list(self._key).move(index, to))

    def map(self, index: int) -> SharedMap:
        """The map held by the element at ``index`` (insert ``{}`` first): a list of records
        whose fields merge on their own. Deleting the element deletes its map."""
        return SharedMap(self._doc, self._doc._doc.list(self._key).map(index).key)


class SharedText:
    """Collaborative text in a document."""

    def __init__(self, doc: SharedDoc, key: str) -> None:
        self._doc, self._key = doc, key

    @property
    def value(self) -> str:
        return self._doc._doc.text(self._key).value

    def __str__(self) -> str:
        return self.value

    def __len__(self) -> int:
        return len(self._doc._doc.text(self._key))

    async def insert(self, index: int, text: str) -> None:
        await self._doc._publish(self._doc._doc.text(self._key).insert(index, text))

    async def delete(self, index: int, length: int = 1) -> None:
        await self._doc._publish(self._doc._doc.text(self._key).delete(index, length))


class SharedMap:
    """A map in a document (``doc.map(key)``, ``map.map(name)``, ``list.map(index)``): each
    field is a value, text, set, list, counter or map of its own, so concurrent edits of two fields
    both survive. Deleting a field removes what this device had seen of it; what others wrote
    there concurrently survives (``docs/state.md``, "Nested documents")."""

    def __init__(self, doc: SharedDoc, key: str) -> None:
        self._doc, self._key = doc, key

    def _handle(self) -> MapHandle:
        return MapHandle(self._doc._doc, self._key)

    @property
    def value(self) -> dict[str, Value]:
        """The map as plain values (nested maps as dicts)."""
        return self._handle().value

    def get(self, name: str, default: Value = None) -> Value:
        """The value of field ``name`` (``default`` if unset or deleted)."""
        return self._handle().get(name, default)

    async def set(self, name: str, value: Value) -> None:
        """Set field ``name`` (last writer wins, by hybrid logical clock)."""
        await self._doc._publish(self._handle().set(name, value, now=self._doc._now()))

    async def delete(self, name: str) -> None:
        """Delete field ``name``, whatever it holds, as this device has seen it."""
        await self._doc._publish(self._handle().delete(name))

    async def clear(self) -> None:
        """Delete this whole map, as this device has seen it (concurrent edits survive)."""
        await self._doc._publish(self._handle().clear())

    def map(self, name: str) -> SharedMap:
        """The map in field ``name``."""
        return SharedMap(self._doc, self._handle().map(name).key)

    def text(self, name: str) -> SharedText:
        """The text in field ``name``."""
        return SharedText(self._doc, self._handle().text(name).key)

    def orset(self, name: str) -> SharedSet:
        """The set in field ``name``."""
        return SharedSet(self._doc, self._handle().orset(name).key)

    def list(self, name: str) -> SharedList:
        """The list in field ``name``."""
        return SharedList(self._doc, self._handle().list(name).key)

    def counter(self, name: str) -> SharedCounter:
        """The counter in field ``name``: concurrent adds all count; deleting the field or
        the map removes the adds this device had seen, and concurrent ones survive."""
        return SharedCounter(self._doc, self._handle().counter(name).key)

    def __repr__(self) -> str:
        return f"SharedMap({self._doc.name!r})"
