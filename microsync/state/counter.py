"""Counters: :class:`PNCounter` at a top-level key, :class:`FieldCounter` in a nested map.

Operation-based: :class:`~microsync.state.ops.CounterAdd` adds a signed delta. Addition
commutes, so any delivery order gives the same value; duplicates are dropped by the document's
version vector before they get here.

A PN-counter keeps per-actor totals of increments and decrements. A counter that is a field of
a map may be deleted with its map (:class:`~microsync.state.ops.MapDelete`), which removes
exactly what its author had seen (``seen``: actor -> last counter) and lets concurrent adds
survive, like every nested kind (:mod:`microsync.state.nesting`). Totals cannot say which adds
a delete saw, so a field counter keeps each add not yet deleted, ``(counter, delta)`` per actor
in counter order, and a delete drops each actor's adds up to ``seen[actor]``. Under causal
delivery every add a delete saw is applied before it, and an add applied after it was never
seen, so the adds left, and the value, are the same on every replica. The cost is one pair per
add since the field was last deleted (an add is an entry of a feed already: a few hundred bytes
against two integers).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from microsync.state.ids import OpId

__all__ = ["FieldCounter", "PNCounter"]


class PNCounter:
    """One counter at a top-level key."""

    def __init__(self) -> None:
        self.totals: dict[bytes, tuple[int, int]] = {}  # actor -> (increments, decrements)

    @property
    def value(self) -> int:
        """Increments minus decrements, over every actor."""
        return sum(p - n for p, n in self.totals.values())

    def add(self, actor: bytes, delta: int) -> None:
        """Fold in one operation of ``actor``."""
        p, n = self.totals.get(actor, (0, 0))
        self.totals[actor] = (p + delta, n) if delta > 0 else (p, n - delta)

    def __bool__(self) -> bool:
        return bool(self.totals)


class FieldCounter:
    """One counter that is a field of a nested map (module doc)."""

    def __init__(self) -> None:
        self.adds: dict[bytes, list[tuple[int, int]]] = {}  # actor -> [(counter, delta)] sorted
        self._value = 0  # the sum of the deltas in ``adds``

    @property
    def value(self) -> int:
        """The sum of the adds no delete has removed."""
        return self._value

    def add(self, op_id: OpId, delta: int) -> None:
        """Fold in the add ``op_id`` (kept in counter order whatever the arrival order)."""
        bisect.insort(self.adds.setdefault(op_id.actor, []), (op_id.counter, delta))
        self._value += delta

    def clear(self, seen: Mapping[bytes, int]) -> bool:
        """Drop every add ``seen`` covers (``counter <= seen[actor]``); whether any was."""
        changed = False
        for actor in [a for a in self.adds if a in seen]:
            adds = self.adds[actor]
            cut = bisect.bisect_right(adds, (seen[actor], 2**64))
            if cut:
                changed = True
                self._value -= sum(delta for _, delta in adds[:cut])
                del adds[:cut]
                if not adds:
                    del self.adds[actor]
        return changed

    def __bool__(self) -> bool:
        return bool(self.adds)
