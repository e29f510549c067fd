"""Accepting entries into a store (``ingest``) and writing our own (``append``).

Theory of operation
-------------------
:func:`ingest` validates one entry against the store with the rules of
:mod:`microsync.feed.validate` and writes the result in one transaction:

* ``APPEND``: the entry becomes the feed's head; pending entries that now chain on are promoted
  in the same transaction (a pending entry whose ``prev`` does not chain is dropped).
* ``PENDING``: a verified entry ahead of a gap waits in the pending buffer (at most
  ``pending_quota`` per feed; with a quota of 0 a gap is a ``SequenceGap`` error).
* ``DUPLICATE``: nothing changes (replays are idempotent).
* ``FORK``: a second validly signed entry at a ``seq`` already taken (in the feed or in the
  pending buffer). Both wire forms are kept as :class:`ForkEvidence`, the feed is marked forked
  at that ``seq`` and pending entries at or after it are dropped; later entries at or after the
  fork point raise ``ForkedFeed``.

Forks are also learnt without a second full entry: :func:`accept_fork_evidence` keeps a pair of
signed headers a peer passed on (both verified: one device, one ``seq``, two ids), and
:func:`accept_conflict` compares a peer's run of its own headers with ours, from a position
where the two views disagree, and keeps the lowest pair that differs. Either way only a
*lower* fork point than the one already known is written, so a peer cannot grow the evidence
kept for a feed beyond one pair per position it lowers.

Any error leaves the store exactly as it was: checks run before the first write, and a
failure during writing rolls the transaction back.

Newest-first sync: a pending entry was signature-checked when it arrived, so when an entry's
id equals the ``prev`` of the pending entry right after it, the hash chain already
authenticates it and its signature is not checked again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

from microsync.crypto import SigningKey
from microsync.crypto.batch import BatchVerify, verify_many
from microsync.errors import (
    AuthorNotCertified,
    BadForkEvidence,
    BadSignature,
    DecodeError,
    ForkedFeed,
    MicrosyncError,
    Oversize,
    PendingQuotaExceeded,
    SequenceGap,
    VerificationError,
)
from microsync.feed.batch import PlainAppends, verify_ahead
from microsync.feed.entry import (
    MAX_BODY_SIZE,
    Entry,
    EntryId,
    GroupId,
    Header,
    body_hash,
    parse_entry,
    sign_entry,
)
from microsync.feed.store import AuthorStatus, FeedStatus, FeedStore, ForkEvidence
from microsync.feed.validate import (
    Placement,
    check_author,
    check_body,
    check_group,
    check_prev,
    place,
)
from microsync.identity import DeviceId

__all__ = [
    "DEFAULT_PENDING_QUOTA",
    "Conflicted",
    "Ingested",
    "Outcome",
    "accept_conflict",
    "accept_fork_evidence",
    "append",
    "ingest",
    "ingest_many",
]

DEFAULT_PENDING_QUOTA = 4096


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    PENDING = "pending"
    DUPLICATE = "duplicate"
    FORK = "fork"
    HELD = "held"  # GroupReplica only: verified, not stored, waits for its device's admission


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingested:
    """What :func:`ingest` did. ``accepted`` lists every entry that joined a feed, in order:
    the entry itself and any pending entries it unblocked."""

    outcome: Outcome
    entry: Entry
    accepted: tuple[Entry, ...] = ()


def ingest(
    store: FeedStore,
    group: GroupId,
    wire: bytes,
    body: bytes | None,
    *,
    pending_quota: int = DEFAULT_PENDING_QUOTA,
) -> Ingested:
    """Validate ``wire`` (and ``body``, when given) and store the outcome atomically."""
    with store.transaction():
        return _ingest(store, group, wire, body, _Quota(pending_quota, _Room(None)))


def ingest_many(
    store: FeedStore,
    group: GroupId,
    items: Iterable[tuple[bytes, bytes | None]],
    *,
    pending_quota: int = DEFAULT_PENDING_QUOTA,
    group_pending_room: int | Callable[[], int] | None = None,
    verify: BatchVerify = verify_many,
    verified: Container[EntryId] = frozenset(),
) -> list[Ingested | MicrosyncError]:
    """Ingest a batch in ONE transaction (the unit of durability for sync).

    ``pending_quota`` bounds the entries waiting ahead of a gap in one feed;
    ``group_pending_room``, when given, how many more may wait in the whole group (the caller
    knows the group's feeds; a function is called only if an entry is to wait): past either,
    ``PendingQuotaExceeded``. ``verified``: entries whose signature the caller checked already
    (the same id is the same signed bytes), not checked again.
    A rejected item leaves no trace and does not stop the batch: its error is returned in its
    place. A storage failure rolls back the whole batch and is raised. ``verify`` checks the
    batch's signatures at once (``feed.batch.verify_ahead``; a device passes one that uses
    every core). Plain appends are stored with one statement (``feed.batch.PlainAppends``).
    """
    results: list[Ingested | MicrosyncError] = []
    room = _Room(group_pending_room)
    with store.transaction():
        checked = [_checked_or_error(group, wire, body) for wire, body in items]
        verdicts = verify_ahead(store, checked, verify, verified)
        appends = PlainAppends(store)
        for item in checked:
            if isinstance(item, MicrosyncError):
                results.append(item)
                continue
            entry, body = item
            verdict = verdicts.get(entry.id)
            if appends.take(entry, body, verdict):
                results.append(Ingested(outcome=Outcome.ACCEPTED, entry=entry, accepted=(entry,)))
                continue
            appends.flush()
            try:
                quota = _Quota(pending_quota, room)
                results.append(_place(store, entry, body, quota, verdict))
            except MicrosyncError as error:
                if not _is_input_error(error):
                    raise
                results.append(error)
        appends.flush()
        verdicts.settle()
    return results


def _checked_or_error(
    group: GroupId, wire: bytes, body: bytes | None
) -> tuple[Entry, bytes | None] | MicrosyncError:
    try:
        return _checked(group, wire, body), body
    except MicrosyncError as error:
        if not _is_input_error(error):
            raise
        return error


@dataclass(slots=True)
class _Room:
    bound: int | Callable[[], int] | None  # None: no group-wide bound; a function: asked once

    @property
    def left(self) -> int | None:
        if callable(self.bound):
            self.bound = self.bound()
        return self.bound

    @left.setter
    def left(self, value: int) -> None:
        self.bound = value


@dataclass(frozen=True, slots=True)
class _Quota:
    per_feed: int
    group: _Room


def _is_input_error(error: MicrosyncError) -> bool:
    return isinstance(error, DecodeError | VerificationError)


def _ingest(
    store: FeedStore, group: GroupId, wire: bytes, body: bytes | None, quota: _Quota
) -> Ingested:
    return _place(store, _checked(group, wire, body), body, quota, None)


def _checked(group: GroupId, wire: bytes, body: bytes | None) -> Entry:
    """Rules 1-2 (``feed.validate``): what needs nothing but the entry and its body."""
    entry = parse_entry(wire)
    check_group(entry.header, group)
    if body is not None:
        check_body(entry.header, body)
    return entry


def _place(
    store: FeedStore, entry: Entry, body: bytes | None, quota: _Quota, verdict: bool | None
) -> Ingested:
    """Rules 3-5 and the write. ``verdict``: the signature's check, if done already."""
    header = entry.header
    feed = store.feed_status(header.group, header.device)
    stored = (
        store.entry_at(header.group, header.device, header.seq)
        if header.seq <= feed.head_seq
        else None
    )
    placement = place(header, entry.id, feed, None if stored is None else stored.entry.id)
    if placement is Placement.DUPLICATE:
        return Ingested(outcome=Outcome.DUPLICATE, entry=entry)
    _authenticate(store, entry, feed, verdict)
    if placement is Placement.FORK:
        assert stored is not None
        return _fork(store, entry, stored.entry.wire)
    if placement is Placement.PENDING:
        return _hold(store, entry, body, feed, quota)
    store.insert_entry(entry, body)
    promoted = _promote(store, entry) if feed.pending else []
    return Ingested(outcome=Outcome.ACCEPTED, entry=entry, accepted=(entry, *promoted))


def _authenticate(store: FeedStore, entry: Entry, feed: FeedStatus, verdict: bool | None) -> None:
    check_author(store.author_status(entry.header.device))
    if feed.pending and _chain_authenticated(store, entry):
        return
    if verdict is None:
        entry.verify_signature()
    elif not verdict:
        raise BadSignature("signature does not verify")


def _chain_authenticated(store: FeedStore, entry: Entry) -> bool:
    h = entry.header
    successors = store.pending_at(h.group, h.device, h.seq + 1)
    return any(s.entry.header.prev == entry.id for s in successors)


def _hold(
    store: FeedStore, entry: Entry, body: bytes | None, feed: FeedStatus, quota: _Quota
) -> Ingested:
    h = entry.header
    waiting = store.pending_at(h.group, h.device, h.seq)
    if any(w.entry.id == entry.id for w in waiting):
        return Ingested(outcome=Outcome.DUPLICATE, entry=entry)
    if waiting:
        return _fork(store, entry, waiting[0].entry.wire)
    if quota.per_feed == 0:
        raise SequenceGap(f"entry {h.seq} arrived before entry {feed.head_seq + 1}")
    if quota.group.left is not None and quota.group.left <= 0:
        raise PendingQuotaExceeded("the group's entries waiting ahead of gaps are at the limit")
    if feed.pending >= quota.per_feed:
        raise PendingQuotaExceeded(f"{feed.pending} entries already wait for this feed")
    store.insert_pending(entry, body)
    if quota.group.left is not None:
        quota.group.left -= 1
    return Ingested(outcome=Outcome.PENDING, entry=entry)


def _fork(store: FeedStore, entry: Entry, first: bytes) -> Ingested:
    h = entry.header
    store.record_fork(
        ForkEvidence(group=h.group, device=h.device, seq=h.seq, first=first, second=entry.wire)
    )
    store.delete_pending(h.group, h.device, h.seq, 2**63 - 1)
    return Ingested(outcome=Outcome.FORK, entry=entry)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflicted:
    """What :func:`accept_conflict` found: the feed differs from ours at ``seq`` (the fork
    point as far as this run shows); ``earlier``: it differs below the run too (the peer's
    entry at ``seq`` names another ``prev`` than ours), so the fork is further back."""

    device: DeviceId
    seq: int
    earlier: bool


def accept_fork_evidence(store: FeedStore, group: GroupId, first: bytes, second: bytes) -> bool:
    """Verify two signed headers as proof that their device forked its feed of ``group`` and
    keep them; ``True`` when they lowered (or set) the feed's fork point here. Raises
    ``DecodeError`` / ``VerificationError`` (``BadForkEvidence``, ``BadSignature``...) for
    anything that is not such a proof, ``AuthorNotCertified`` for a device this store has no
    certificate of; nothing changes then."""
    a, b = parse_entry(first), parse_entry(second)
    ha, hb = a.header, b.header
    check_group(ha, group)
    check_group(hb, group)
    if ha.device != hb.device or ha.seq != hb.seq or a.id == b.id:
        raise BadForkEvidence("not two entries of one device at one position")
    check_prev(ha)
    check_prev(hb)
    if store.author_status(ha.device) is AuthorStatus.UNKNOWN:  # a revoked one may fork too
        raise AuthorNotCertified("no certificate for the signing device")
    if not _lowers(store, group, ha.device, ha.seq):
        return False  # known as far down already: not even worth a signature check
    a.verify_signature()
    b.verify_signature()
    with store.transaction():
        _fork(store, b, first)
    return True


def accept_conflict(store: FeedStore, group: GroupId, wires: Sequence[bytes]) -> Conflicted | None:
    """A peer's own entries of one feed (headers), from ``seq`` going back one by one: keep
    the lowest that differs from ours as fork evidence (its signature verified) and say where
    it is. ``None`` when none differs from what is stored here, the fork is known already at
    or below it, or the author is unknown here. Raises ``DecodeError`` /
    ``VerificationError`` when the run is not one signed, chained run of one feed."""
    run = [parse_entry(w) for w in wires]
    _check_run(run, group)
    device = run[0].header.device
    found: tuple[Entry, bytes] | None = None
    for theirs in run:  # from the highest: the first equal one means all below are equal
        stored = store.entry_at(group, device, theirs.header.seq)
        if stored is not None and stored.entry.id == theirs.id:
            break
        if stored is not None:
            found = (theirs, stored.entry.wire)
    if found is None or store.author_status(device) is AuthorStatus.UNKNOWN:
        return None
    theirs, ours = found
    seq = theirs.header.seq
    if not _lowers(store, group, device, seq):
        return None
    theirs.verify_signature()
    with store.transaction():
        _fork(store, theirs, ours)
    below = store.entry_at(group, device, seq - 1) if seq > 1 else None
    earlier = below is not None and theirs is run[-1] and theirs.header.prev != below.entry.id
    return Conflicted(device=device, seq=seq, earlier=earlier)


def _check_run(run: Sequence[Entry], group: GroupId) -> None:
    top = run[0].header
    for i, entry in enumerate(run):
        h = entry.header
        check_group(h, group)
        check_prev(h)
        if h.device != top.device or h.seq != top.seq - i:
            raise BadForkEvidence("a conflict must be one feed, going back one entry at a time")
        if i and run[i - 1].header.prev != entry.id:
            raise BadForkEvidence("a conflict's entries must chain")


def _lowers(store: FeedStore, group: GroupId, device: DeviceId, seq: int) -> bool:
    forked_at = store.feed_status(group, device).forked_at
    return forked_at is None or seq < forked_at


def _promote(store: FeedStore, last: Entry) -> list[Entry]:
    """Move pending entries that now chain onto ``last`` into the feed."""
    promoted: list[Entry] = []
    h = last.header
    while store.feed_status(h.group, h.device).pending:
        waiting = store.pending_at(h.group, h.device, h.seq + 1)
        if not waiting:
            break
        store.delete_pending(h.group, h.device, h.seq + 1, h.seq + 1)
        follower = next((w for w in waiting if w.entry.header.prev == last.id), None)
        if follower is None:
            break
        store.insert_entry(follower.entry, follower.body)
        promoted.append(follower.entry)
        last, h = follower.entry, follower.entry.header
    return promoted


def append(
    store: FeedStore,
    key: SigningKey,
    *,
    group: GroupId,
    type: int,
    body: bytes,
    epoch: int,
    hlc: int,
    deps: Sequence[EntryId] = (),
) -> Entry:
    """Sign and store the next entry of this device's feed in ``group``; durable on return."""
    if len(body) > MAX_BODY_SIZE:
        raise Oversize(f"body is {len(body)} bytes, over {MAX_BODY_SIZE}")
    device = DeviceId(bytes(key.public))
    with store.transaction():
        feed = store.feed_status(group, device)
        if feed.forked_at is not None:
            raise ForkedFeed("this device's feed is marked forked; it cannot append")
        header = Header(
            group=group,
            device=device,
            seq=feed.head_seq + 1,
            prev=feed.head_id,
            epoch=epoch,
            type=type,
            hlc=hlc,
            deps=tuple(deps),
            body_hash=body_hash(body),
            body_len=len(body),
        )
        entry = sign_entry(key, header)
        store.insert_entry(entry, body)
    return entry
