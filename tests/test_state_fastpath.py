"""The fast paths of remote apply against the general ones they shortcut.

``Document.apply`` takes text edits straight to the sequence, and ``Sequence`` keeps a last-run
cache (``_last``), a known run index (``_start``) and a one-step hide (``fast_cuts``). A slow
document turns every one of them off: the generic ``_apply`` dispatch, sequences whose caches
always miss and which hide by cutting, hiding and merging. The same operations, in any order
(out-of-order ones included, which raise :class:`MissingDependency` and must change nothing),
give the same changes, the same errors and the same snapshot bytes."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.state import Document, MissingDependency, Op, RegisterDelete, RegisterSet
from microsync.state.listcrdt import ListCRDT
from microsync.state.sequence import Sequence
from tests.test_state_convergence import EXAMPLES, run_session
from tests.test_state_support import KINDS, actor, causal_order

TEXT = ("text_insert", "text_delete")


class SlowSequence(Sequence):
    """Every cache misses; parts of runs are hidden by the general path."""

    fast_cuts = False
    _last = property(lambda self: None, lambda self, value: None)  # type: ignore[assignment]
    _start = property(lambda self: None, lambda self, value: None)  # type: ignore[assignment]


class SlowDocument(Document):
    """``apply`` as it was before the text fast path: the duplicate test, then ``_apply``."""

    def apply(self, op: Op, *, now: int | None = None) -> Any:
        if op.id.counter <= self.versions.get(op.id.actor, 0):
            return []
        if now is not None and isinstance(op, RegisterSet | RegisterDelete):
            self.hlc.receive(op.ts, now)
        return self._apply(op)

    def _text(self, key: str) -> Sequence:
        text = self.texts.get(key)
        if text is None:
            text = self.texts[key] = SlowSequence(keep_hidden=False)
        return text

    def _list(self, key: str) -> ListCRDT:
        lst = self.lists.get(key)
        if lst is None:
            lst = self.lists[key] = ListCRDT()
            lst.seq = SlowSequence(keep_hidden=True)
        return lst


def outcome(doc: Document, op: Op) -> object:
    try:
        return doc.apply(op, now=5_000)
    except MissingDependency:
        return "missing"


def same(fast: Document, slow: Document, ops: list[Op]) -> None:
    for op in ops:
        assert outcome(fast, op) == outcome(slow, op), op
    assert fast.snapshot_bytes() == slow.snapshot_bytes()
    assert fast.to_value() == slow.to_value()
    assert fast.versions == slow.versions and fast.clock == slow.clock
    for key, text in fast.texts.items():
        assert len(text) == len(slow.texts[key])
        assert not text.overlapping()
        for i in range(len(text)):  # every visible index maps to the same element
            assert text.id_at(i) == slow.texts[key].id_at(i)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.randoms(use_true_random=False), st.sampled_from([TEXT, KINDS]))
def test_fast_paths_equal_slow_paths_in_causal_order(
    data: st.DataObject, rng: random.Random, kinds: tuple[str, ...]
) -> None:
    _, made = run_session(data, 4, 60, kinds)
    order = causal_order(made, rng)
    order += order[: rng.randrange(len(order) + 1)]  # duplicates
    same(Document(actor(40)), SlowDocument(actor(40)), order)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.randoms(use_true_random=False))
def test_fast_paths_equal_slow_paths_out_of_order(data: st.DataObject, rng: random.Random) -> None:
    """Early operations fail alike and change nothing; a second pass applies what was held."""
    _, made = run_session(data, 3, 50, TEXT)
    ops = [m.op for m in made]
    rng.shuffle(ops)
    same(Document(actor(41)), SlowDocument(actor(41)), ops + ops)


def test_slow_sequence_really_takes_the_slow_paths() -> None:
    """The comparison means something only if the slow side's caches are off."""
    # private: the caches themselves are what this checks (on for the fast side, off for the slow)
    text = SlowSequence(keep_hidden=False)
    text.integrate(b"a", 1, None, "hello")
    assert text._last is None and text._start is None
    fast = Sequence(keep_hidden=False)
    fast.integrate(b"a", 1, None, "hello")
    assert fast._last is not None and fast._start is not None


edit_scripts = st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 4), st.text("abcdef", max_size=6)), max_size=80
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edit_scripts, edit_scripts)
def test_fast_paths_equal_slow_paths_on_typing(first: Any, second: Any) -> None:
    """Typing and backspacing as people do (long runs, cuts at their ends and middles), by two
    authors who then see each other's edits and carry on: the patterns the shortcuts are for."""
    a, b = Document(actor(1)), Document(actor(2))
    ops: list[Op] = []

    def edit(doc: Document, script: Any) -> None:
        text = doc.text("t")
        for where, deleted, inserted in script:
            pos = int(where * len(text.value))
            deleted = min(deleted, len(text.value) - pos)
            if deleted:
                ops.append(text.delete(pos, deleted))
            if inserted:
                ops.append(text.insert(pos, inserted))

    edit(a, first)
    edit(b, second)
    for op in list(ops):
        a.apply(op)
        b.apply(op)
    edit(a, second)
    edit(b, first)
    same(Document(actor(42)), SlowDocument(actor(42)), ops)


def test_fast_paths_equal_slow_paths_on_the_trace_start() -> None:
    """The first 20,000 edits of the automerge trace, as the benchmark applies them."""
    import gzip
    import json
    from pathlib import Path

    trace = Path(__file__).parent / "data" / "editing-trace.json.gz"
    with gzip.open(trace) as f:
        edits = json.load(f)[:20_000]
    text = Document(actor(3)).text("paper")
    ops: list[Op] = []
    for pos, deleted, inserted in edits:
        if deleted:
            ops.append(text.delete(pos, deleted))
        if inserted:
            ops.append(text.insert(pos, inserted))
    fast, slow = Document(actor(4)), SlowDocument(actor(4))
    for op in ops:
        assert fast.apply(op) == slow.apply(op)
    assert fast.snapshot_bytes() == slow.snapshot_bytes()
    assert fast.text("paper").value == text.value
