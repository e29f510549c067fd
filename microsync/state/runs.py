"""The elements of a :class:`~microsync.state.sequence.Sequence`: runs of consecutive ids, the
blocks that hold them, and the two small rules for joining runs and id ranges."""

from __future__ import annotations

from typing import Any

from microsync.state.ids import OpId

__all__ = ["Block", "MoveSlot", "Run", "add_range", "extends", "mergeable", "skip_greater"]


class Run:
    """Elements ``(counter + i, actor)`` for ``i < length``; ``content`` is a ``str`` (text) or a
    ``list`` (list values), ``None`` for a hidden text run."""

    __slots__ = ("actor", "block", "content", "counter", "length", "visible")

    def __init__(
        self, actor: bytes, counter: int, length: int, content: Any, visible: bool, block: Block
    ) -> None:
        self.actor = actor
        self.counter = counter
        self.length = length
        self.content = content
        self.visible = visible
        self.block = block

    def __repr__(self) -> str:
        state = "" if self.visible else " hidden"
        return f"Run({self.counter}@{self.actor.hex()[:8]} x{self.length}{state})"


class MoveSlot(Run):
    """A list position created by a move: it shows element ``elem`` while it is that element's
    winning position (see :mod:`microsync.state.listcrdt`). Always one element long."""

    __slots__ = ("elem",)

    def __init__(
        self, actor: bytes, counter: int, value: Any, elem: OpId, visible: bool, block: Block
    ) -> None:
        super().__init__(actor, counter, 1, [value], visible, block)
        self.elem = elem


class Block:
    """A few consecutive runs and the number of visible elements in them."""

    __slots__ = ("runs", "visible")

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.visible = 0


def mergeable(left: Run, right: Run) -> bool:
    """Whether two adjacent hidden text runs are one run of consecutive ids."""
    return (
        not left.visible
        and not right.visible
        and type(left) is Run
        and type(right) is Run
        and left.actor == right.actor
        and left.counter + left.length == right.counter
    )


def add_range(ranges: list[tuple[int, bytes, int]], counter: int, actor: bytes, n: int) -> None:
    if ranges:
        last_counter, last_actor, last_n = ranges[-1]
        if last_actor == actor and last_counter + last_n == counter:
            ranges[-1] = (last_counter, actor, last_n + n)
            return
    ranges.append((counter, actor, n))


def extends(blocks: list[Block], left: Run, bi: int, ii: int, actor: bytes, counter: int) -> bool:
    """Whether a new run ``counter..`` of ``actor`` with origin ``left``'s last element can be
    appended to ``left`` (same actor, next counter, nothing greater to skip)."""
    if left.actor != actor or left.counter + left.length != counter or type(left) is not Run:
        return False
    if not left.visible:
        return False
    runs = blocks[bi].runs
    if ii + 1 < len(runs):
        nxt = runs[ii + 1]
    else:
        b = bi + 1
        while b < len(blocks) and not blocks[b].runs:
            b += 1
        if b == len(blocks):
            return True
        nxt = blocks[b].runs[0]
    return nxt.counter < counter or (nxt.counter == counter and nxt.actor < actor)


def skip_greater(
    blocks: list[Block], bi: int, ii: int, counter: int, actor: bytes
) -> tuple[int, int]:
    """From run ``ii`` of block ``bi``, skip the runs whose first id is greater than
    ``(counter, actor)``."""
    runs = blocks[bi].runs
    while True:
        if ii == len(runs):
            if bi + 1 == len(blocks):
                return bi, ii
            bi, ii = bi + 1, 0
            runs = blocks[bi].runs
            continue
        nxt = runs[ii]
        if nxt.counter > counter or (nxt.counter == counter and nxt.actor > actor):
            ii += 1
        else:
            return bi, ii
