"""PN-counter: per-actor totals of increments and decrements; the value is their difference.

Operation-based: :class:`~microsync.state.ops.CounterAdd` adds a signed delta to its actor's
increments (positive) or decrements (negative). Addition commutes, so any delivery order gives
the same totals; duplicates are dropped by the document's version vector before they get here.
"""

from __future__ import annotations

__all__ = ["PNCounter"]


class PNCounter:
    """One counter."""

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
