"""Convergence of whole documents: replicas that applied the same operations, in any causal
order and with any duplicates, hold byte-identical snapshots; snapshot + tail == full replay."""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.state import Document
from tests.test_state_support import (
    KINDS,
    Made,
    Replica,
    actor,
    causal_order,
    check_shadow,
    local_edit,
)

# MICROSYNC_STATE_EXAMPLES raises the number of examples for a longer hunt.
EXAMPLES = int(os.environ.get("MICROSYNC_STATE_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def run_session(
    data: st.DataObject, replicas: int, steps: int, kinds: tuple[str, ...] = KINDS
) -> tuple[list[Replica], list[Made]]:
    """Replicas edit and gossip: each step either edits at one replica or delivers a prefix of
    one replica's log (a causal order) to another, duplicates included."""
    reps = [Replica(Document(actor(i))) for i in range(replicas)]
    made: list[Made] = []
    now = 1_000
    for _ in range(steps):
        now += data.draw(st.integers(0, 3), label="tick")
        i = data.draw(st.integers(0, replicas - 1), label="replica")
        rep = reps[i]
        if data.draw(st.booleans(), label="edit?"):
            past = dict(rep.doc.versions)
            op = local_edit(rep.doc, data, now + 7 * i, kinds)
            if op is not None:
                rep.log.append(op)
                made.append(Made(op, past))
        else:
            source = reps[data.draw(st.integers(0, replicas - 1), label="from")]
            upto = data.draw(st.integers(0, len(source.log)), label="upto")
            rep.start_shadow()
            for op in list(source.log[:upto]):
                rep.receive(op)
            check_shadow(rep)
    return reps, made


def sync_all(reps: list[Replica]) -> None:
    for rep in reps:
        rep.start_shadow()
        for other in reps:
            for op in list(other.log):
                rep.receive(op)
        check_shadow(rep)


@SETTINGS
@given(st.data(), st.integers(3, 5))
def test_replicas_converge_under_gossip(data: st.DataObject, replicas: int) -> None:
    reps, _ = run_session(data, replicas, 40)
    sync_all(reps)
    snapshots = {rep.doc.snapshot_bytes() for rep in reps}
    assert len(snapshots) == 1
    values = [rep.doc.to_value() for rep in reps]
    assert all(v == values[0] for v in values)
    (snapshot,) = snapshots
    assert Document.from_snapshot(snapshot, actor(9)).snapshot_bytes() == snapshot


@SETTINGS
@given(st.data(), st.integers(3, 4), st.randoms(use_true_random=False))
def test_any_causal_order_with_duplicates_gives_the_same_bytes(
    data: st.DataObject, replicas: int, rng: random.Random
) -> None:
    reps, made = run_session(data, replicas, 30)
    sync_all(reps)
    expected = reps[0].doc.snapshot_bytes()
    for _ in range(3):
        order = causal_order(made, rng)
        fresh = Replica(Document(actor(20)))
        fresh.start_shadow()
        for k, op in enumerate(order):
            fresh.receive(op)
            if k and rng.random() < 0.2:
                fresh.receive(order[rng.randrange(k)])  # a duplicate
        check_shadow(fresh)
        assert fresh.doc.snapshot_bytes() == expected


@SETTINGS
@given(st.data(), st.randoms(use_true_random=False))
def test_snapshot_plus_tail_equals_full_replay(data: st.DataObject, rng: random.Random) -> None:
    _, made = run_session(data, 3, 30)
    order = causal_order(made, rng)
    full = Document(actor(30))
    for op in order:
        full.apply(op)
    cut = data.draw(st.integers(0, len(order)), label="cut")
    head = Document(actor(31))
    for op in order[:cut]:
        head.apply(op)
    restored = Document.from_snapshot(head.snapshot_bytes(), actor(31))
    assert restored.to_value() == head.to_value()
    for op in order[max(0, cut - 3) :]:  # the tail, with a few duplicates before the cut
        restored.apply(op)
    assert restored.snapshot_bytes() == full.snapshot_bytes()
    assert restored.to_value() == full.to_value()
