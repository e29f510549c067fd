"""The events of the node layer, :data:`Event` (the union of every kind a group's
``events()`` yields; the app's are in :mod:`microsync.app.events`), and :func:`listen`, the
stream one ``events()`` call returns."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeAlias

from microsync.app.events import AppEvent, EventBase, EventKind
from microsync.blobs import BlobRef
from microsync.node.exits import GroupExit

if TYPE_CHECKING:
    from microsync.node.group import Group

__all__ = ["Event", "Exited", "VaultAdded", "VaultRemoved", "listen"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Exited(EventBase):
    """This device is out of the group: ``exit`` says how (``person``: who did it)."""

    kind: ClassVar[EventKind] = EventKind.EXIT
    exit: GroupExit | None = None

    @property
    def detail(self) -> object:
        return self.exit


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultAdded(EventBase):
    """A file was added to the group's vault (``person``: its author)."""

    kind: ClassVar[EventKind] = EventKind.VAULT_ADDED
    ref: BlobRef

    @property
    def detail(self) -> object:
        return self.ref


@dataclass(frozen=True, slots=True, kw_only=True)
class VaultRemoved(EventBase):
    """A file was removed from the group's vault (``person``: its author)."""

    kind: ClassVar[EventKind] = EventKind.VAULT_REMOVED
    ref: BlobRef

    @property
    def detail(self) -> object:
        return self.ref


Event: TypeAlias = AppEvent | Exited | VaultAdded | VaultRemoved
"""Any event of a group (``microsync.Event``): match on the classes, or read ``kind``."""


def listen(group: Group) -> AsyncGenerator[Event, None]:
    """``group.events()``: a stream of the events emitted *from this call on* (not from its
    first iteration: what arrives between the two is kept for it). What the group holds now
    is folded first, quietly (it is history, not news). The stream stops listening when it is
    closed, or dropped unread."""
    group._timeline()
    group.vault.refresh()
    listeners = group._listeners
    queue: asyncio.Queue[Event] = asyncio.Queue()
    listeners.append(queue)
    group._app_state.listening = True

    def stop() -> None:
        if queue in listeners:
            listeners.remove(queue)
            group._app_state.listening = bool(listeners)

    async def stream() -> AsyncGenerator[Event, None]:
        try:
            while True:
                yield await queue.get()
        finally:
            stop()

    events = stream()
    weakref.finalize(events, stop)  # never iterated: closing it runs no ``finally``
    return events
