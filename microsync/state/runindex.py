"""Find the run that holds an element id: one chunked sorted list of run starts per actor.

A sequence stores runs (:class:`~microsync.state.sequence.Run`): consecutive elements that one
actor inserted with consecutive counters. An element id ``(counter, actor)`` lies inside exactly
one run, the one of that actor with the greatest start ``<= counter``. Runs are split and merged
as the sequence is edited, so the starts of an actor change over time; keeping them in chunks of
at most :data:`CHUNK` sorted integers makes adding or removing one start cost a small ``memmove``
rather than one proportional to the whole document.

Invariants: within an actor, starts are unique and sorted across the chunks (``firsts[i]`` is the
first start of chunk ``i``); ``runs[i][j]`` is the run that starts at ``starts[i][j]``.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Generic, TypeVar

__all__ = ["CHUNK", "RunIndex"]

CHUNK = 256
"""Largest chunk; a full chunk is split in two halves."""

R = TypeVar("R")


class RunIndex(Generic[R]):
    """The runs of one actor, by start counter."""

    __slots__ = ("firsts", "runs", "starts")

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.starts: list[list[int]] = []
        self.runs: list[list[R]] = []

    def find(self, counter: int) -> tuple[int, R] | None:
        """The ``(start, run)`` with the greatest start ``<= counter``, if any."""
        c = bisect_right(self.firsts, counter) - 1
        if c < 0:
            return None
        starts = self.starts[c]
        i = bisect_right(starts, counter) - 1
        return starts[i], self.runs[c][i]

    def add(self, start: int, run: R) -> None:
        """Index ``run``, which starts at ``start`` (not indexed yet)."""
        if not self.firsts:
            self.firsts.append(start)
            self.starts.append([start])
            self.runs.append([run])
            return
        c = max(bisect_right(self.firsts, start) - 1, 0)
        starts, runs = self.starts[c], self.runs[c]
        i = bisect_right(starts, start)
        starts.insert(i, start)
        runs.insert(i, run)
        self.firsts[c] = starts[0]
        if len(starts) > CHUNK:
            half = len(starts) // 2
            self.starts.insert(c + 1, starts[half:])
            self.runs.insert(c + 1, runs[half:])
            self.firsts.insert(c + 1, starts[half])
            del starts[half:], runs[half:]

    def rekey(self, start: int, new: int) -> None:
        """Index the run that starts at ``start`` under ``new`` instead; no other start may
        lie between the two (the run's order among the starts stays the same)."""
        c = bisect_right(self.firsts, start) - 1
        starts = self.starts[c]
        i = bisect_right(starts, start) - 1
        assert starts[i] == start, "moving a start that is not indexed"
        starts[i] = new
        if not i:
            self.firsts[c] = new

    def remove(self, start: int) -> None:
        """Forget the run that starts at ``start`` (which must be indexed)."""
        c = bisect_right(self.firsts, start) - 1
        starts, runs = self.starts[c], self.runs[c]
        i = bisect_right(starts, start) - 1
        assert starts[i] == start, "removing a start that is not indexed"
        del starts[i], runs[i]
        if starts:
            self.firsts[c] = starts[0]
        else:
            del self.firsts[c], self.starts[c], self.runs[c]
