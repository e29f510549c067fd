"""The events of the node layer, :data:`Event` (the union of every kind a group's
``events()`` yields; the app's are in :mod:`microsync.app.events`), and :func:`listen`, the
stream one ``events()`` call returns."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from microsync.app.events import AppEvent, EventBase, EventKind
from microsync.blobs import BlobRef
from microsync.node.exits import GroupExit

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


def listen(
    listeners: list[asyncio.Queue[Event]], changed: Callable[[], None]
) -> AsyncGenerator[Event, None]:
    """A stream of the events put on a new queue in ``listeners`` *from this call on* (not
    from its first iteration: what arrives between the two is kept for it). The queue leaves
    ``listeners`` when the stream is closed, or dropped unread; ``changed`` is called after
    each of the two moves."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    listeners.append(queue)
    changed()

    def stop() -> None:
        if queue in listeners:
            listeners.remove(queue)
            changed()

    async def stream() -> AsyncGenerator[Event, None]:
        try:
            while True:
                yield await queue.get()
        finally:
            stop()

    events = stream()
    weakref.finalize(events, stop)  # never iterated: closing it runs no ``finally``
    return events
