"""Last-writer-wins registers: the plain values of a document, one per key.

Each key holds the write with the greatest ``(ts, id)``: a :class:`~microsync.state.ops.RegisterSet`
or a :class:`~microsync.state.ops.RegisterDelete`. A delete is a tombstone that stays (an older
set arriving later must not bring the value back). ``ts`` is a hybrid logical timestamp, so among
concurrent writes the later one in wall time wins; ``id`` breaks exact ties.

Observed overwrite: :meth:`Registers.stamp` gives a local write a timestamp above the one it
overwrites, even when that one is in the future. So a write always wins over what its writer
saw, and a peer's far-future timestamp cannot pin a key forever (see :mod:`microsync.state.clock`).
"""

from __future__ import annotations

from dataclasses import dataclass

from microsync.encoding import Value
from microsync.state.clock import Timestamp
from microsync.state.ids import OpId

__all__ = ["Register", "Registers"]


@dataclass(frozen=True, slots=True)
class Register:
    """The winning write of one key."""

    ts: Timestamp
    id: OpId
    value: Value
    deleted: bool


class Registers:
    """The LWW map of a document's registers."""

    def __init__(self) -> None:
        self.entries: dict[str, Register] = {}

    def get(self, key: str) -> Register | None:
        """The winning write of ``key`` (a tombstone included), if any."""
        return self.entries.get(key)

    def stamp(self, key: str, ts: Timestamp) -> Timestamp:
        """``ts`` raised above the timestamp of ``key``'s current write, if needed."""
        current = self.entries.get(key)
        if current is not None and current.ts >= ts:
            return current.ts.successor(ts.node)
        return ts

    def write(self, key: str, register: Register) -> bool:
        """Apply a write; return whether it won (it then is the key's value)."""
        current = self.entries.get(key)
        if current is not None and (current.ts, current.id) >= (register.ts, register.id):
            return False
        self.entries[key] = register
        return True

    def values(self) -> dict[str, Value]:
        """The live (not deleted) values, by key."""
        return {k: r.value for k, r in sorted(self.entries.items()) if not r.deleted}
