"""Flow credit as small values: what one side may still send the other.

The receiver of entries grants the sender a window of ``batches`` and ``bytes`` (in ``Hello``)
and gives back what each batch spent once it has stored it (one ``Credit`` per batch). The
sender spends one batch and the batch's size per ``Entries`` and stops at zero.
:class:`Allowance` is the sender's count; :class:`Window` the receiver's, which never goes
below zero nor above the window it granted, whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from microsync.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Allowance", "Window"]


@dataclass(frozen=True, slots=True)
class Allowance:
    """Credit to spend on entries: ``batches`` more batches, of ``bytes`` in all."""

    batches: int = 0
    bytes: int = 0

    def admits(self, size: int) -> bool:
        """May one more batch of ``size`` bytes be sent?"""
        return self.batches >= 1 and 0 <= size <= self.bytes

    def spend(self, size: int) -> Allowance:
        """What is left after one batch of ``size`` bytes (:class:`LocalProtocolError` if
        it does not fit)."""
        if not self.admits(size):
            raise LocalProtocolError("a batch beyond the credit granted")
        return Allowance(self.batches - 1, self.bytes - size)

    def grant(self, batches: int, size: int) -> Allowance:
        """More credit from the peer."""
        return Allowance(self.batches + batches, self.bytes + size)


@dataclass(frozen=True, slots=True)
class Window:
    """The credit granted to the peer (``limit``) and what it may still spend (``left``)."""

    limit: Allowance
    left: Allowance

    @classmethod
    def of(cls, batches: int, size: int) -> Window:
        """A full window of ``batches`` and ``size`` bytes."""
        full = Allowance(batches, size)
        return cls(full, full)

    def take(self, size: int) -> Window:
        """The peer sent a batch of ``size`` bytes: :class:`RemoteProtocolError` beyond the
        credit it holds."""
        if not self.left.admits(size):
            raise RemoteProtocolError("entries beyond the granted credit")
        return Window(self.limit, self.left.spend(size))

    def give_back(self, size: int) -> Window:
        """A batch of ``size`` bytes is stored: the peer may send as much again (never more
        than the window)."""
        batches = min(self.limit.batches, self.left.batches + 1)
        return Window(self.limit, Allowance(batches, min(self.limit.bytes, self.left.bytes + size)))
