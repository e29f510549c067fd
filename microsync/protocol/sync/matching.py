"""Group matching: find the groups both sides hold without naming any.

Theory of operation (``docs/sync.md``, "Group matching, and what a non-member learns")
------------------------------------------------------------------------------------
Both sides send ``HELLO`` at once: for every group the host holds, a 16-byte tag
``derive_key(SYNC_GROUP_TAG, proof key, channel_binding || role)`` per offered proof key,
sorted and padded with random tags. Each side recomputes the PEER's tags for every key it holds
(offered or older), so a group matches where one side offered a key the other holds. A side
that matched a group only through an older key confirms it in its ``MATCH``
(``derive_key(..., channel_binding || "c" || role)``), which the other side checks against the
keys it offered. Then both have matched the same groups; each opens them (sends its
``DIGEST``). No group in common: ``BYE``.

Invariants: a non-member sees only pseudorandom tags (a multiple of ``pad_tags``); tags from
another connection or reflected back match nothing; a confirmation that matches no offered key
closes the session.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final

from microsync.crypto import derive_key, labels
from microsync.crypto.random import Rng
from microsync.errors import RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.protocol.messages import TAG_SIZE, Bye, Hello, Match, MsgType
from microsync.protocol.sync.credit import Allowance
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.table import Row

__all__ = ["MATCHING", "SYNC_GROUP_TAG", "Matching", "SessionState", "group_tag"]

SYNC_GROUP_TAG: Final = labels.SYNC_GROUP_TAG


class SessionState(enum.Enum):
    """Where the session stands: matching (``AWAIT_*``), then ``OPEN`` until ``CLOSED``."""

    AWAIT_HELLO = "await-hello"
    AWAIT_MATCH = "await-match"
    OPEN = "open"
    CLOSED = "closed"


def group_tag(key: bytes, channel_binding: bytes, role: bytes) -> bytes:
    """The membership tag for one proof key on one connection, for one role (b"I" or b"R")."""
    return derive_key(SYNC_GROUP_TAG, key, channel_binding + role)[:TAG_SIZE]


class Matching:
    """The matching of one session. ``open_group`` opens a matched group (once each);
    ``opened`` is the session's map of open groups."""

    def __init__(
        self,
        link: Link,
        *,
        channel_binding: bytes,
        initiator: bool,
        open_group: Callable[[GroupId], None],
        opened: Mapping[GroupId, object],
    ) -> None:
        self._link, self._binding = link, channel_binding
        self._role, self._peer_role = (b"I", b"R") if initiator else (b"R", b"I")
        self._open_group, self._opened = open_group, opened
        self._expected: dict[bytes, GroupId] = {}  # the peer's Hello tags for offered keys
        self._behind: dict[bytes, tuple[GroupId, bytes]] = {}  # ... for keys not offered
        self._confirms: dict[bytes, GroupId] = {}  # the peer's Match tags for offered keys

    def hello(self, rng: Rng) -> Hello:
        """Our ``Hello``: a tag per offered proof key, padded with random ones, and the
        credit we grant."""
        options, binding, peer = self._link.options, self._binding, self._peer_role
        tags: set[bytes] = set()
        for proof in self._link.host.sync_groups():
            offered = proof.keys[: options.max_proofs_per_group]
            for key in offered:
                if len(tags) + options.pad_tags >= options.limits.max_tags:
                    break
                tags.add(group_tag(key, binding, self._role))
                self._expected[group_tag(key, binding, peer)] = proof.group
                self._confirms[group_tag(key, binding, b"c" + peer)] = proof.group
            for key in (*proof.keys[len(offered) :], *proof.older):
                self._behind[group_tag(key, binding, peer)] = (proof.group, key)
        step = options.pad_tags
        target = max(step, -(-len(tags) // step) * step)
        while len(tags) < target:  # random tags hide how many groups this device holds
            tags.add(rng(TAG_SIZE))
        left = self._link.window.left
        return Hello(tags=tuple(sorted(tags)), credit_batches=left.batches, credit_bytes=left.bytes)

    def on_hello(self, m: Hello) -> None:
        """Match the peer's tags; confirm the groups it is behind in (it matched none of our
        offered keys there, but offered one we hold), then open every matched group."""
        self._link.credit = Allowance(m.credit_batches, m.credit_bytes)
        matched = {self._expected[t] for t in m.tags if t in self._expected}
        behind = dict(self._behind[t] for t in m.tags if t in self._behind)
        confirms = {
            group_tag(key, self._binding, b"c" + self._role)
            for group, key in behind.items()
            if group not in matched
        }
        self._link.send(Match(confirms=tuple(sorted(confirms))))
        for group in sorted(matched | set(behind)):
            self._open_group(group)

    def on_match(self, m: Match) -> SessionState:
        for tag in m.confirms:
            group = self._confirms.get(tag)
            if group is None:
                raise RemoteProtocolError("a confirmation that matches no offered key")
            if group not in self._opened:
                self._open_group(group)
        if not self._opened:  # nothing in common: say so and go
            self._link.send(Bye())
            return SessionState.CLOSED
        return SessionState.OPEN


_S = SessionState

MATCHING: Final[dict[tuple[SessionState, MsgType], Row[Matching, Any, SessionState]]] = {
    (_S.AWAIT_HELLO, MsgType.HELLO): Row(Matching.on_hello, (_S.AWAIT_MATCH,)),
    (_S.AWAIT_MATCH, MsgType.MATCH): Row(Matching.on_match, (_S.OPEN, _S.CLOSED)),
}
"""Matching: (session state, message type) -> (handler, next states)."""
