"""Fork evidence at the feed layer: ``accept_fork_evidence`` and ``accept_conflict`` against the
memory and the SQLite store (the ``store`` fixture). One error per rule; every rejection leaves
the store's dump unchanged; evidence only ever lowers a fork point."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from microsync.errors import (
    AuthorNotCertified,
    BadForkEvidence,
    BadSignature,
    DecodeError,
    ForkedFeed,
    MicrosyncError,
    PrevMismatch,
    WrongGroup,
)
from microsync.feed import Entry, ingest, parse_entry
from microsync.feed.ingest import Conflicted, accept_conflict, accept_fork_evidence
from microsync.storage.base import Store
from tests.test_feed import ALICE, BOB, FEED, GROUP, OTHER_GROUP, forge, prepared, write_feed


def other_chain(count: int, start: int = 1) -> list[Entry]:
    """Alice's feed signed again from ``start``: a second version of entries ``start``.."""
    entries: list[Entry] = []
    prev = FEED[start - 2][0].id if start > 1 else None
    for i in range(count):
        wire, _ = forge(ALICE.device_key, FEED[start - 1 + i][0], b"other %d" % i, prev=prev)
        entries.append(parse_entry(wire))
        prev = entries[-1].id
    return entries


def flip(wire: bytes) -> bytes:
    return wire[:-1] + bytes([wire[-1] ^ 1])


def rejected(store: Store, error: type[MicrosyncError], call: Callable[[], object]) -> None:
    before = store.dump()
    with pytest.raises(error):
        call()
    assert store.dump() == before


def test_evidence_marks_a_feed_this_store_holds_nothing_of(store: Store) -> None:
    prepared(store, 0)
    [b] = other_chain(1, start=2)
    assert accept_fork_evidence(store, GROUP, FEED[1][0].wire, b.wire)
    assert store.feed_status(GROUP, ALICE.device_id).forked_at == 2
    [evidence] = store.fork_evidence(GROUP, ALICE.device_id)
    assert {evidence.first, evidence.second} == {FEED[1][0].wire, b.wire}
    # the feed is closed from there on; before the fork it goes on
    assert ingest(store, GROUP, FEED[0][0].wire, FEED[0][1]).accepted
    with pytest.raises(ForkedFeed):
        ingest(store, GROUP, FEED[2][0].wire, FEED[2][1])


def test_evidence_only_lowers_the_fork_point(store: Store) -> None:
    prepared(store, 0)
    b = other_chain(3, start=1)
    assert accept_fork_evidence(store, GROUP, FEED[2][0].wire, b[2].wire)
    before = store.dump()
    assert not accept_fork_evidence(store, GROUP, FEED[2][0].wire, b[2].wire)  # again
    assert not accept_fork_evidence(store, GROUP, FEED[3][0].wire, flip(FEED[3][0].wire))
    assert store.dump() == before  # higher, even unsigned: dropped unread
    assert accept_fork_evidence(store, GROUP, FEED[0][0].wire, b[0].wire)
    assert store.feed_status(GROUP, ALICE.device_id).forked_at == 1


@pytest.mark.parametrize(
    ("error", "pair"),
    [
        (BadSignature, lambda b: (FEED[1][0].wire, flip(b.wire))),
        (BadForkEvidence, lambda b: (FEED[1][0].wire, FEED[2][0].wire)),  # two positions
        (BadForkEvidence, lambda b: (FEED[1][0].wire, FEED[1][0].wire)),  # one entry
        (BadForkEvidence, lambda b: (FEED[1][0].wire, write_feed(BOB, 2)[1][0].wire)),
        (WrongGroup, lambda b: (FEED[1][0].wire, write_feed(ALICE, 2, OTHER_GROUP)[1][0].wire)),
        (PrevMismatch, lambda b: (FEED[1][0].wire, forge(ALICE.device_key, b, prev=None)[0])),
        (DecodeError, lambda b: (FEED[1][0].wire, b"\x00" * 100)),
    ],
)
def test_evidence_that_proves_nothing_changes_nothing(
    store: Store, error: type[MicrosyncError], pair: Callable[[Entry], tuple[bytes, bytes]]
) -> None:
    prepared(store, 2)
    [b] = other_chain(1, start=2)
    first, second = pair(b)
    rejected(store, error, lambda: accept_fork_evidence(store, GROUP, first, second))


def test_evidence_about_an_unknown_device_is_refused(store: Store) -> None:
    [b] = other_chain(1, start=2)
    rejected(
        store,
        AuthorNotCertified,
        lambda: accept_fork_evidence(store, GROUP, FEED[1][0].wire, b.wire),
    )


def test_a_conflict_finds_the_lowest_position_that_differs(store: Store) -> None:
    prepared(store, 4)
    run = other_chain(3, start=2)  # entries 2..4 signed again; entry 1 is shared
    found = accept_conflict(store, GROUP, [e.wire for e in reversed(run)] + [FEED[0][0].wire])
    assert found == Conflicted(device=ALICE.device_id, seq=2, earlier=False)
    assert store.feed_status(GROUP, ALICE.device_id).forked_at == 2
    # the same run again: known already
    before = store.dump()
    assert accept_conflict(store, GROUP, [e.wire for e in reversed(run)]) is None
    assert store.dump() == before


def test_a_conflict_that_stops_short_of_the_fork_says_so(store: Store) -> None:
    prepared(store, 4)
    run = other_chain(3, start=2)
    found = accept_conflict(store, GROUP, [run[2].wire, run[1].wire])  # 4 and 3 only
    assert found == Conflicted(device=ALICE.device_id, seq=3, earlier=True)


def test_a_conflict_equal_to_what_is_held_finds_nothing(store: Store) -> None:
    prepared(store, 3)
    before = store.dump()
    assert accept_conflict(store, GROUP, [FEED[2][0].wire, FEED[1][0].wire]) is None
    assert store.dump() == before


@pytest.mark.parametrize(
    ("error", "wires"),
    [
        (BadForkEvidence, lambda r: [r[2].wire, r[0].wire]),  # skips a position
        (BadForkEvidence, lambda r: [r[1].wire, r[2].wire]),  # goes up
        (BadForkEvidence, lambda r: [r[2].wire, FEED[2][0].wire]),  # does not chain
        (BadForkEvidence, lambda r: [r[0].wire, write_feed(BOB, 1)[0][0].wire]),  # two feeds
        (BadSignature, lambda r: [flip(r[0].wire)]),
        (DecodeError, lambda r: [b"\x01" * 80]),
    ],
)
def test_a_conflict_that_is_not_one_signed_run_changes_nothing(
    store: Store, error: type[MicrosyncError], wires: Callable[[list[Entry]], list[bytes]]
) -> None:
    prepared(store, 4)
    run = other_chain(3, start=2)
    rejected(store, error, lambda: accept_conflict(store, GROUP, wires(run)))
