"""The automerge-perf editing trace (``tests/data/README.md``) through the text CRDT: typed
locally, then the operations it produced applied on a second replica."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from microsync.state import Document, Op, TextDelete, TextInsert

DATA = Path(__file__).parent / "data"


def load_trace() -> tuple[list[tuple[int, int, str]], str]:
    """The edits ``[position, delete_count, insert_text]`` and the final text."""
    with gzip.open(DATA / "editing-trace.json.gz") as f:
        edits = [tuple(e) for e in json.load(f)]
    with gzip.open(DATA / "editing-trace.final.txt.gz") as f:
        final = f.read().decode()
    return edits, final


@pytest.fixture(scope="module")
def trace() -> tuple[list[tuple[int, int, str]], str]:
    return load_trace()


def test_trace_replays_locally_and_remotely(trace: tuple[list[tuple[int, int, str]], str]) -> None:
    edits, final = trace
    local = Document(b"\x01" * 32)
    text = local.text("paper")
    ops: list[Op] = []
    for pos, deleted, inserted in edits:
        if deleted:
            ops.append(text.delete(pos, deleted))
        if inserted:
            ops.append(text.insert(pos, inserted))
    assert text.value == final
    assert len(ops) == len(edits)
    assert sum(isinstance(op, TextInsert) and op.origin is not None for op in ops) > 180_000
    assert all(isinstance(op, TextInsert | TextDelete) for op in ops)

    remote = Document(b"\x02" * 32)
    for op in ops:
        remote.apply(op)
    assert remote.text("paper").value == final
    snapshot = local.snapshot_bytes()
    assert remote.snapshot_bytes() == snapshot
    assert Document.from_snapshot(snapshot, b"\x03").text("paper").value == final
