"""The storage contract: what every ``Store`` adapter must do, run against memory and SQLite.

Each test takes the ``store`` fixture (``tests/conftest.py``), once per adapter. The Hypothesis
state machine at the end drives a MemoryStore and a SqliteStore with the same random
operations and, after every step, compares the canonical dump and the answer of every read
method. Adapters only store and find: none of these tests involves a feed rule.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from microsync.errors import StorageError
from microsync.feed import (
    AuthorStatus,
    Entry,
    FeedStatus,
    ForkEvidence,
    GroupId,
    Header,
    StoredEntry,
    append,
    body_hash,
    sign_entry,
)
from microsync.identity import DeviceCertificate, DeviceRevocation, LocalIdentity
from microsync.storage import MemoryStore, SqliteStore, Store
from tests.conftest import make_identity

NOW = 1_700_000_000_000
GROUP = GroupId(b"G" * 32)
OTHER_GROUP = GroupId(b"H" * 32)
ALICE = make_identity("alice")
BOB = make_identity("bob")
CAROL = make_identity("carol")  # never certified anywhere below


def chain(
    identity: LocalIdentity, length: int, group: GroupId = GROUP, variant: int = 0
) -> list[tuple[Entry, bytes]]:
    """``length`` linked entries of ``identity``; another ``variant`` forks at every seq."""
    made: list[tuple[Entry, bytes]] = []
    prev = None
    for seq in range(1, length + 1):
        body = f"{identity.name}/{seq}/{variant}".encode()
        header = Header(
            group=group,
            device=identity.device_id,
            seq=seq,
            prev=prev,
            epoch=0,
            type=1,
            hlc=seq,
            deps=(),
            body_hash=body_hash(body),
            body_len=len(body),
        )
        entry = sign_entry(identity.device_key, header)
        made.append((entry, body))
        prev = entry.id
    return made


def revoke(identity: LocalIdentity) -> DeviceRevocation:
    assert identity.person_key is not None
    return DeviceRevocation.issue(identity.person_key, identity.device_id, NOW)


def evidence(first: Entry, second: Entry) -> ForkEvidence:
    h = first.header
    return ForkEvidence(
        group=h.group, device=h.device, seq=h.seq, first=first.wire, second=second.wire
    )


def seqs(stored: list[StoredEntry]) -> list[int]:
    return [s.entry.header.seq for s in stored]


def fill(store: Store, entries: list[tuple[Entry, bytes]]) -> None:
    for entry, body in entries:
        store.insert_entry(entry, body)


ALICE_FEED = chain(ALICE, 5)
ALICE_FORK = chain(ALICE, 5, variant=1)
BOB_FEED = chain(BOB, 3)
A = ALICE.device_id


# --- profile values and trust -----------------------------------------------------------------


def test_a_new_store_is_empty(store: Store) -> None:
    assert store.get_meta("identity") is None
    assert store.certificate(A) is None and store.revocation(A) is None
    assert store.author_status(A) is AuthorStatus.UNKNOWN
    assert store.feed_status(GROUP, A) == FeedStatus()
    assert store.feeds(GROUP) == {}
    assert store.entry_at(GROUP, A, 1) is None
    assert list(store.entries(GROUP, A)) == []
    assert store.pending_at(GROUP, A, 1) == []
    assert store.fork_evidence(GROUP, A) == []


def test_meta_values_round_trip_and_overwrite(store: Store) -> None:
    store.put_meta("identity", b"one")
    store.put_meta("settings", b"")
    store.put_meta("identity", b"two")
    assert store.get_meta("identity") == b"two"
    assert store.get_meta("settings") == b""
    assert store.get_meta("Identity") is None


def test_certificates_and_revocations_set_the_author_status(store: Store) -> None:
    store.put_certificate(ALICE.certificate)
    assert store.certificate(A) == ALICE.certificate
    assert store.author_status(A) is AuthorStatus.CERTIFIED
    assert store.author_status(BOB.device_id) is AuthorStatus.UNKNOWN
    store.put_revocation(revoke(ALICE))
    assert store.revocation(A) == revoke(ALICE)
    assert store.author_status(A) is AuthorStatus.REVOKED
    assert store.certificate(A) == ALICE.certificate


def test_a_certificate_for_a_known_device_replaces_the_old_one(store: Store) -> None:
    assert BOB.person_key is not None
    other = DeviceCertificate.issue(BOB.person_key, ALICE.device_key.public, "taken", NOW)
    store.put_certificate(ALICE.certificate)
    store.put_certificate(other)
    assert store.certificate(A) == other


def test_a_revocation_needs_a_certificate(store: Store) -> None:
    before = store.dump()
    with pytest.raises(StorageError):
        store.put_revocation(revoke(CAROL))
    assert store.dump() == before
    assert store.author_status(CAROL.device_id) is AuthorStatus.UNKNOWN


def test_author_status_forgets_a_rolled_back_certificate(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.put_certificate(ALICE.certificate)
        assert store.author_status(A) is AuthorStatus.CERTIFIED
        raise RuntimeError("abort")
    assert store.author_status(A) is AuthorStatus.UNKNOWN
    store.put_certificate(ALICE.certificate)
    with pytest.raises(RuntimeError), store.transaction():
        store.put_revocation(revoke(ALICE))
        assert store.author_status(A) is AuthorStatus.REVOKED
        raise RuntimeError("abort")
    assert store.author_status(A) is AuthorStatus.CERTIFIED


# --- feeds --------------------------------------------------------------------------------------


def test_insert_entry_stores_the_entry_and_moves_the_head(store: Store) -> None:
    fill(store, ALICE_FEED[:2])
    entry, body = ALICE_FEED[1]
    assert store.entry_at(GROUP, A, 2) == StoredEntry(entry=entry, body=body)
    assert store.feed_status(GROUP, A) == FeedStatus(head_seq=2, head_id=entry.id)
    assert store.feeds(GROUP) == {A: FeedStatus(head_seq=2, head_id=entry.id)}
    assert store.feeds(OTHER_GROUP) == {}
    assert store.entry_at(GROUP, A, 3) is None
    assert store.entry_at(OTHER_GROUP, A, 2) is None


def test_append_writes_through_the_port(store: Store) -> None:
    first = append(store, ALICE.device_key, group=GROUP, type=1, body=b"x", epoch=0, hlc=0)
    second = append(store, ALICE.device_key, group=GROUP, type=1, body=b"y", epoch=0, hlc=1)
    assert second.header.prev == first.id
    assert [s.body for s in store.entries(GROUP, A)] == [b"x", b"y"]


def test_an_entry_may_come_without_a_body_and_lose_it_later(store: Store) -> None:
    (first, _), (second, body) = ALICE_FEED[:2]
    store.insert_entry(first, None)
    store.insert_entry(second, body)
    store.delete_body(second.id)
    store.delete_body(ALICE_FORK[0][0].id)  # unknown ids are ignored
    assert store.entry_at(GROUP, A, 1) == StoredEntry(entry=first, body=None)
    assert store.entry_at(GROUP, A, 2) == StoredEntry(entry=second, body=None)
    assert store.feed_status(GROUP, A).head_id == second.id


def test_an_empty_body_is_not_a_missing_one(store: Store) -> None:
    entry, _ = ALICE_FEED[0]
    store.insert_entry(entry, b"")
    stored = store.entry_at(GROUP, A, 1)
    assert stored is not None and stored.body == b""


@pytest.mark.parametrize("again", ["same entry", "other entry at the same seq"])
def test_insert_entry_refuses_a_taken_seq_or_id(store: Store, again: str) -> None:
    fill(store, ALICE_FEED[:2])
    before = store.dump()
    entry, body = ALICE_FEED[1] if again == "same entry" else ALICE_FORK[1]
    with pytest.raises(StorageError):
        store.insert_entry(entry, body)
    assert store.dump() == before


def test_a_refused_write_leaves_the_transaction_usable(store: Store) -> None:
    fill(store, ALICE_FEED[:1])
    with store.transaction():
        store.put_meta("before", b"1")
        with pytest.raises(StorageError):
            store.insert_entry(*ALICE_FEED[0])
        with pytest.raises(StorageError):
            store.put_revocation(revoke(CAROL))
        store.insert_entry(*ALICE_FEED[1])
    assert store.get_meta("before") == b"1"
    assert store.feed_status(GROUP, A).head_seq == 2


def test_insert_entries_stores_what_one_insert_entry_each_would(store: Store) -> None:
    one_by_one = MemoryStore()
    for entry, body in [*ALICE_FEED[:4], *BOB_FEED]:
        one_by_one.insert_entry(entry, body)
    with store.transaction():
        store.insert_entries(ALICE_FEED[:1])
        assert store.feed_status(GROUP, A).head_seq == 1  # a read inside sees it
        store.insert_entries([*ALICE_FEED[1:3], *BOB_FEED, ALICE_FEED[3]])
        store.insert_entries([])
    assert store.dump() == one_by_one.dump()
    assert store.feed_status(GROUP, A) == FeedStatus(head_seq=4, head_id=ALICE_FEED[3][0].id)
    assert [s.body for s in store.entries(GROUP, BOB.device_id)] == [b for _, b in BOB_FEED]


@pytest.mark.parametrize("taken", ["stored already", "twice in the batch", "a fork of a stored"])
def test_insert_entries_stores_none_when_any_position_or_id_is_taken(
    store: Store, taken: str
) -> None:
    fill(store, ALICE_FEED[:2])
    before = store.dump()
    clash = {
        "stored already": [ALICE_FEED[2], ALICE_FEED[1]],
        "twice in the batch": [ALICE_FEED[2], BOB_FEED[0], ALICE_FEED[2]],
        "a fork of a stored": [BOB_FEED[0], ALICE_FORK[1], ALICE_FEED[2]],
    }[taken]
    with store.transaction():
        store.put_meta("kept", b"1")
        with pytest.raises(StorageError):
            store.insert_entries(clash)
        assert store.dump() != before  # the meta write stays: only the batch is undone
        store.insert_entries(ALICE_FEED[2:3])  # the transaction goes on
    assert store.get_meta("kept") == b"1"
    assert store.feed_status(GROUP, A).head_seq == 3
    assert store.feeds(GROUP).keys() == {A}
    assert store.entry_at(GROUP, BOB.device_id, 1) is None


@pytest.mark.parametrize(
    ("after_seq", "limit", "expected"),
    [
        (0, None, [1, 2, 3, 4, 5]),
        (2, None, [3, 4, 5]),
        (0, 2, [1, 2]),
        (2, 2, [3, 4]),
        (4, 10, [5]),
        (0, 0, []),
        (5, None, []),
        (9, None, []),
    ],
)
def test_entries_come_in_seq_order_after_after_seq_up_to_limit(
    store: Store, after_seq: int, limit: int | None, expected: list[int]
) -> None:
    fill(store, list(reversed(BOB_FEED)))  # another feed, stored first, must not show up
    fill(store, ALICE_FEED)
    found = list(store.entries(GROUP, A, after_seq=after_seq, limit=limit))
    assert seqs(found) == expected
    wanted = [pair for pair in ALICE_FEED if pair[0].header.seq in expected]
    assert found == [StoredEntry(entry=entry, body=body) for entry, body in wanted]


def test_entries_follow_the_head_that_insert_entry_sets_and_skip_gaps(store: Store) -> None:
    fill(store, [ALICE_FEED[4], ALICE_FEED[0]])  # no order rule here: the last insert is head
    assert store.feed_status(GROUP, A).head_seq == 1
    assert seqs(list(store.entries(GROUP, A))) == [1]
    assert store.entry_at(GROUP, A, 5) == StoredEntry(entry=ALICE_FEED[4][0], body=ALICE_FEED[4][1])
    fill(store, [ALICE_FEED[1], ALICE_FEED[3]])  # head 4; seq 3 is a gap
    assert seqs(list(store.entries(GROUP, A))) == [1, 2, 4]
    assert seqs(list(store.entries(GROUP, A, after_seq=1, limit=2))) == [2]


def test_out_of_range_numbers_find_nothing_and_bound_nothing(store: Store) -> None:
    fill(store, ALICE_FEED[:2])
    store.insert_pending(*ALICE_FEED[3])
    assert store.entry_at(GROUP, A, 2**63) is None
    assert store.entry_at(GROUP, A, -(2**64)) is None
    assert store.pending_at(GROUP, A, 2**64) == []
    assert seqs(list(store.entries(GROUP, A, after_seq=-5, limit=2**70))) == [1, 2]
    store.delete_pending(GROUP, A, 2**63, 2**64)
    assert store.feed_status(GROUP, A).pending == 1
    store.delete_pending(GROUP, A, -(2**64), 2**64)
    assert store.feed_status(GROUP, A).pending == 0


# --- pending entries and forks ------------------------------------------------------------------


def test_pending_entries_keep_arrival_order_and_are_counted(store: Store) -> None:
    fill(store, ALICE_FEED[:1])
    third = [ALICE_FEED[2], ALICE_FORK[2], chain(ALICE, 3, variant=2)[2]]
    low, middle, high = sorted(third, key=lambda pair: pair[0].id)
    arrivals = [middle, low, high]  # neither ascending nor descending by id
    for entry, body in arrivals:
        store.insert_pending(entry, body)
    store.insert_pending(ALICE_FEED[3][0], None)
    assert store.pending_at(GROUP, A, 3) == [StoredEntry(entry=e, body=b) for e, b in arrivals]
    assert store.pending_at(GROUP, A, 4) == [StoredEntry(entry=ALICE_FEED[3][0], body=None)]
    assert store.feed_status(GROUP, A) == FeedStatus(
        head_seq=1, head_id=ALICE_FEED[0][0].id, pending=4
    )
    assert store.feeds(GROUP)[A].pending == 4
    assert seqs(list(store.entries(GROUP, A))) == [1]


def test_a_feed_with_only_pending_entries_is_not_listed(store: Store) -> None:
    store.insert_pending(*BOB_FEED[2])
    assert store.feed_status(GROUP, BOB.device_id) == FeedStatus(pending=1)
    assert store.feeds(GROUP) == {}


def test_insert_pending_refuses_the_same_entry_twice(store: Store) -> None:
    store.insert_pending(*ALICE_FEED[2])
    before = store.dump()
    with pytest.raises(StorageError):
        store.insert_pending(*ALICE_FEED[2])
    assert store.dump() == before


def test_delete_pending_drops_an_inclusive_range_of_one_feed(store: Store) -> None:
    for entry, body in ALICE_FEED[1:] + BOB_FEED[1:]:
        store.insert_pending(entry, body)
    store.delete_pending(GROUP, A, 3, 4)
    assert [seq for seq in range(1, 6) if store.pending_at(GROUP, A, seq)] == [2, 5]
    assert store.feed_status(GROUP, BOB.device_id).pending == 2
    store.delete_pending(GROUP, A, 5, 2)  # an empty range
    assert store.feed_status(GROUP, A).pending == 2


def test_record_fork_keeps_evidence_and_the_lowest_fork_point(store: Store) -> None:
    late = evidence(ALICE_FEED[3][0], ALICE_FORK[3][0])
    early = evidence(ALICE_FEED[1][0], ALICE_FORK[1][0])
    store.record_fork(late)
    assert store.feeds(GROUP) == {A: FeedStatus(forked_at=4)}
    store.record_fork(early)
    store.record_fork(late)
    assert store.feed_status(GROUP, A).forked_at == 2
    assert store.fork_evidence(GROUP, A) == [late, early, late]
    assert store.fork_evidence(OTHER_GROUP, A) == []


def test_a_forked_feed_keeps_its_head_and_fork_point(store: Store) -> None:
    fill(store, ALICE_FEED[:2])
    store.record_fork(evidence(ALICE_FEED[1][0], ALICE_FORK[1][0]))
    store.insert_entry(*ALICE_FEED[2])
    assert store.feed_status(GROUP, A) == FeedStatus(
        head_seq=3, head_id=ALICE_FEED[2][0].id, forked_at=2
    )


# --- transactions -------------------------------------------------------------------------------


def write_everything(store: Store) -> None:
    """One call of every write method (valid on a store filled by ``populate``)."""
    store.put_meta("identity", b"changed")
    store.put_certificate(BOB.certificate)
    store.put_revocation(revoke(ALICE))
    store.insert_entry(*ALICE_FEED[2])
    store.delete_body(ALICE_FEED[0][0].id)
    store.insert_pending(*ALICE_FEED[4])
    store.delete_pending(GROUP, A, 4, 4)
    store.record_fork(evidence(ALICE_FEED[0][0], ALICE_FORK[0][0]))


def populate(store: Store) -> None:
    store.put_meta("identity", b"bundle")
    store.put_certificate(ALICE.certificate)
    fill(store, ALICE_FEED[:2])
    store.insert_pending(*ALICE_FEED[3])


def test_a_failed_transaction_leaves_the_dump_byte_identical(store: Store) -> None:
    populate(store)
    before = store.dump()
    with pytest.raises(RuntimeError), store.transaction():
        write_everything(store)
        assert store.dump() != before
        raise RuntimeError("abort")
    assert store.dump() == before
    assert store.author_status(A) is AuthorStatus.CERTIFIED


def test_a_committed_transaction_keeps_every_write(store: Store) -> None:
    populate(store)
    with store.transaction():
        write_everything(store)
    reference = MemoryStore()
    populate(reference)
    write_everything(reference)
    assert store.dump() == reference.dump()


def test_nested_blocks_join_the_outer_transaction(store: Store) -> None:
    populate(store)
    before = store.dump()
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            store.put_meta("inner", b"1")
            with store.transaction():
                store.insert_entry(*ALICE_FEED[2])
        assert store.get_meta("inner") == b"1"
        raise RuntimeError("the outer block fails after the inner ones ended")
    assert store.dump() == before


def test_an_error_caught_inside_the_outer_block_undoes_nothing(store: Store) -> None:
    with store.transaction():
        store.put_meta("outer", b"1")
        with pytest.raises(RuntimeError), store.transaction():
            store.put_meta("inner", b"2")
            raise RuntimeError("caught by the outer block")
    assert (store.get_meta("outer"), store.get_meta("inner")) == (b"1", b"2")


def test_feed_status_inside_a_transaction_follows_every_write(store: Store) -> None:
    fill(store, ALICE_FEED[:1])
    with store.transaction():
        assert store.feed_status(GROUP, A).head_seq == 1  # read first: may now be cached
        store.insert_entry(*ALICE_FEED[1])
        assert store.feed_status(GROUP, A) == FeedStatus(head_seq=2, head_id=ALICE_FEED[1][0].id)
        with pytest.raises(StorageError):
            store.insert_entry(*ALICE_FORK[1])  # refused: the head stays where it was
        store.insert_pending(*ALICE_FEED[3])
        store.insert_pending(*ALICE_FEED[4])
        assert store.feed_status(GROUP, A).pending == 2
        with pytest.raises(StorageError):
            store.insert_pending(*ALICE_FEED[3])  # refused: still two pending
        assert store.feed_status(GROUP, A).pending == 2
        store.delete_pending(GROUP, A, 4, 4)
        assert store.feed_status(GROUP, A).pending == 1
        store.record_fork(evidence(ALICE_FEED[2][0], ALICE_FORK[2][0]))
        assert store.feed_status(GROUP, A).forked_at == 3
        store.insert_entry(*ALICE_FEED[2])
        expected = FeedStatus(head_seq=3, head_id=ALICE_FEED[2][0].id, forked_at=3, pending=1)
        assert store.feed_status(GROUP, A) == expected
        assert store.feeds(GROUP) == {A: expected}
        assert seqs(list(store.entries(GROUP, A))) == [1, 2, 3]
    assert store.feed_status(GROUP, A) == expected


FEED_READS: dict[str, Callable[[Store], object]] = {
    "feed_status": lambda s: [s.feed_status(GROUP, d) for d in (A, BOB.device_id)],
    "feeds": lambda s: s.feeds(GROUP),
    "entries": lambda s: [seqs(list(s.entries(GROUP, d))) for d in (A, BOB.device_id)],
    "dump": lambda s: s.dump(),
}


@pytest.mark.parametrize("read", sorted(FEED_READS))
def test_every_read_inside_a_transaction_sees_the_heads_it_moved(store: Store, read: str) -> None:
    answers = []
    for s in (store, MemoryStore()):
        fill(s, ALICE_FEED[:1])
        with s.transaction():
            s.feed_status(GROUP, A)
            fill(s, BOB_FEED[:2])  # a feed not read before in this transaction
            s.delete_pending(GROUP, A, 1, 9)  # drops whatever was known about ALICE's feed
            fill(s, ALICE_FEED[1:3])
            answers.append(FEED_READS[read](s))
    assert answers[0] == answers[1]


def test_a_rolled_back_transaction_leaves_no_cached_feed_status(store: Store) -> None:
    fill(store, ALICE_FEED[:1])
    before = (store.feed_status(GROUP, A), store.feeds(GROUP), store.dump())
    with pytest.raises(RuntimeError), store.transaction():
        store.feed_status(GROUP, A)
        fill(store, ALICE_FEED[1:3])
        store.insert_pending(*ALICE_FEED[4])
        store.feed_status(GROUP, BOB.device_id)
        fill(store, BOB_FEED)
        assert store.feed_status(GROUP, A).head_seq == 3
        assert store.feed_status(GROUP, BOB.device_id).head_seq == 3
        raise RuntimeError("abort")
    assert (store.feed_status(GROUP, A), store.feeds(GROUP), store.dump()) == before
    assert store.feed_status(GROUP, BOB.device_id) == FeedStatus()
    with store.transaction():  # the next transaction starts from the stored state
        assert store.feed_status(GROUP, A) == before[0]
        store.insert_entry(*ALICE_FEED[1])
    assert store.feed_status(GROUP, A).head_seq == 2


# --- closing ------------------------------------------------------------------------------------


def empty_transaction(store: Store) -> None:
    with store.transaction():
        pass


AFTER_CLOSE: dict[str, Callable[[Store], object]] = {
    "transaction": empty_transaction,
    "get_meta": lambda s: s.get_meta("identity"),
    "put_meta": lambda s: s.put_meta("identity", b""),
    "certificate": lambda s: s.certificate(A),
    "put_certificate": lambda s: s.put_certificate(BOB.certificate),
    "revocation": lambda s: s.revocation(A),
    "put_revocation": lambda s: s.put_revocation(revoke(ALICE)),
    "author_status": lambda s: s.author_status(A),
    "feed_status": lambda s: s.feed_status(GROUP, A),
    "feeds": lambda s: s.feeds(GROUP),
    "entry_at": lambda s: s.entry_at(GROUP, A, 1),
    "entries": lambda s: list(s.entries(GROUP, A)),
    "insert_entry": lambda s: s.insert_entry(*ALICE_FEED[2]),
    "delete_body": lambda s: s.delete_body(ALICE_FEED[0][0].id),
    "pending_at": lambda s: s.pending_at(GROUP, A, 4),
    "insert_pending": lambda s: s.insert_pending(*ALICE_FEED[4]),
    "delete_pending": lambda s: s.delete_pending(GROUP, A, 1, 9),
    "record_fork": lambda s: s.record_fork(evidence(ALICE_FEED[0][0], ALICE_FORK[0][0])),
    "fork_evidence": lambda s: s.fork_evidence(GROUP, A),
    "dump": lambda s: s.dump(),
}


@pytest.mark.parametrize("call", sorted(AFTER_CLOSE))
def test_every_call_after_close_raises_storage_error(store: Store, call: str) -> None:
    populate(store)
    AFTER_CLOSE[call](store)  # works while open
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError):
        AFTER_CLOSE[call](store)


# --- both adapters, same random operations ------------------------------------------------------

KEYS = ["identity", "settings"]
DEVICES = [ALICE.device_id, BOB.device_id, CAROL.device_id]
GROUPS = [GROUP, OTHER_GROUP]
POOL = [
    pair
    for identity in (ALICE, BOB)
    for group in GROUPS
    for variant in (0, 1)
    for pair in chain(identity, 4, group, variant)
]
_bob_key = BOB.person_key
assert _bob_key is not None
CERTIFICATES = [
    ALICE.certificate,
    BOB.certificate,
    DeviceCertificate.issue(_bob_key, ALICE.device_key.public, "claimed", NOW),
]
REVOCATIONS = [revoke(ALICE), revoke(BOB), revoke(CAROL)]
FORKS = [evidence(a, b) for (a, _), (b, _) in zip(POOL[0:4], POOL[4:8], strict=True)]

Op = tuple[str, tuple[Any, ...]]
pooled = st.sampled_from(POOL).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), st.sampled_from([pair[1], None, b""]))
)
small = st.integers(-1, 6)
operations: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("put_meta"), st.tuples(st.sampled_from(KEYS), st.binary(max_size=4))),
    st.tuples(st.just("put_certificate"), st.tuples(st.sampled_from(CERTIFICATES))),
    st.tuples(st.just("put_revocation"), st.tuples(st.sampled_from(REVOCATIONS))),
    st.tuples(st.just("insert_entry"), pooled),
    st.tuples(st.just("insert_pending"), pooled),
    st.tuples(st.just("delete_body"), st.tuples(st.sampled_from([e.id for e, _ in POOL]))),
    st.tuples(
        st.just("delete_pending"),
        st.tuples(st.sampled_from(GROUPS), st.sampled_from(DEVICES), small, small),
    ),
    st.tuples(st.just("record_fork"), st.tuples(st.sampled_from(FORKS))),
)


def apply(store: Store, op: Op) -> str:
    """Run one write; the outcome is what both adapters must agree on."""
    name, args = op
    try:
        getattr(store, name)(*args)
    except StorageError:
        return "refused"
    return "done"


def answers(store: Store) -> list[object]:
    """The dump and the answer of every read method over the whole key space in use."""
    found: list[object] = [store.dump(), [store.get_meta(key) for key in KEYS]]
    for device in DEVICES:
        found += [store.certificate(device), store.revocation(device), store.author_status(device)]
    for group in GROUPS:
        found.append(store.feeds(group))
        for device in DEVICES:
            found += [store.feed_status(group, device), store.fork_evidence(group, device)]
            found += [list(store.entries(group, device)), list(store.entries(group, device, 1, 2))]
            for seq in range(6):
                found += [store.entry_at(group, device, seq), store.pending_at(group, device, seq)]
    return found


def feed_reads(store: Store) -> list[object]:
    """Every feed's status, asked both ways, then the dump."""
    found: list[object] = []
    for group in GROUPS:
        found += [store.feed_status(group, device) for device in DEVICES]
        found.append(store.feeds(group))
    return [*found, store.dump()]


class Abort(Exception):
    """Raised at the end of a transaction block the test wants rolled back."""


class AdaptersAgree(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="microsync-contract-")
        self.stores: list[Store] = [
            MemoryStore(),
            SqliteStore.open(self.directory, synchronous="OFF"),
        ]

    @rule(op=operations)
    def write(self, op: Op) -> None:
        memory, sqlite = (apply(store, op) for store in self.stores)
        assert memory == sqlite, op

    @rule(ops=st.lists(operations, max_size=6), fail=st.booleans())
    def transaction(self, ops: list[Op], fail: bool) -> None:
        outcomes = [self._in_transaction(store, ops, fail) for store in self.stores]
        assert outcomes[0] == outcomes[1], ops

    @staticmethod
    def _in_transaction(store: Store, ops: list[Op], fail: bool) -> list[object]:
        """The outcome of each op and the feed reads right after it, inside the transaction
        (where an adapter may answer from what it cached earlier in the same transaction)."""
        outcomes: list[object] = []
        try:
            with store.transaction():
                for op in ops:
                    outcomes += [apply(store, op), feed_reads(store)]
                if fail:
                    raise Abort
        except Abort:
            outcomes.append("rolled back")
        return outcomes

    @invariant()
    def same_answers(self) -> None:
        memory, sqlite = (answers(store) for store in self.stores)
        assert memory == sqlite

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


AdaptersAgree.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
TestAdaptersAgree = AdaptersAgree.TestCase


# ---------------------------------------------------------------------- vault chunks


def _chunks(store: Store) -> Any:
    from microsync.blobs import ChunkStore

    assert isinstance(store, ChunkStore)
    return store


def test_chunks_put_get_delete_and_usage(store: Store) -> None:
    from microsync.blobs import ChunkId

    chunks = _chunks(store)
    a, b = ChunkId(b"a" * 32), ChunkId(b"b" * 32)
    assert chunks.get_chunk(GROUP, a) is None and not chunks.has_chunk(GROUP, a)
    assert chunks.chunk_usage(GROUP) == (0, 0)
    chunks.put_chunk(GROUP, a, b"x" * 100)
    chunks.put_chunk(GROUP, b, b"")
    chunks.put_chunk(GROUP, a, b"y" * 10)  # replaced whole
    assert chunks.get_chunk(GROUP, a) == b"y" * 10 and chunks.get_chunk(GROUP, b) == b""
    assert chunks.has_chunk(GROUP, a) and not chunks.has_chunk(OTHER_GROUP, a)
    assert chunks.chunk_usage(GROUP) == (2, 10) and chunks.chunk_usage(OTHER_GROUP) == (0, 0)
    assert chunks.delete_chunks(GROUP, [a, ChunkId(b"c" * 32)]) == 1
    assert chunks.get_chunk(GROUP, a) is None and chunks.chunk_usage(GROUP) == (1, 0)
    with pytest.raises(ValueError):
        chunks.put_chunk(GROUP, ChunkId(b"short"), b"x")


def test_chunks_are_not_rolled_back_with_a_transaction(store: Store) -> None:
    """Chunks are a cache their manifest authenticates: kept even if a transaction fails."""
    from microsync.blobs import ChunkId

    chunks = _chunks(store)
    with pytest.raises(RuntimeError), store.transaction():
        chunks.put_chunk(GROUP, ChunkId(b"k" * 32), b"kept")
        raise RuntimeError
    assert chunks.get_chunk(GROUP, ChunkId(b"k" * 32)) == b"kept"
