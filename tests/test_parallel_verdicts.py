"""``node.parallel.Verdicts``: a batch's signature checks shared by helper threads and by
whoever reads the answers. Whatever the order the answers are read in, and however many
helpers there are, they are exactly ``verify_many``'s; no helper outlives the batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.crypto import labels
from microsync.crypto.batch import PARALLEL_AT, Signed, verify_many
from microsync.crypto.labels import Label
from microsync.feed import GroupId, Ingested, ingest_many
from microsync.node.parallel import CHUNK, Verdicts, verify_in_threads
from microsync.storage.memory import MemoryStore
from tests.test_feed import GROUP, trusting
from tests.test_feed_batch_verify import ALICE, ALICE_FEED, _signed


@settings(max_examples=30, deadline=None)
@given(
    cases=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), max_size=4 * CHUNK + 3),
    helpers=st.integers(0, 3),
    data=st.data(),
)
def test_answers_read_in_any_order_are_verify_manys(
    cases: list[tuple[int, int]], helpers: int, data: st.DataObject
) -> None:
    items = [_signed(kind, n) for kind, n in cases]
    expected = verify_many(labels.ENTRY_SIGNATURE, items)
    verdicts = Verdicts(labels.ENTRY_SIGNATURE, items, helpers=helpers)
    order = data.draw(st.permutations(range(len(items))))
    assert [verdicts[i] for i in order] == [expected[i] for i in order]
    assert verdicts[-1:] == expected[-1:] and len(verdicts) == len(expected)
    assert list(verdicts) == expected
    verdicts.join()
    assert verdicts.running == 0
    with pytest.raises(IndexError):
        verdicts[len(items)]


def test_the_reader_checks_what_no_helper_took() -> None:
    items = [_signed(0, n) for n in range(3 * CHUNK)]
    verdicts = Verdicts(labels.ENTRY_SIGNATURE, items, helpers=0)  # nobody but the reader
    assert verdicts[1] is True
    assert "1/3 chunks" in repr(verdicts)  # the reader checked the chunk it needed
    assert verdicts[2 * CHUNK] is True  # (the next untaken first, so chunks go in order)
    assert "3/3 chunks" in repr(verdicts)
    verdicts.join()


def test_a_batch_stored_with_threads_leaves_no_helper_running() -> None:
    store = trusting(MemoryStore(), ALICE)
    items = [(e.wire, b) for e, b in ALICE_FEED]
    assert len(items) >= PARALLEL_AT
    handed: list[Sequence[bool]] = []

    def verify(label: Label, signed: Sequence[Signed]) -> Sequence[bool]:
        handed.append(verify_in_threads(label, signed))
        return handed[-1]

    results = ingest_many(store, GroupId(GROUP), items, verify=verify)
    assert all(isinstance(r, Ingested) for r in results)
    (verdicts,) = handed
    assert isinstance(verdicts, Verdicts) and verdicts.running == 0  # all stopped on return
    assert store.feed_status(GroupId(GROUP), ALICE.device_id).head_seq == len(items)


def test_a_small_batch_or_one_worker_is_checked_at_once() -> None:
    few = [_signed(0, n) for n in range(PARALLEL_AT - 1)]
    assert isinstance(verify_in_threads(labels.ENTRY_SIGNATURE, few), list)
    many = [_signed(1, n) for n in range(PARALLEL_AT)]
    assert verify_in_threads(labels.ENTRY_SIGNATURE, many, workers=1) == [False] * PARALLEL_AT
