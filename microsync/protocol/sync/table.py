"""One row of a sync machine's transition table.

Every machine of the session (``docs/sync.md``, "States and the transition table") is an
``Enum`` of phases and a table ``(phase, message type) -> Row(handler, next)``: the handler is
typed for its one message, and ``next`` says where the row may lead. A pair not in a table is
a :class:`~microsync.errors.RemoteProtocolError` (the peer sent it); a handler that picks a
phase its row does not list is a :class:`~microsync.errors.LocalProtocolError` (a bug here).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from microsync.errors import LocalProtocolError

__all__ = ["Row"]

C = TypeVar("C")  # the machine that handles the message
M = TypeVar("M")  # the message
P = TypeVar("P", bound=enum.Enum)  # the phases


@dataclass(frozen=True, slots=True)
class Row(Generic[C, M, P]):
    """What a message does in one phase: ``handler(machine, message)``, and ``next``, the
    phases it may lead to. No ``next``: the phase stays (the handler returns ``None``). One:
    that phase (the handler may return ``None`` or it). Several: the handler returns which."""

    handler: Callable[[C, M], P | None]
    next: tuple[P, ...] = ()

    def run(self, machine: C, message: M) -> P | None:
        """Handle ``message``; the phase to move to, or ``None`` to stay."""
        after = self.handler(machine, message)
        if after is None and len(self.next) == 1:
            return self.next[0]
        if after is not None and after not in self.next:
            raise LocalProtocolError(f"{self.name} led to {after.name}, not in its row")
        if after is None and self.next:
            raise LocalProtocolError(f"{self.name} chose no next phase")
        return after

    @property
    def name(self) -> str:
        """The handler's qualified name (``Reconcile.on_digest``): what ``docs/sync.md`` lists."""
        return getattr(self.handler, "__qualname__", repr(self.handler))
