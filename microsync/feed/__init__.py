"""Append-only signed feeds: one per (group, device). See ``docs/feeds.md``."""

from microsync.feed.entry import (
    MAX_BODY_SIZE,
    MAX_DEPS,
    MAX_ENTRY_SIZE,
    Entry,
    EntryId,
    GroupId,
    Header,
    body_hash,
    parse_entry,
    sign_entry,
)
from microsync.feed.ingest import (
    DEFAULT_PENDING_QUOTA,
    Ingested,
    Outcome,
    append,
    ingest,
    ingest_many,
)
from microsync.feed.store import AuthorStatus, FeedStatus, FeedStore, ForkEvidence, StoredEntry
from microsync.feed.validate import Placement

__all__ = [
    "DEFAULT_PENDING_QUOTA",
    "MAX_BODY_SIZE",
    "MAX_DEPS",
    "MAX_ENTRY_SIZE",
    "AuthorStatus",
    "Entry",
    "EntryId",
    "FeedStatus",
    "FeedStore",
    "ForkEvidence",
    "GroupId",
    "Header",
    "Ingested",
    "Outcome",
    "Placement",
    "StoredEntry",
    "append",
    "body_hash",
    "ingest",
    "ingest_many",
    "parse_entry",
    "sign_entry",
]
