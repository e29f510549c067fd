"""Feed validation and ingest: every rule, adversarial input, forks, pending, interleavings.

Every rejection test checks that the store's canonical dump is byte-for-byte unchanged.
Each test runs against the memory and the SQLite adapter (the ``store`` fixture).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync import encoding
from microsync.crypto import SIGNATURE_SIZE, SigningKey, labels
from microsync.errors import (
    AuthorNotCertified,
    AuthorRevoked,
    BadSignature,
    BodyMismatch,
    DecodeError,
    ForkedFeed,
    MicrosyncError,
    Oversize,
    PendingQuotaExceeded,
    PrevMismatch,
    SequenceGap,
    UnknownVersion,
    VerificationError,
    WrongGroup,
)
from microsync.feed import (
    MAX_BODY_SIZE,
    Entry,
    GroupId,
    Header,
    Outcome,
    append,
    body_hash,
    ingest,
    ingest_many,
    parse_entry,
    sign_entry,
)
from microsync.feed.audit import audit_feed
from microsync.feed.trust import add_certificate, add_revocation
from microsync.identity import DeviceId, DeviceRevocation, LocalIdentity
from microsync.storage.base import Store
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity, open_store

GROUP = GroupId(b"G" * 32)
OTHER_GROUP = GroupId(b"H" * 32)
ALICE = make_identity("alice")
BOB = make_identity("bob")
MALLORY = make_identity("mallory")


def write_feed(
    identity: LocalIdentity, count: int, group: GroupId = GROUP
) -> list[tuple[Entry, bytes]]:
    """``count`` entries of ``identity``'s feed, made on a scratch store."""
    source = MemoryStore()
    add_certificate(source, identity.certificate)
    out = []
    for i in range(count):
        body = f"entry {i} of {identity.name}".encode()
        entry = append(source, identity.device_key, group=group, type=1, body=body, epoch=0, hlc=i)
        out.append((entry, body))
    return out


def trusting(store: Store, *identities: LocalIdentity) -> Store:
    for identity in identities:
        add_certificate(store, identity.certificate)
    return store


def forge(
    key: SigningKey, entry: Entry, body: bytes | None = None, **changes: object
) -> tuple[bytes, bytes | None]:
    """Re-sign ``entry``'s header with ``changes`` applied (a validly signed variant)."""
    header = dataclasses.replace(entry.header, **changes)  # type: ignore[arg-type]
    if body is not None:
        header = dataclasses.replace(header, body_hash=body_hash(body), body_len=len(body))
    return sign_entry(key, header).wire, body


def raw_wire(fields: list[object] | bytes, key: SigningKey = ALICE.device_key) -> bytes:
    """Sign arbitrary header bytes (or the canonical encoding of ``fields``)."""
    header_bytes = fields if isinstance(fields, bytes) else encoding.encode(fields)  # type: ignore[arg-type]
    return header_bytes + key.sign(labels.ENTRY_SIGNATURE, header_bytes)


def assert_rejected(
    store: Store, error: type[MicrosyncError], wire: bytes, body: bytes | None
) -> None:
    before = store.dump()
    with pytest.raises(error):
        ingest(store, GROUP, wire, body)
    assert store.dump() == before


FEED = write_feed(ALICE, 4)


# --- happy paths -------------------------------------------------------------------------


def test_in_order_ingest_rebuilds_the_feed(store: Store) -> None:
    trusting(store, ALICE)
    for entry, body in FEED:
        result = ingest(store, GROUP, entry.wire, body)
        assert result.outcome is Outcome.ACCEPTED and result.accepted == (entry,)
    assert audit_feed(store, GROUP, ALICE.device_id) == len(FEED)
    assert [s.entry.id for s in store.entries(GROUP, ALICE.device_id)] == [e.id for e, _ in FEED]


def test_replay_is_idempotent(store: Store) -> None:
    trusting(store, ALICE)
    for entry, body in FEED:
        ingest(store, GROUP, entry.wire, body)
    before = store.dump()
    for entry, body in FEED:
        assert ingest(store, GROUP, entry.wire, body).outcome is Outcome.DUPLICATE
    assert store.dump() == before


def test_header_without_body_is_accepted_and_body_can_be_purged(store: Store) -> None:
    trusting(store, ALICE)
    (first, _), (second, body) = FEED[:2]
    ingest(store, GROUP, first.wire, None)
    ingest(store, GROUP, second.wire, body)
    store.delete_body(second.id)
    assert store.entry_at(GROUP, ALICE.device_id, 2) == dataclasses.replace(
        store.entry_at(GROUP, ALICE.device_id, 2),
        body=None,  # type: ignore[arg-type]
    )
    assert audit_feed(store, GROUP, ALICE.device_id) == 2  # chain verifies without bodies


def test_newest_first_delivery_promotes_the_whole_chain(store: Store) -> None:
    trusting(store, ALICE)
    for entry, body in reversed(FEED[1:]):
        assert ingest(store, GROUP, entry.wire, body).outcome is Outcome.PENDING
    assert store.feed_status(GROUP, ALICE.device_id).head_seq == 0
    result = ingest(store, GROUP, FEED[0][0].wire, FEED[0][1])
    assert [e.id for e in result.accepted] == [e.id for e, _ in FEED]
    assert store.feed_status(GROUP, ALICE.device_id).pending == 0
    assert audit_feed(store, GROUP, ALICE.device_id) == len(FEED)


def test_chain_authenticates_older_entries_without_their_signature(store: Store) -> None:
    """An entry whose id a verified successor names needs no signature check of its own.
    (A corrupted signature changes the id, so it can't ride on the chain.)"""
    trusting(store, ALICE)
    ingest(store, GROUP, FEED[2][0].wire, FEED[2][1])
    ingest(store, GROUP, FEED[1][0].wire, FEED[1][1])  # chained to 3
    bad = bytearray(FEED[0][0].wire)
    bad[-1] ^= 1
    assert_rejected(store, BadSignature, bytes(bad), FEED[0][1])


def test_pending_entry_that_does_not_chain_is_dropped_on_promotion(store: Store) -> None:
    trusting(store, ALICE)
    ingest(store, GROUP, FEED[0][0].wire, FEED[0][1])
    stray, stray_body = forge(ALICE.device_key, FEED[2][0], prev=FEED[0][0].id)  # seq 3, bad prev
    assert ingest(store, GROUP, stray, stray_body).outcome is Outcome.PENDING
    result = ingest(store, GROUP, FEED[1][0].wire, FEED[1][1])
    assert result.accepted == (FEED[1][0],)  # the stray did not ride along
    status = store.feed_status(GROUP, ALICE.device_id)
    assert (status.head_seq, status.pending, status.forked_at) == (2, 0, None)
    assert ingest(store, GROUP, FEED[2][0].wire, FEED[2][1]).outcome is Outcome.ACCEPTED
    assert audit_feed(store, GROUP, ALICE.device_id) == 3


def test_ingest_many_keeps_good_items_and_reports_bad_ones(store: Store) -> None:
    trusting(store, ALICE)
    tampered = bytearray(FEED[1][0].wire)
    tampered[-3] ^= 0x10
    results = ingest_many(
        store,
        GROUP,
        [(FEED[0][0].wire, FEED[0][1]), (bytes(tampered), None), (FEED[1][0].wire, None)],
    )
    assert isinstance(results[1], BadSignature)
    assert [r.outcome for r in results if not isinstance(r, MicrosyncError)] == [
        Outcome.ACCEPTED
    ] * 2
    assert store.feed_status(GROUP, ALICE.device_id).head_seq == 2


# --- adversarial: every rule, store unchanged ----------------------------------------------


def prepared(store: Store, count: int = 2) -> Store:
    trusting(store, ALICE, BOB)
    for entry, body in FEED[:count]:
        ingest(store, GROUP, entry.wire, body)
    return store


def test_forged_signature(store: Store) -> None:
    prepared(store)
    entry, body = FEED[2]
    # Mallory signs Alice's next header with her own key.
    wire = entry.header_bytes + MALLORY.device_key.sign(labels.ENTRY_SIGNATURE, entry.header_bytes)
    assert_rejected(store, BadSignature, wire, body)


def test_signature_for_another_purpose_is_rejected(store: Store) -> None:
    prepared(store)
    entry, body = FEED[2]
    wire = entry.header_bytes + ALICE.device_key.sign(labels.DEVICE_CERTIFICATE, entry.header_bytes)
    assert_rejected(store, BadSignature, wire, body)


def test_uncertified_author(store: Store) -> None:
    prepared(store)
    entry, body = write_feed(MALLORY, 1)[0]
    assert_rejected(store, AuthorNotCertified, entry.wire, body)


def test_revoked_author(store: Store) -> None:
    prepared(store)
    assert ALICE.person_key is not None
    add_revocation(store, DeviceRevocation.issue(ALICE.person_key, ALICE.device_id, 5))
    entry, body = FEED[2]
    assert_rejected(store, AuthorRevoked, entry.wire, body)


def test_revocation_by_another_person_is_refused(store: Store) -> None:
    prepared(store)
    assert MALLORY.person_key is not None
    before = store.dump()
    with pytest.raises(VerificationError):
        add_revocation(store, DeviceRevocation.issue(MALLORY.person_key, ALICE.device_id, 5))
    assert store.dump() == before


def test_gap_without_pending_buffer(store: Store) -> None:
    prepared(store, 1)
    entry, body = FEED[3]
    before = store.dump()
    with pytest.raises(SequenceGap):
        ingest(store, GROUP, entry.wire, body, pending_quota=0)
    assert store.dump() == before


def test_gap_waits_in_pending_not_in_feed(store: Store) -> None:
    prepared(store, 1)
    entry, body = FEED[3]
    assert ingest(store, GROUP, entry.wire, body).outcome is Outcome.PENDING
    status = store.feed_status(GROUP, ALICE.device_id)
    assert (status.head_seq, status.pending) == (1, 1)
    assert [s.entry.id for s in store.pending_at(GROUP, ALICE.device_id, 4)] == [entry.id]


def test_pending_quota_is_per_device(store: Store) -> None:
    prepared(store, 1)
    ingest(store, GROUP, FEED[2][0].wire, FEED[2][1], pending_quota=1)
    assert_quota = store.dump()
    with pytest.raises(PendingQuotaExceeded):
        ingest(store, GROUP, FEED[3][0].wire, FEED[3][1], pending_quota=1)
    assert store.dump() == assert_quota
    bob_entry, bob_body = write_feed(BOB, 2)[1]  # Bob's quota is his own
    assert (
        ingest(store, GROUP, bob_entry.wire, bob_body, pending_quota=1).outcome is Outcome.PENDING
    )


def test_prev_mismatch(store: Store) -> None:
    prepared(store)
    wire, _ = forge(ALICE.device_key, FEED[2][0], prev=FEED[0][0].id)
    assert_rejected(store, PrevMismatch, wire, FEED[2][1])


def test_first_entry_with_prev_and_later_entry_without(store: Store) -> None:
    trusting(store, ALICE)
    wire, _ = forge(ALICE.device_key, FEED[0][0], prev=FEED[1][0].id)
    assert_rejected(store, PrevMismatch, wire, FEED[0][1])
    wire, _ = forge(ALICE.device_key, FEED[1][0], prev=None)
    assert_rejected(store, PrevMismatch, wire, FEED[1][1])


def test_wrong_group(store: Store) -> None:
    prepared(store)
    entry, body = write_feed(ALICE, 3, OTHER_GROUP)[2]
    assert_rejected(store, WrongGroup, entry.wire, body)


def test_body_mismatch(store: Store) -> None:
    prepared(store)
    entry, body = FEED[2]
    assert_rejected(store, BodyMismatch, entry.wire, body + b"!")
    assert_rejected(store, BodyMismatch, entry.wire, body[:-1] + b"?")


def test_oversize_body(store: Store) -> None:
    prepared(store)
    big = b"x" * (MAX_BODY_SIZE + 1)
    assert_rejected(store, Oversize, FEED[2][0].wire, big)
    # a header that declares an oversize body is refused whatever body comes with it
    wire, _ = forge(ALICE.device_key, FEED[2][0], body_len=MAX_BODY_SIZE + 1)
    assert_rejected(store, Oversize, wire, None)


def test_oversize_entry(store: Store) -> None:
    prepared(store)
    assert_rejected(store, Oversize, b"\x00" * 10_000, None)


def test_unknown_version(store: Store) -> None:
    prepared(store)
    header = FEED[2][0].header
    fields = [
        2,
        header.group,
        header.device,
        header.seq,
        header.prev,
        0,
        1,
        0,
        [],
        header.body_hash,
        header.body_len,
    ]
    assert_rejected(store, UnknownVersion, raw_wire(fields), FEED[2][1])


def test_fork_is_recorded_with_evidence_and_blocks_the_device(store: Store) -> None:
    prepared(store, 3)
    wire, body = forge(ALICE.device_key, FEED[1][0], FEED[1][1] + b" (other)")
    feed_before = list(store.entries(GROUP, ALICE.device_id))
    result = ingest(store, GROUP, wire, body)
    assert result.outcome is Outcome.FORK
    assert list(store.entries(GROUP, ALICE.device_id)) == feed_before  # nothing replaced
    status = store.feed_status(GROUP, ALICE.device_id)
    assert status.forked_at == 2
    [evidence] = store.fork_evidence(GROUP, ALICE.device_id)
    assert {evidence.first, evidence.second} == {FEED[1][0].wire, wire}
    for proof in (evidence.first, evidence.second):  # both halves verify on their own
        parse_entry(proof).verify_signature()
    assert_rejected(store, ForkedFeed, FEED[3][0].wire, FEED[3][1])
    # the same fork proof again changes nothing
    before = store.dump()
    assert ingest(store, GROUP, wire, body).outcome in (Outcome.FORK, Outcome.DUPLICATE)
    assert store.fork_evidence(GROUP, ALICE.device_id)[0] == evidence
    assert store.feed_status(GROUP, ALICE.device_id).forked_at == 2
    del before


def test_fork_in_pending_buffer(store: Store) -> None:
    prepared(store, 1)
    ingest(store, GROUP, FEED[3][0].wire, FEED[3][1])
    wire, body = forge(ALICE.device_key, FEED[3][0], b"equivocation")
    assert ingest(store, GROUP, wire, body).outcome is Outcome.FORK
    status = store.feed_status(GROUP, ALICE.device_id)
    assert (status.forked_at, status.pending) == (4, 0)


def test_unsigned_fork_is_just_a_bad_signature(store: Store) -> None:
    prepared(store, 3)
    header = dataclasses.replace(FEED[1][0].header, hlc=999)
    wire = header.to_bytes() + b"\x00" * SIGNATURE_SIZE
    assert_rejected(store, BadSignature, wire, None)
    assert store.feed_status(GROUP, ALICE.device_id).forked_at is None


# --- malformed encodings -------------------------------------------------------------------


def _valid_fields() -> list[object]:
    h = FEED[2][0].header
    return [
        1,
        h.group,
        h.device,
        h.seq,
        h.prev,
        h.epoch,
        h.type,
        h.hlc,
        [],
        h.body_hash,
        h.body_len,
    ]


def _swap(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1
    return data.replace(old, new, 1)


MALFORMED: dict[str, Callable[[], bytes]] = {
    # header bytes that are signed correctly but are not canonical / not well-formed
    "non-minimal integer": lambda: raw_wire(
        _swap(encoding.encode(_valid_fields()), b"\x03\x58\x20", b"\x18\x03\x58\x20")
    ),
    "tag": lambda: raw_wire(b"\x8b\xc1" + encoding.encode(_valid_fields())[1:]),
    "indefinite length": lambda: raw_wire(b"\x9f" + encoding.encode(_valid_fields())[1:] + b"\xff"),
    "duplicate map keys": lambda: raw_wire(bytes.fromhex("a2616101616102")),
    "map instead of array": lambda: raw_wire(encoding.encode({"v": 1})),
    "10,000-deep nesting": lambda: (b"\x81" * 3000 + b"\x00") + b"\x00" * SIGNATURE_SIZE,
    "length claims 2**63 bytes": lambda: raw_wire(
        b"\x8b\x01\x5b" + (2**63).to_bytes(8, "big") + b"\x00" * 40
    ),
    "truncated header": lambda: raw_wire(encoding.encode(_valid_fields())[:-5]),
    "too few fields": lambda: raw_wire(encoding.encode(_valid_fields()[:-1])),
    "bool as integer": lambda: raw_wire(
        encoding.encode([1, *_valid_fields()[1:6], True, *_valid_fields()[7:]])
    ),
    "short group id": lambda: raw_wire(encoding.encode([1, b"G" * 31, *_valid_fields()[2:]])),
    "seq zero": lambda: raw_wire(
        encoding.encode([*_valid_fields()[:3], 0, None, *_valid_fields()[5:]])
    ),
    "trailing byte": lambda: raw_wire(encoding.encode(_valid_fields()) + b"\x00"),
    "only a signature": lambda: b"\x00" * SIGNATURE_SIZE,
    "empty": lambda: b"",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_entries_are_decode_errors(store: Store, case: str) -> None:
    prepared(store)
    wire = MALFORMED[case]()
    before = store.dump()
    with pytest.raises((DecodeError, Oversize)):
        ingest(store, GROUP, wire, FEED[2][1])
    assert store.dump() == before


def test_really_deep_nesting_is_bounded(store: Store) -> None:
    """10,000 levels: refused by the size limit before any parsing happens."""
    prepared(store)
    assert_rejected(store, Oversize, b"\x81" * 10_000 + b"\x00" + b"\x00" * SIGNATURE_SIZE, None)
    with pytest.raises(DecodeError):
        Header.from_bytes(b"\x81" * 3000 + b"\x00")


@pytest.mark.parametrize("cut", [1, 10, 65, 100])
def test_truncated_wire(store: Store, cut: int) -> None:
    prepared(store)
    wire = FEED[2][0].wire
    before = store.dump()
    with pytest.raises((DecodeError, VerificationError)):
        ingest(store, GROUP, wire[:-cut], FEED[2][1])
    assert store.dump() == before


# --- properties ----------------------------------------------------------------------------

ENTRY_AND_BODY = FEED[2][0].wire + FEED[2][1]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bit=st.integers(0, len(ENTRY_AND_BODY) * 8 - 1))
def test_every_single_bit_flip_is_rejected(bit: int) -> None:
    store = prepared(MemoryStore())
    flipped = bytearray(ENTRY_AND_BODY)
    flipped[bit // 8] ^= 1 << (bit % 8)
    split = len(FEED[2][0].wire)
    wire, body = bytes(flipped[:split]), bytes(flipped[split:])
    before = store.dump()
    with pytest.raises((DecodeError, VerificationError)):
        ingest(store, GROUP, wire, body)
    assert store.dump() == before


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_get_in(data: bytes) -> None:
    store = prepared(MemoryStore())
    before = store.dump()
    with pytest.raises((DecodeError, VerificationError)):
        ingest(store, GROUP, data, None)
    assert store.dump() == before


AUTHORS = [ALICE, BOB, make_identity("carol")]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_interleavings_always_leave_valid_chains(data: st.DataObject) -> None:
    """Appends on a source interleaved with duplicated, reordered and dropped deliveries to a
    target: after every step each target feed is a valid chain, and after a final full
    delivery the target holds exactly the source's content."""
    source, target = MemoryStore(), MemoryStore()
    trusting(source, *AUTHORS)
    trusting(target, *AUTHORS)
    sent: list[tuple[bytes, bytes]] = []
    steps = data.draw(
        st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 10**6)), max_size=40)
    )
    for is_append, who, pick in steps:
        if is_append or not sent:
            author = AUTHORS[who]
            body = f"{who}:{pick}".encode()
            entry = append(
                source, author.device_key, group=GROUP, type=1, body=body, epoch=0, hlc=pick
            )
            sent.append((entry.wire, body))
        else:
            wire, body = sent[pick % len(sent)]
            ingest(target, GROUP, wire, body)
        for author in AUTHORS:
            audit_feed(target, GROUP, author.device_id)
    for wire, body in sent:
        ingest(target, GROUP, wire, body)
    for author in AUTHORS:
        assert audit_feed(target, GROUP, author.device_id) == audit_feed(
            source, GROUP, author.device_id
        )
        assert target.feed_status(GROUP, author.device_id).pending == 0
    assert target.dump() == source.dump()


def test_memory_and_sqlite_agree_on_an_ingest_run(tmp_path: Path) -> None:
    stores = [open_store("memory", tmp_path / "m"), open_store("sqlite", tmp_path / "s")]
    bob_feed = write_feed(BOB, 3)
    order = [FEED[3], bob_feed[1], FEED[0], FEED[1], bob_feed[0], FEED[2], bob_feed[2], FEED[1]]
    for s in stores:
        trusting(s, ALICE, BOB)
        for entry, body in order:
            ingest(s, GROUP, entry.wire, body)
    assert stores[0].dump() == stores[1].dump()
    for s in stores:
        s.close()


def test_device_id_is_the_signing_key() -> None:
    entry = FEED[0][0]
    assert entry.header.device == DeviceId(bytes(ALICE.device_key.public))
    with pytest.raises(ValueError):
        sign_entry(BOB.device_key, entry.header)
