"""The events of the node layer, and :data:`Event`, the union of every kind a group's
``events()`` yields (the app's are in :mod:`microsync.app.events`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from microsync.app.events import AppEvent, EventBase, EventKind
from microsync.blobs import BlobRef
from microsync.node.exits import GroupExit

__all__ = ["Event", "Exited", "VaultAdded", "VaultRemoved"]


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
