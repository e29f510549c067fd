"""The sequence engine under text and lists: RGA with run-length elements and a position index.

Theory of operation
-------------------
The sequence is every element ever inserted, deleted ones included (tombstones, ``visible``
false), in one total order that every replica computes alike (RGA, Roh et al. 2011):

* an insert names its *origin*, the element it was typed after (``None``: the start);
* it is placed right after its origin, except that it first skips every element whose id is
  greater than its own. Element ids are ``(counter, actor)`` with Lamport counters, so an
  element's successors in its origin's subtree all have greater ids than it; skipping "greater
  ids" therefore skips whole subtrees of concurrent inserts made at the same origin, and
  concurrent inserts end up ordered by descending id, whatever the order they arrive in.

A local insert takes a counter above everything seen, so it never skips: it goes right after its
origin. Only remote inserts concurrent with others scan.

Representation: elements live in :class:`Run` objects, each a run of elements one actor inserted
with consecutive counters (``counter .. counter + length - 1``), all visible or all hidden. Runs
are split on demand (an insert after the middle of a run, a delete of part of it) and typing at
the end of one's own run extends it in place. Because counters increase along a run, "the first
element of a run is greater than the new id" means "every element of it is", so the scan moves a
run at a time and never splits.

Runs sit in blocks of at most :data:`BLOCK` runs; each block caches its visible length. Finding
visible index ``i`` walks blocks from a *finger* (the last block touched, with its start), which
is cheap because edits are local. :class:`~microsync.state.runindex.RunIndex` maps an element id
to its run for remote operations. Hidden text runs drop their characters (only ids and lengths
are needed to merge later operations), and adjacent hidden runs of one actor are merged.

Invariants: ``block.visible`` is the sum of the lengths of its visible runs; ``self._fstart`` is
the visible length of ``blocks[:self._fbi]``; ``run.block`` is the block holding ``run``; every
run is in its actor's index under its first counter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from microsync.state.ids import MissingDependency, OpId
from microsync.state.runindex import RunIndex
from microsync.state.runs import Block, MoveSlot, Run, add_range, extends, mergeable, skip_greater

__all__ = ["BLOCK", "MoveSlot", "Run", "Sequence"]

BLOCK: Final = 64
"""Most runs in one block; a fuller block is split in two."""


class Sequence:
    """An RGA sequence of text characters (``keep_hidden=False``) or list values (``True``)."""

    fast_cuts = True
    """Hide part of a run in one step (``_hide_after``); ``False``: by the general cut, hide
    and merge (the tests compare the two)."""

    def __init__(self, *, keep_hidden: bool) -> None:
        self.keep_hidden = keep_hidden
        self.blocks: list[Block] = [Block()]
        self.length = 0
        self._index: dict[bytes, RunIndex[Run]] = {}
        self._fbi = 0  # the finger: a block index...
        self._fstart = 0  # ...and the visible length before it
        self._last: Run | None = None  # the run last placed or found: edits stay near it
        self._start: tuple[Run, int] | None = None  # a visible run and its index, until _grow

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        """Whether anything was ever inserted (hidden elements count)."""
        return bool(self._index)

    def check(self, counter: int, actor: bytes, length: int) -> None:
        """Raise :class:`MissingDependency` unless every element of the range is here."""
        c, end = counter, counter + length
        while c < end:
            run, off = self.find(OpId(c, actor))
            c += run.length - off

    def runs(self) -> Iterator[Run]:
        """Every run, hidden ones included, in sequence order."""
        for block in self.blocks:
            yield from block.runs

    def overlapping(self) -> bool:
        """Whether two runs claim one element id (only a corrupt snapshot can cause this)."""
        for index in self._index.values():
            end = 0
            for starts, runs in zip(index.starts, index.runs, strict=True):
                for start, run in zip(starts, runs, strict=True):
                    if start < end:
                        return True
                    end = start + run.length
        return False

    def find(self, elem: OpId) -> tuple[Run, int]:
        """The run holding element ``elem`` and its offset there, or :class:`MissingDependency`."""
        last = self._last
        if last is not None and last.actor == elem.actor:
            off = elem.counter - last.counter
            if 0 <= off < last.length:
                return last, off
        index = self._index.get(elem.actor)
        found = index.find(elem.counter) if index is not None else None
        if found is None or elem.counter >= found[0] + found[1].length:
            raise MissingDependency("an operation names an element that is not here")
        self._last = found[1]
        return found[1], elem.counter - found[0]

    def contains(self, elem: OpId) -> bool:
        """Whether element ``elem`` was inserted here."""
        index = self._index.get(elem.actor)
        found = index.find(elem.counter) if index is not None else None
        return found is not None and elem.counter < found[0] + found[1].length

    def locate(self, pos: int) -> tuple[int, int, int]:
        """``(block index, run index, offset)`` of the visible element at index ``pos``."""
        if not 0 <= pos < self.length:
            raise IndexError(f"index {pos} out of range for length {self.length}")
        blocks, bi, start = self.blocks, self._fbi, self._fstart
        while pos < start:
            bi -= 1
            start -= blocks[bi].visible
        while pos >= start + blocks[bi].visible:
            start += blocks[bi].visible
            bi += 1
        self._fbi, self._fstart = bi, start
        off = pos - start
        for ii, run in enumerate(blocks[bi].runs):
            if run.visible:
                if off < run.length:
                    return bi, ii, off
                off -= run.length
        raise AssertionError("block visible length out of sync")

    def id_at(self, pos: int) -> OpId:
        """The id of the visible element at index ``pos``."""
        bi, ii, off = self.locate(pos)
        run = self.blocks[bi].runs[ii]
        return OpId(run.counter + off, run.actor)

    def run_at(self, pos: int) -> tuple[Run, int]:
        """The run holding the visible element at ``pos``, and the offset there."""
        bi, ii, off = self.locate(pos)
        return self.blocks[bi].runs[ii], off

    def position(self, run: Run) -> int:
        """The visible index of ``run``'s first element (where it is or would be if visible)."""
        return self._position_at(self._block_index(run.block), run.block.runs.index(run))

    def _position_at(self, bi: int, ii: int) -> int:
        """The visible index of run ``ii`` of block ``bi`` (or of the end of the block)."""
        block = self.blocks[bi]
        runs = block.runs
        if 2 * ii <= len(runs):  # sum the shorter side of the block
            return self._block_start(bi) + sum([r.length for r in runs[:ii] if r.visible])
        after = sum([r.length for r in runs[ii:] if r.visible])
        return self._block_start(bi) + block.visible - after

    # ------------------------------------------------------------------ local edits

    def local_insert(self, pos: int, actor: bytes, counter: int, content: Any) -> OpId | None:
        """Insert ``content`` (elements ``counter..``) before visible index ``pos`` and return the
        origin. ``counter`` must exceed every counter in the sequence (a local operation)."""
        n = len(content)
        if pos == 0:
            origin, bi, ii = None, 0, 0
        else:
            bi, ii, off = self.locate(pos - 1)
            run = self.blocks[bi].runs[ii]
            origin = OpId(run.counter + off, run.actor)
            if off == run.length - 1:
                if run.counter + run.length == counter and run.actor == actor and type(run) is Run:
                    run.content += content
                    run.length += n
                    self._grow(bi, n)
                    return origin
            else:
                self._split(run.block, ii, off + 1)
            ii += 1
        self._insert_run(bi, ii, Run(actor, counter, n, content, True, self.blocks[bi]))
        return origin

    def local_delete(self, pos: int, count: int) -> list[tuple[int, bytes, int]]:
        """Hide ``count`` visible elements from index ``pos``; return the hidden id ranges as
        ``(counter, actor, length)``, in sequence order, adjacent ranges coalesced."""
        if count <= 0:
            return []
        if pos + count > self.length:
            raise IndexError(f"deleting {count} from {pos} past the end ({self.length})")
        ranges: list[tuple[int, bytes, int]] = []
        bi, ii, off = self.locate(pos)
        first, remaining = bi, count
        while remaining:
            block = self.blocks[bi]
            if ii == len(block.runs):
                bi, ii = bi + 1, 0
                continue
            run = block.runs[ii]
            if not run.visible:
                ii += 1
                continue
            if off:
                self._split(block, ii, off)
                ii, off = ii + 1, 0
                continue
            if run.length > remaining:
                self._split(block, ii, remaining)
            remaining -= run.length
            add_range(ranges, run.counter, run.actor, run.length)
            ii = self._hide_run(bi, ii)
        for b in range(bi, first - 1, -1):  # splits may have overfilled the blocks
            if len(self.blocks[b].runs) > BLOCK:
                self._split_block(b)
        return ranges

    # ------------------------------------------------------------------ remote edits

    def integrate(
        self,
        actor: bytes,
        counter: int,
        origin: OpId | None,
        content: Any,
        run: Run | None = None,
    ) -> int | None:
        """Place elements ``counter..`` of ``actor`` after ``origin`` by the RGA rule and return
        the visible index of the first one (``None`` if placed hidden). ``run``, if given, is a
        prepared run to place (a move slot). The elements must not be here yet (the document
        drops duplicates before they get here); a missing origin raises
        :class:`MissingDependency` before anything changes."""
        if origin is None:
            bi, ii, after = 0, 0, -1
        else:
            left = self._last  # find(origin), its first test inlined: the hot path
            if left is None or left.actor != origin.actor:
                left, off = self.find(origin)
            else:
                off = origin.counter - left.counter
                if not 0 <= off < left.length:
                    left, off = self.find(origin)
            block = left.block
            blocks, bi = self.blocks, self._fbi
            if bi >= len(blocks) or blocks[bi] is not block:
                bi = blocks.index(block)
            runs = block.runs
            ii = runs.index(left)
            if off < left.length - 1:
                self._split(block, ii, off + 1)
            elif (
                run is None
                and left.counter + left.length == counter
                and left.actor == actor
                and (
                    # extends(), its common case inlined: a run after left, in its block
                    (
                        left.visible
                        and type(left) is Run
                        and (
                            runs[ii + 1].counter < counter
                            or (runs[ii + 1].counter == counter and runs[ii + 1].actor < actor)
                        )
                    )
                    if ii + 1 < len(runs)
                    else extends(self.blocks, left, bi, ii, actor, counter)
                )
            ):
                known = self._start
                if known is not None and known[0] is left:
                    start = known[1]
                else:
                    start = self._position_at(bi, ii)
                n = len(content)
                left.content += content
                left.length += n
                block.visible += n  # _grow, inlined; after left's start, which does not move
                self.length += n
                if bi < self._fbi:
                    self._fstart += n
                self._last = left
                self._start = (left, start)
                return start + left.length - n
            ii += 1
            known = self._start  # right after a visible run whose index is known?
            after = known[1] + left.length if known is not None and known[0] is left else -1
        skipped = skip_greater(self.blocks, bi, ii, counter, actor)
        pos = after if skipped == (bi, ii) and after >= 0 else self._position_at(*skipped)
        bi, ii = skipped
        if run is None:
            run = Run(actor, counter, len(content), content, True, self.blocks[bi])
        run.block = self.blocks[bi]
        self._insert_run(bi, ii, run)
        self._last = run
        if run.visible:
            self._start = (run, pos)
            return pos
        return None

    def hide(self, counter: int, actor: bytes, length: int) -> list[tuple[int, int]]:
        """Hide elements ``counter .. counter + length - 1`` of ``actor``. Return the visible
        ``(index, count)`` removals in the order they happened (already hidden: nothing)."""
        run = self._last  # find(), its first test inlined
        off = counter - run.counter if run is not None and run.actor == actor else -1
        if run is None or not 0 <= off < run.length:
            run, off = self.find(OpId(counter, actor))
        if run.length - off < length:
            self.check(counter, actor, length)  # all or nothing
        removed: list[tuple[int, int]] = []
        c, end = counter, counter + length
        while c < end:
            if c != counter:
                run, off = self.find(OpId(c, actor))
            take = min(run.length - off, end - c)
            if run.visible:
                block = run.block
                bi, ii = self._block_index(block), block.runs.index(run)
                if (
                    off
                    and self.fast_cuts
                    and type(run) is Run
                    and (off + take < run.length or not self.keep_hidden)
                ):
                    removed.append((self._hide_after(bi, ii, off, take), take))
                    c += take
                    continue
                if off:
                    self._split(block, ii, off)
                    ii += 1
                if take < block.runs[ii].length:
                    self._split(block, ii, take)
                removed.append((self._position_at(bi, ii), take))
                self._hide_run(bi, ii)
                if len(block.runs) > BLOCK:
                    self._split_block(bi)
            c += take
        return removed

    def _hide_after(self, bi: int, ii: int, off: int, n: int) -> int:
        """Hide ``n`` elements from ``off > 0`` of visible run ``ii`` of block ``bi`` and return
        their visible index, in one step: the general path's cuts, hiding and merging, done
        at once. In the middle of the run, the hidden part sits between two visible ones (so
        nothing merges); at its end (a text only: a list keeps hidden values), it joins the
        hidden run that continues it, if any, as backspacing does."""
        block = self.blocks[bi]
        runs = block.runs
        run = runs[ii]
        known = self._start
        start = known[1] if known is not None and known[0] is run else self._position_at(bi, ii)
        content, end, actor, index = run.content, off + n, run.actor, self._index[run.actor]
        if end < run.length:
            hidden = content[off:end] if self.keep_hidden else None
            mid = Run(actor, run.counter + off, n, hidden, False, block)
            right = Run(actor, run.counter + end, run.length - end, content[end:], True, block)
            runs[ii + 1 : ii + 1] = (mid, right)
            index.add(mid.counter, mid)
            index.add(right.counter, right)
        else:
            nxt = runs[ii + 1] if ii + 1 < len(runs) else None
            if (
                nxt is not None
                and not nxt.visible
                and type(nxt) is Run
                and nxt.actor == actor
                and nxt.counter == run.counter + end
            ):
                index.rekey(nxt.counter, nxt.counter - n)
                nxt.counter -= n
                nxt.length += n
            else:
                tail = Run(actor, run.counter + off, n, None, False, block)
                runs.insert(ii + 1, tail)
                index.add(tail.counter, tail)
        run.content = content[:off]
        run.length = off
        self._grow(bi, -n)
        self._start = (run, start)  # the change is after run's start
        if len(runs) > BLOCK:
            self._split_block(bi)
        return start + off

    # ------------------------------------------------------------------ restoring

    def append_run(
        self, actor: bytes, counter: int, content: Any, length: int, visible: bool
    ) -> Run:
        """Append a run at the end (restoring a snapshot, whose runs come in sequence order)."""
        bi = len(self.blocks) - 1
        run = Run(actor, counter, length, content, visible, self.blocks[bi])
        self._insert_run(bi, len(self.blocks[bi].runs), run)
        return run

    def append_slot(self, slot: Run) -> None:
        """Append a prepared run (a move slot) at the end, restoring a snapshot."""
        bi = len(self.blocks) - 1
        slot.block = self.blocks[bi]
        self._insert_run(bi, len(slot.block.runs), slot)

    # ------------------------------------------------------------------ internals

    def _grow(self, bi: int, delta: int) -> None:
        self._start = None
        self.blocks[bi].visible += delta
        self.length += delta
        if bi < self._fbi:
            self._fstart += delta

    def _block_index(self, block: Block) -> int:
        if self._fbi < len(self.blocks) and self.blocks[self._fbi] is block:
            return self._fbi
        return self.blocks.index(block)

    def _block_start(self, bi: int) -> int:
        blocks, fbi, start = self.blocks, self._fbi, self._fstart
        while fbi < bi:
            start += blocks[fbi].visible
            fbi += 1
        while fbi > bi:
            fbi -= 1
            start -= blocks[fbi].visible
        self._fbi, self._fstart = fbi, start
        return start

    def _insert_run(self, bi: int, ii: int, run: Run) -> None:
        block = self.blocks[bi]
        block.runs.insert(ii, run)
        index = self._index.get(run.actor)
        if index is None:
            index = self._index[run.actor] = RunIndex()
        index.add(run.counter, run)
        if run.visible:
            self._grow(bi, run.length)
        if len(block.runs) > BLOCK:
            self._split_block(bi)

    def _split(self, block: Block, ii: int, k: int) -> None:
        """Cut run ``ii`` of ``block`` after its first ``k`` elements."""
        run = block.runs[ii]
        content = run.content
        right = Run(
            run.actor,
            run.counter + k,
            run.length - k,
            None if content is None else content[k:],
            run.visible,
            block,
        )
        if content is not None:
            run.content = content[:k]
        run.length = k
        block.runs.insert(ii + 1, right)
        self._index[run.actor].add(right.counter, right)

    def _split_block(self, bi: int) -> None:
        block = self.blocks[bi]
        half = len(block.runs) // 2
        new = Block()
        new.runs = block.runs[half:]
        del block.runs[half:]
        for run in new.runs:
            run.block = new
            if run.visible:
                new.visible += run.length
        block.visible -= new.visible
        self.blocks.insert(bi + 1, new)
        if self._fbi > bi:
            self._fbi += 1

    def _hide_run(self, bi: int, ii: int) -> int:
        """Hide run ``ii`` of block ``bi``; in a text, merge it with hidden neighbours it
        continues. Return the index of the run after it."""
        block = self.blocks[bi]
        runs = block.runs
        run = runs[ii]
        run.visible = False
        self._grow(bi, -run.length)
        if self.keep_hidden:
            return ii + 1
        run.content = None
        if ii + 1 < len(runs) and mergeable(run, runs[ii + 1]):
            if runs[ii + 1] is self._last:
                self._last = run
            self._index[run.actor].remove(runs[ii + 1].counter)
            run.length += runs[ii + 1].length
            del runs[ii + 1]
        if ii and mergeable(runs[ii - 1], run):
            runs[ii - 1].length += run.length
            if run is self._last:
                self._last = runs[ii - 1]
            del runs[ii]
            self._index[run.actor].remove(run.counter)
            return ii
        return ii + 1
