"""CRDT laws, one CRDT at a time: concurrent operations commute, duplicates change nothing,
and every merge order of the same operations gives the same bytes."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.state import Document, Op
from tests.test_state_support import actor, local_edit

CRDTS = {
    "register": ("set", "delete"),
    "counter": ("counter",),
    "orset": ("add", "discard"),
    "list": ("list_insert", "list_delete", "list_move"),
    "text": ("text_insert", "text_delete"),
}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def concurrent_ops(data: st.DataObject, kinds: tuple[str, ...]) -> tuple[list[Op], list[list[Op]]]:
    """A common history, then 3 replicas that each edit concurrently from it."""
    origin = Document(actor(0))
    base = [op for _ in range(4) if (op := local_edit(origin, data, 1_000, kinds)) is not None]
    branches = []
    for i in range(1, 4):
        doc = Document(actor(i))
        for op in base:
            doc.apply(op)
        n = data.draw(st.integers(1, 3), label="edits")
        now = 1_000 + data.draw(st.integers(0, 2), label="now")
        branches.append([op for _ in range(n) if (op := local_edit(doc, data, now, kinds))])
    return base, branches


def replay(ops: list[Op]) -> bytes:
    doc = Document(actor(9))
    for op in ops:
        doc.apply(op)
    return doc.snapshot_bytes()


@pytest.mark.parametrize("kinds", CRDTS.values(), ids=CRDTS.keys())
@SETTINGS
@given(data=st.data())
def test_concurrent_operations_commute(kinds: tuple[str, ...], data: st.DataObject) -> None:
    base, branches = concurrent_ops(data, kinds)
    results = {
        replay(base + [op for branch in order for op in branch])
        for order in itertools.permutations(branches)
    }
    assert len(results) == 1


@pytest.mark.parametrize("kinds", CRDTS.values(), ids=CRDTS.keys())
@SETTINGS
@given(data=st.data(), rng=st.randoms(use_true_random=False))
def test_interleavings_and_duplicates_give_the_same_bytes(
    kinds: tuple[str, ...], data: st.DataObject, rng: random.Random
) -> None:
    base, branches = concurrent_ops(data, kinds)
    expected = replay(base + [op for branch in branches for op in branch])
    queues = [list(b) for b in branches]
    mixed: list[Op] = list(base)
    while any(queues):  # a random interleaving that keeps each branch in order
        queue = rng.choice([q for q in queues if q])
        mixed.append(queue.pop(0))
        if rng.random() < 0.3:
            mixed.append(rng.choice(mixed))  # a duplicate of anything already delivered
    assert replay(mixed) == expected
    assert replay(mixed + mixed) == expected  # replaying everything again changes nothing
