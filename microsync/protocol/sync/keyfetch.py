"""Key fetch in one matched group: ask the peer, once each, for the epoch keys the host
misses, and answer the peer's requests a bounded number of times.

A side asks after the peer's ``DONE`` (or equal digests) and after entries that arrive then
(new entries may name epochs it lacks); at most ``max_key_rounds`` requests per group, each of
at most ``limits.max_wanted_keys`` slots never asked before. Every request is answered with
``KEY_RESPONSE`` or ``KEY_REFUSED``; an answer nobody asked for closes the session. The
session is not ``synced`` while an answer is outstanding. Key messages never move the group's
phase: they are legal in every phase after the frontiers (:data:`KEY_FETCH`).
"""

from __future__ import annotations

from typing import Any, Final

from microsync.errors import DecodeError, DecryptionError, RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.protocol.messages import KeyRefused, KeyRequest, KeyResponse, MsgType
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.reconcile import STREAMING, GroupPhase
from microsync.protocol.sync.table import Row

__all__ = ["KEY_FETCH", "KeyFetch"]


class KeyFetch:
    """One group's key requests, both ways."""

    def __init__(self, link: Link, group: GroupId) -> None:
        self._link, self.group = link, group
        self.requested: set[tuple[int, bytes]] = set()
        self.rounds = 0
        self.awaiting = 0  # our requests not answered yet
        self.answered = 0  # the peer's requests

    def request(self) -> None:
        """Ask for the slots the host misses that were not asked before (within the rounds)."""
        options = self._link.options
        if self.rounds >= options.max_key_rounds:
            return
        missing = self._link.host.missing_keys(self.group)
        wanted = [s for s in missing if s not in self.requested][: options.limits.max_wanted_keys]
        if wanted:
            self.requested.update(wanted)
            self.rounds += 1
            self.awaiting += 1
            self._link.send(KeyRequest(group=self.group, wanted=tuple(wanted)))

    def on_key_request(self, m: KeyRequest) -> None:
        link = self._link
        self.answered += 1
        answer = None
        if self.answered <= link.options.max_key_rounds:  # each answer costs key wraps
            answer = link.host.answer_key_request(m.group, link.peer, m.wanted)
        if answer is None or len(answer) > link.options.limits.max_key_response:
            link.send(KeyRefused(group=m.group))
        else:
            link.send(KeyResponse(group=m.group, response=answer))

    def on_key_response(self, m: KeyResponse) -> None:
        self._take_answer()
        try:
            gained = self._link.host.accept_key_response(m.group, self._link.peer, m.response)
        except (DecodeError, DecryptionError):
            raise RemoteProtocolError("a key response that does not open") from None
        self._link.stats.keys_gained += gained
        if gained:
            self.request()

    def on_key_refused(self, m: KeyRefused) -> None:
        self._take_answer()
        self._link.stats.key_refusals += 1

    def _take_answer(self) -> None:
        if not self.awaiting:
            raise RemoteProtocolError("a key answer nobody asked for")
        self.awaiting -= 1


KEY_FETCH: Final[dict[tuple[GroupPhase, MsgType], Row[KeyFetch, Any, GroupPhase]]] = {
    **{(p, MsgType.KEY_REQUEST): Row(KeyFetch.on_key_request) for p in STREAMING},
    **{(p, MsgType.KEY_RESPONSE): Row(KeyFetch.on_key_response) for p in STREAMING},
    **{(p, MsgType.KEY_REFUSED): Row(KeyFetch.on_key_refused) for p in STREAMING},
}
"""Key fetch: legal in every phase after the frontiers; the phase stays."""
