"""Operation ids, the one error of the causal-delivery contract, and the size limits.

Every operation has a unique :class:`OpId` ``(counter, actor)``. ``actor`` is bytes chosen by the
integrator (a 32-byte device id, say): unique per writer. ``counter`` is a Lamport clock kept by
the :class:`~microsync.state.document.Document`: a new operation takes the counter after the
greatest one the document has seen, so an operation's counter is greater than the counter of
everything it could have observed. An insert of ``n`` elements uses the ``n`` counters
``counter .. counter + n - 1`` (element ``i`` has id ``(counter + i, actor)``); every other
operation uses one. Ids sort by counter, then actor bytes: a total order that extends causality.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from microsync.errors import VerificationError

__all__ = [
    "MAX_ACTOR",
    "MAX_COUNTER",
    "MissingDependency",
    "OpId",
]

MAX_ACTOR: Final = 64
"""Longest actor id, in bytes."""
MAX_COUNTER: Final = 2**53
"""Counters stay below this, so they are exact in every language."""


class OpId(NamedTuple):
    """The id of an operation, or of one element of an insert. Sorts by ``(counter, actor)``."""

    counter: int
    actor: bytes


class MissingDependency(VerificationError):
    """An operation names an element, or follows an operation, that has not been applied.

    The feed layer delivers operations in causal order, so this means a caller broke the
    contract (or a peer forged an operation that refers to nothing). The document is unchanged.
    """
