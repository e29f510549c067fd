"""The tunables of a sync session (:class:`SyncOptions`) and its counters
(:class:`SessionStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from microsync.feed.entry import MAX_BODY_SIZE, MAX_ENTRY_SIZE
from microsync.identity import DeviceId
from microsync.protocol.messages import LIMITS, SIGNATURE_SIZE, Limits, MsgType

__all__ = ["MAX_ITEM_SIZE", "SessionStats", "SyncOptions"]

MAX_ITEM_SIZE: Final = MAX_ENTRY_SIZE + SIGNATURE_SIZE + MAX_BODY_SIZE
"""The largest entry (wire + body): every batch and every credit window must hold one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOptions:
    """Tunables of one session. ``window_*`` is the credit granted to the peer."""

    newest_first: bool = False
    newest_first_window: int = 1024
    batch_entries: int = 256
    batch_bytes: int = 1024 * 1024
    window_batches: int = 4
    window_bytes: int = 4 * 1024 * 1024
    pad_tags: int = 8
    max_proofs_per_group: int = 8
    max_key_rounds: int = 4
    ephemeral_per_minute: int = 120  # from the peer; more are dropped (and counted)
    max_chunks_outstanding: int = 64  # vault chunk ids asked of the peer, unanswered, per group
    max_conflicts: int = 256  # Conflicts from the peer per group per session (a walk back)
    idle_timeout_ms: int = 90_000
    keepalive_ms: int = 30_000
    match_timeout_ms: int = 10_000
    """Time from :meth:`SyncSession.start` for the session to open (Hello and Match both
    ways); a peer that matches no group by then is closed, whatever it sends meanwhile."""
    limits: Limits = LIMITS

    def __post_init__(self) -> None:
        if not 1 <= self.batch_entries <= self.limits.max_batch_entries:
            raise ValueError("batch_entries must be within the codec limit")
        if not MAX_ITEM_SIZE <= self.batch_bytes <= self.limits.max_batch_bytes:
            raise ValueError("batch_bytes must hold the largest entry and fit the codec limit")
        if self.window_batches < 1 or self.window_bytes < MAX_ITEM_SIZE:
            raise ValueError("the window must admit at least one batch of the largest entry")


@dataclass(slots=True)
class SessionStats:
    """Counters for one session (entries and bytes count entry wire + body bytes)."""

    entries_sent: int = 0
    entries_received: int = 0
    entries_accepted: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    records_sent: int = 0
    records_received: int = 0
    sent: dict[MsgType, int] = field(default_factory=dict)
    received: dict[MsgType, int] = field(default_factory=dict)
    keys_gained: int = 0
    key_refusals: int = 0
    ephemeral_dropped: int = 0
    chunks_sent: int = 0
    chunks_received: int = 0
    chunk_bytes_sent: int = 0
    chunk_bytes_received: int = 0
    forks_learnt: int = 0  # fork points found or lowered here through this session
    # feeds where the peer's whole view (it serves us) ends at one of our entries, but an
    # older one: (peer's seq, ours). A peer that serves a stale or partial view shows here.
    stale: dict[DeviceId, tuple[int, int]] = field(default_factory=dict)
