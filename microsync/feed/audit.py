"""Re-check a stored feed from its first entry: the chain, every signature, every body."""

from __future__ import annotations

from microsync.errors import PrevMismatch, SequenceGap, WrongGroup
from microsync.feed.entry import GroupId
from microsync.feed.store import FeedStore
from microsync.feed.validate import check_body
from microsync.identity import DeviceId

__all__ = ["audit_feed"]


def audit_feed(store: FeedStore, group: GroupId, device: DeviceId) -> int:
    """Verify the whole stored feed and return its length.

    Raises the :class:`~microsync.errors.VerificationError` of the first broken rule: a gap, a
    ``prev`` that does not chain, a bad signature, a body (where present) that does not match,
    or a head that is not the last entry.
    """
    expected_seq, prev = 1, None
    for stored in store.entries(group, device):
        header = stored.entry.header
        if header.group != group or header.device != device:
            raise WrongGroup("entry stored under another feed")
        if header.seq != expected_seq:
            raise SequenceGap(f"expected seq {expected_seq}, found {header.seq}")
        if header.prev != prev:
            raise PrevMismatch(f"entry {header.seq} does not chain onto {header.seq - 1}")
        stored.entry.verify_signature()
        if stored.body is not None:
            check_body(header, stored.body)
        expected_seq, prev = expected_seq + 1, stored.entry.id
    status = store.feed_status(group, device)
    if status.head_seq != expected_seq - 1 or status.head_id != prev:
        raise SequenceGap("the feed's head is not its last entry")
    return expected_seq - 1
