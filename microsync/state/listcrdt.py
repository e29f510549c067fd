"""A list of CBOR values with insert, delete and move, on the RGA :class:`Sequence`.

Theory of operation
-------------------
The sequence holds *slots*. Inserting values makes one slot per value; the slot's id is the
element's id. A move (Kleppmann 2020, "Moving elements in list CRDTs") makes a new slot
(:class:`~microsync.state.sequence.MoveSlot`) for an existing element at the new place. Each
element shows in exactly one slot, its *winner*: the slot with the greatest id among its
original slot and its move slots (``moves`` keeps the winner of each moved element). Because
move ids are Lamport counters, a move that saw an earlier move wins over it; of two concurrent
moves the greater id wins, and the element never appears twice.

A delete names elements, not slots: it hides the element's winning slot. An element is deleted
exactly when its winning slot is hidden, so a move that arrives after a concurrent delete makes a
hidden winner and the element stays deleted. Slots keep their value even when hidden, because
the value of a moved element is read from its original slot.

Every replica ends up with the same slots, the same visibility and the same winners whatever the
order of concurrent operations (the tests check this with Hypothesis).
"""

from __future__ import annotations

from typing import Any

from microsync.encoding import Value
from microsync.state.ids import OpId
from microsync.state.sequence import MoveSlot, Run, Sequence

__all__ = ["ListCRDT"]

Edit = tuple[str, int, Any]  # ("insert", index, values) or ("delete", index, count)


class ListCRDT:
    """One list."""

    def __init__(self) -> None:
        self.seq = Sequence(keep_hidden=True)
        self.moves: dict[OpId, OpId] = {}  # element -> its winning move slot

    def __bool__(self) -> bool:
        return any(True for _ in self.seq.runs())

    def __len__(self) -> int:
        return len(self.seq)

    def values(self) -> list[Value]:
        """The visible values, in order."""
        out: list[Value] = []
        for run in self.seq.runs():
            if run.visible:
                out.extend(run.content)
        return out

    def element_at(self, index: int) -> OpId:
        """The id of the element shown at ``index``."""
        run, off = self.seq.run_at(index)
        if isinstance(run, MoveSlot):
            return run.elem
        return OpId(run.counter + off, run.actor)

    def winner(self, element: OpId) -> tuple[Run, int]:
        """The slot where ``element`` shows (or would, if not deleted), and its offset."""
        return self.seq.find(self.moves.get(element, element))

    def insert(
        self, actor: bytes, counter: int, origin: OpId | None, values: list[Value]
    ) -> list[Edit]:
        """Integrate an insert; return the visible edits."""
        pos = self.seq.integrate(actor, counter, origin, values)
        return [] if pos is None else [("insert", pos, tuple(values))]

    def delete(self, element: OpId) -> list[Edit]:
        """Delete ``element`` (hide its winning slot); return the visible edits."""
        slot = self.moves.get(element, element)
        return [("delete", i, n) for i, n in self.seq.hide(slot.counter, slot.actor, 1)]

    def check_move(self, element: OpId, origin: OpId | None) -> None:
        """Raise :class:`MissingDependency` unless the element and origin are here."""
        self.seq.find(element)
        if origin is not None:
            self.seq.find(origin)

    def move(self, slot_id: OpId, origin: OpId | None, element: OpId) -> list[Edit]:
        """Integrate a move slot ``slot_id`` for ``element`` after ``origin``."""
        if self.seq.contains(slot_id):
            return []
        self.check_move(element, origin)
        first, off = self.seq.find(element)
        value = first.content[off]
        current = self.moves.get(element, element)
        run, _ = self.seq.find(current)
        wins = slot_id > current
        edits: list[Edit] = []
        visible = wins and run.visible
        if visible:
            edits += [("delete", i, n) for i, n in self.seq.hide(current.counter, current.actor, 1)]
        if wins:
            self.moves[element] = slot_id
        slot = MoveSlot(slot_id.actor, slot_id.counter, value, element, visible, run.block)
        pos = self.seq.integrate(slot_id.actor, slot_id.counter, origin, [value], slot)
        if pos is not None:
            edits.append(("insert", pos, (value,)))
        return edits

    def restore_slot(self, slot: MoveSlot) -> None:
        """Append a move slot read from a snapshot and record it if it wins."""
        self.seq.append_slot(slot)
        slot_id = OpId(slot.counter, slot.actor)
        if slot_id > self.moves.get(slot.elem, slot.elem):
            self.moves[slot.elem] = slot_id
