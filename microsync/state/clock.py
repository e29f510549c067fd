"""Hybrid logical clock (Kulkarni et al. 2014): wall-clock milliseconds that never run backwards.

A :class:`Timestamp` is ``(wall, counter, node)`` and timestamps sort in that order, so two
devices never produce equal ones. :meth:`HLC.send` stamps a local event; :meth:`HLC.receive`
folds in a timestamp seen on a remote operation so that the next local stamp is greater than
it. ``now`` (milliseconds since the epoch) is always passed in: this module reads no clock.

Far-future rule: a remote timestamp more than :data:`MAX_DRIFT_MS` ahead of the local ``now``
is *not adopted* by :meth:`HLC.receive` (otherwise one peer with a wrong clock would drag every
device's clock, and every later write, into its future). The operation carrying it is still
applied, and applied the same way on every replica: convergence must never depend on a
replica's own clock, since each replica's ``now`` differs. :func:`is_far_future` lets the app
flag such operations. What keeps a far-future write from winning forever is the register rule
in :mod:`microsync.state.registers`: a local write always beats the value it overwrites.

Bounds: a counter never passes :data:`MAX_TICK` (what a document operation may carry, see
:mod:`microsync.state.codec`): a step that would pass it moves to the next millisecond with
counter 0 instead, which is just as much greater; nor does the wall pass :data:`MAX_WALL`. So
a peer's timestamp with the largest legal values cannot make this clock issue one that peers
refuse to decode (which would make this device's write count here and nowhere else).

The app layer keeps the same rule for entry times: :func:`bounded` is how far a time derived
from what peers wrote may go, ``now + MAX_DRIFT_MS`` at the most (``docs/security.md``,
"Timestamps").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["HLC", "MAX_DRIFT_MS", "MAX_TICK", "MAX_WALL", "Timestamp", "bounded", "is_far_future"]

MAX_DRIFT_MS: Final = 5 * 60 * 1000
"""How far ahead of local ``now`` a remote timestamp may be and still be adopted."""
MAX_TICK: Final = 2**32
"""The largest counter a timestamp may carry (the bound the document codec decodes)."""
MAX_WALL: Final = 2**63 - 1
"""The largest wall time a timestamp may carry (the codec's bound on every integer)."""


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """A hybrid logical time: sorts by wall milliseconds, then counter, then node bytes."""

    wall: int
    counter: int
    node: bytes

    def successor(self, node: bytes) -> Timestamp:
        """The smallest timestamp of ``node`` that is greater than this one (counter within
        :data:`MAX_TICK`: past it, the next millisecond)."""
        return _step(self.wall, self.counter, node)


def _step(wall: int, counter: int, node: bytes) -> Timestamp:
    """``(wall, counter + 1)``, or ``(wall + 1, 0)`` when the counter is at :data:`MAX_TICK`;
    at the very top (:data:`MAX_WALL`, :data:`MAX_TICK`) it stays there: a timestamp past it
    could not be decoded by peers (nodes and ids then break the tie, alike everywhere)."""
    if counter < MAX_TICK:
        return Timestamp(wall, counter + 1, node)
    if wall < MAX_WALL:
        return Timestamp(wall + 1, 0, node)
    return Timestamp(MAX_WALL, MAX_TICK, node)


def bounded(derived: int, now: int, max_drift: int = MAX_DRIFT_MS) -> int:
    """A time derived from remote values (``derived``), never more than ``max_drift``
    milliseconds ahead of ``now``, nor before ``now``: what this device dates a write at."""
    return max(now, min(derived, now + max_drift))


def is_far_future(ts: Timestamp, now: int, max_drift: int = MAX_DRIFT_MS) -> bool:
    """Whether ``ts`` is more than ``max_drift`` milliseconds ahead of ``now``."""
    return ts.wall > now + max_drift


class HLC:
    """The hybrid logical clock of one node."""

    def __init__(self, node: bytes, last: Timestamp | None = None) -> None:
        self.node = node
        self.last = last if last is not None else Timestamp(0, 0, node)

    def send(self, now: int) -> Timestamp:
        """A timestamp for a local event at ``now``: greater than every one issued or adopted."""
        if now > self.last.wall:
            self.last = Timestamp(now, 0, self.node)
        else:
            self.last = _step(self.last.wall, self.last.counter, self.node)
        return self.last

    def receive(self, remote: Timestamp, now: int) -> Timestamp:
        """Adopt ``remote`` (seen at ``now``) and return the timestamp of the receive event.
        A far-future ``remote`` (:func:`is_far_future`) is ignored: this is then ``send(now)``."""
        if is_far_future(remote, now):
            return self.send(now)
        last = self.last
        wall = max(last.wall, remote.wall, now)
        if wall == last.wall == remote.wall:
            self.last = _step(wall, max(last.counter, remote.counter), self.node)
        elif wall == last.wall:
            self.last = _step(wall, last.counter, self.node)
        elif wall == remote.wall:
            self.last = _step(wall, remote.counter, self.node)
        else:
            self.last = Timestamp(wall, 0, self.node)
        return self.last
