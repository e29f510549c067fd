"""The run-length sequence against a naive RGA: one Python object per character, the textbook
integration loop. Same operations, same causal order: same order of every element, hidden ones
included. This checks the runs, blocks, finger and id index, not only that replicas agree."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.state import Document, Op, OpId, TextDelete, TextInsert
from tests.test_state_convergence import EXAMPLES, run_session
from tests.test_state_support import actor, causal_order

TEXT = ("text_insert", "text_delete")


class NaiveRGA:
    """Every character as ``[id, char, visible]`` in one list."""

    def __init__(self) -> None:
        self.elements: list[list[object]] = []

    def _index(self, elem: OpId) -> int:
        return next(i for i, e in enumerate(self.elements) if e[0] == elem)

    def insert(self, first: OpId, origin: OpId | None, text: str) -> None:
        for i, char in enumerate(text):
            new = OpId(first.counter + i, first.actor)
            j = 0 if origin is None else self._index(origin) + 1
            while j < len(self.elements) and self.elements[j][0] > new:  # type: ignore[operator]
                j += 1
            self.elements.insert(j, [new, char, True])
            origin = new

    def delete(self, elem: OpId) -> None:
        self.elements[self._index(elem)][2] = False

    def apply(self, op: Op) -> None:
        if isinstance(op, TextInsert):
            self.insert(op.id, op.origin, op.text)
        elif isinstance(op, TextDelete):
            for r in op.ranges:
                for c in range(r.counter, r.counter + r.length):
                    self.delete(OpId(c, r.actor))


def element_order(doc: Document, key: str) -> list[tuple[OpId, bool]]:
    seq = doc.texts.get(key)
    out: list[tuple[OpId, bool]] = []
    for run in seq.runs() if seq is not None else ():
        out += [(OpId(run.counter + i, run.actor), run.visible) for i in range(run.length)]
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.randoms(use_true_random=False))
def test_runs_order_elements_like_naive_rga(data: st.DataObject, rng: random.Random) -> None:
    _, made = run_session(data, 4, 50, TEXT)
    order = causal_order(made, rng)
    doc = Document(actor(40))
    models = {key: NaiveRGA() for key in ("a", "b")}
    for op in order:
        doc.apply(op)
        models[op.key].apply(op)
    for key, model in models.items():
        assert element_order(doc, key) == [(e[0], e[2]) for e in model.elements]
        assert doc.text(key).value == "".join(str(e[1]) for e in model.elements if e[2])
