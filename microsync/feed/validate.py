"""Validation rules as small pure functions, one error per broken rule.

Order of checks in :func:`microsync.feed.ingest.ingest` (cheap and local first, the signature
last so junk costs little):

1. ``parse_entry``: size (``Oversize``), encoding (``DecodeError``), version (``UnknownVersion``)
2. :func:`check_group` (``WrongGroup``), :func:`check_body` (``Oversize``, ``BodyMismatch``)
3. :func:`place`: where the entry goes given the feed's status (``PrevMismatch``,
   ``ForkedFeed``), or that it is a duplicate
4. :func:`check_author` (``AuthorNotCertified``, ``AuthorRevoked``)
5. the Ed25519 signature (``BadSignature``), unless the entry is already authenticated by the
   hash chain: its id is the ``prev`` of a verified later entry.
"""

from __future__ import annotations

import enum

from microsync.errors import (
    AuthorNotCertified,
    AuthorRevoked,
    BodyMismatch,
    ForkedFeed,
    Oversize,
    PrevMismatch,
    WrongGroup,
)
from microsync.feed.entry import MAX_BODY_SIZE, EntryId, GroupId, Header, body_hash
from microsync.feed.store import AuthorStatus, FeedStatus

__all__ = ["Placement", "check_author", "check_body", "check_group", "check_prev", "place"]


class Placement(enum.Enum):
    """Where a (not yet authenticated) entry belongs."""

    APPEND = "append"  # the next entry of the feed
    DUPLICATE = "duplicate"  # already stored: nothing to do
    PENDING = "pending"  # ahead of a gap: wait for the entries before it
    FORK = "fork"  # a different entry at a seq the feed already has


def check_group(header: Header, group: GroupId) -> None:
    if header.group != group:
        raise WrongGroup("entry belongs to another group")


def check_body(header: Header, body: bytes) -> None:
    if len(body) > MAX_BODY_SIZE:
        raise Oversize(f"body is {len(body)} bytes, over {MAX_BODY_SIZE}")
    if len(body) != header.body_len or body_hash(body) != header.body_hash:
        raise BodyMismatch("body does not match the signed header")


def check_author(status: AuthorStatus) -> None:
    if status is AuthorStatus.UNKNOWN:
        raise AuthorNotCertified("no certificate for the signing device")
    if status is AuthorStatus.REVOKED:
        raise AuthorRevoked("the signing device was revoked")


def check_prev(header: Header) -> None:
    if (header.prev is None) != (header.seq == 1):
        raise PrevMismatch("prev must be empty exactly for the first entry")


def place(
    header: Header, entry_id: EntryId, feed: FeedStatus, id_at_seq: EntryId | None
) -> Placement:
    """Decide where an entry goes. ``id_at_seq``: the stored id at ``header.seq``, if any."""
    check_prev(header)
    if header.seq <= feed.head_seq:
        return Placement.DUPLICATE if id_at_seq == entry_id else Placement.FORK
    if feed.forked_at is not None and header.seq >= feed.forked_at:
        raise ForkedFeed("the device forked this feed; nothing after the fork is accepted")
    if header.seq == feed.head_seq + 1:
        if header.prev != feed.head_id:
            raise PrevMismatch("prev does not name the feed's head")
        return Placement.APPEND
    return Placement.PENDING
