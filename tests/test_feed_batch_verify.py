"""Signatures checked a batch at once (``crypto.batch.verify_many``), on every core
(``node.parallel.verify_in_threads``), and the feed layer's batch path that uses them
(``ingest_many``): each must agree with the one-at-a-time path it replaces, on valid and
hostile input alike."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.crypto import SIGNATURE_SIZE, labels
from microsync.crypto.batch import PARALLEL_AT, verify_many
from microsync.crypto.keys import VerifyKey
from microsync.errors import BadSignature, MicrosyncError
from microsync.feed import GroupId, Ingested, body_hash, ingest, ingest_many, sign_entry
from microsync.node.parallel import verify_in_threads
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity
from tests.test_feed import GROUP, trusting, write_feed

ALICE = make_identity("alice")
BOB = make_identity("bob")
MALLORY = make_identity("mallory")  # never certified in these stores
ALICE_FEED = write_feed(ALICE, 48)
BOB_FEED = write_feed(BOB, 8)
MALLORY_FEED = write_feed(MALLORY, 2)

Item = tuple[bytes, bytes | None]


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at % len(out)] ^= 0x01
    return bytes(out)


def _signed(kind: int, n: int) -> tuple[bytes, bytes, bytes]:
    """A (key, message, signature) triple: valid, or broken in one of several ways."""
    entry = ALICE_FEED[n % len(ALICE_FEED)][0]
    key, message, signature = bytes(ALICE.device_id), entry.header_bytes, entry.signature
    if kind == 1:
        signature = _flip(signature, n)
    elif kind == 2:
        message = _flip(message, n)
    elif kind == 3:
        key = bytes(BOB.device_id)
    elif kind == 4:
        signature = signature[: n % SIGNATURE_SIZE]
    elif kind == 5:
        signature = BOB.device_key.sign(labels.INVITE_PAKE_HOST, message)  # another purpose
    return key, message, signature


def _one_by_one(items: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    out = []
    for key, message, signature in items:
        try:
            VerifyKey(key).verify(labels.ENTRY_SIGNATURE, message, signature)
        except BadSignature:
            out.append(False)
        else:
            out.append(True)
    return out


@settings(max_examples=40, deadline=None)
@given(
    cases=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), max_size=3 * PARALLEL_AT),
    workers=st.sampled_from([None, 1, 3]),
)
def test_verify_many_agrees_with_verify_one_at_a_time(
    cases: list[tuple[int, int]], workers: int | None
) -> None:
    items = [_signed(kind, n) for kind, n in cases]
    expected = _one_by_one(items)
    assert verify_many(labels.ENTRY_SIGNATURE, items) == expected
    threaded = verify_in_threads(labels.ENTRY_SIGNATURE, items, workers=workers or 2)
    assert list(threaded) == expected


def test_verify_many_refuses_a_key_of_the_wrong_size_as_verify_does() -> None:
    key, message, signature = _signed(0, 0)
    with pytest.raises(ValueError):
        VerifyKey(key[:31])
    with pytest.raises(ValueError):
        verify_many(labels.ENTRY_SIGNATURE, [(key, message, signature), (key[:31], message, b"")])
    with pytest.raises(ValueError):
        short = [_signed(0, n) for n in range(2 * PARALLEL_AT)] + [(key[:31], message, b"")]
        verify_in_threads(labels.ENTRY_SIGNATURE, short, workers=2)


def test_a_failure_in_a_helper_thread_reaches_the_caller() -> None:
    good = [_signed(0, n) for n in range(2 * PARALLEL_AT)]
    broken = (good[-1][0], "not bytes", good[-1][2])  # fails in the last share's thread
    answers = verify_in_threads(labels.ENTRY_SIGNATURE, [*good, broken], workers=2)  # type: ignore[list-item]
    assert answers[0] is True  # the chunks without it answer
    with pytest.raises(TypeError):
        list(answers)  # the reader of an answer in its chunk hears of it
    with pytest.raises(TypeError):
        answers[-1]


# --- the feed layer's batch path against one ingest per item ------------------------------


def _forked(n: int) -> Item:
    """A validly signed second entry at Alice's seq ``n + 1``."""
    entry, body = ALICE_FEED[n % len(ALICE_FEED)]
    other = body + b" (equivocation)"
    header = dataclasses.replace(
        entry.header, body_hash=body_hash(other), body_len=len(other), hlc=10**6 + n
    )
    return sign_entry(ALICE.device_key, header).wire, other


def _item(kind: int, n: int) -> Item:
    entry, body = ALICE_FEED[n % len(ALICE_FEED)]
    if kind == 0:
        return entry.wire, body
    if kind == 1:
        return entry.wire, None  # header only
    if kind == 2:
        return _flip(entry.wire, -1 - n % SIGNATURE_SIZE), body  # a broken signature
    if kind == 3:
        return entry.wire, _flip(body, n)  # a body that is not the one signed
    if kind == 4:
        return _forked(n)
    if kind == 5:
        bob, bob_body = BOB_FEED[n % len(BOB_FEED)]
        return bob.wire, bob_body
    if kind == 6:
        mallory, mallory_body = MALLORY_FEED[n % len(MALLORY_FEED)]
        return mallory.wire, mallory_body  # an author no one certified
    return _flip(entry.wire, n), body  # anything broken anywhere


def _outcome(result: Ingested | MicrosyncError) -> tuple[str, tuple[bytes, ...]]:
    if isinstance(result, MicrosyncError):
        return type(result).__name__, ()
    return result.outcome.name, tuple(e.id for e in result.accepted)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 60)), max_size=160),
    in_order=st.booleans(),
    threads=st.booleans(),
)
def test_ingest_many_agrees_with_one_ingest_per_item(
    cases: list[tuple[int, int]], in_order: bool, threads: bool
) -> None:
    # in order: mostly the valid feed from its start, so the batch path checks many at once
    valid = [(0, n) for n in range(len(ALICE_FEED))] if in_order else []
    items = [_item(kind, n) for kind, n in [*valid, *cases]]
    batched, single = trusting(MemoryStore(), ALICE, BOB), trusting(MemoryStore(), ALICE, BOB)
    verify = verify_in_threads if threads else verify_many
    many = ingest_many(batched, GROUP, items, pending_quota=16, verify=verify)
    each: list[Ingested | MicrosyncError] = []
    for wire, body in items:
        try:
            each.append(ingest(single, GROUP, wire, body, pending_quota=16))
        except MicrosyncError as error:
            each.append(error)
    assert [_outcome(r) for r in many] == [_outcome(r) for r in each]
    assert batched.dump() == single.dump()


def test_a_batch_of_a_valid_feed_checks_its_signatures_at_once() -> None:
    """The batch path runs (more than PARALLEL_AT signatures) and refuses a forgery in it."""
    store = trusting(MemoryStore(), ALICE)
    items: list[Item] = [(e.wire, b) for e, b in ALICE_FEED]
    items[PARALLEL_AT] = (_flip(items[PARALLEL_AT][0], -1), items[PARALLEL_AT][1])
    results = ingest_many(store, GroupId(GROUP), items, verify=verify_in_threads)
    assert isinstance(results[PARALLEL_AT], BadSignature)
    assert all(isinstance(r, Ingested) for r in results[:PARALLEL_AT])
    # what follows the forgery waits behind the gap it left, as one at a time
    assert store.feed_status(GROUP, ALICE.device_id).head_seq == PARALLEL_AT
