"""The session's timers as data, and the rate limit on the peer's ephemeral messages.

:class:`Keepalive` keeps when the session started, last received and last sent (ms, as
passed in: the session reads no clock). Until it opens it must open by ``match_timeout_ms``;
a peer silent for ``idle_timeout_ms`` is closed; a session quiet for ``keepalive_ms`` sends a
``PING``. :meth:`Keepalive.due` says which is due at ``now``: one :class:`Due` value.
:func:`session_options` gives a quiet device's sessions a long keepalive.
Ephemeral messages (presence, location) beyond ``ephemeral_per_minute`` in one clock minute
are dropped and counted (:class:`EphemeralInbox`).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

from microsync.protocol.messages import Ephemeral, MsgType
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.options import SyncOptions
from microsync.protocol.sync.reconcile import GroupPhase
from microsync.protocol.sync.table import Row

__all__ = [
    "EPHEMERAL",
    "QUIET_KEEPALIVE_MS",
    "Due",
    "EphemeralInbox",
    "Keepalive",
    "session_options",
]

QUIET_KEEPALIVE_MS: Final = 15 * 60 * 1000
"""How long a quiet (battery-bound) device's session stays silent before it pings."""


def session_options(options: SyncOptions | None, *, quiet: bool) -> SyncOptions | None:
    """The options of a session: ``options`` as given, or for a quiet device the same with a
    long keepalive (and an idle timeout to match, so it never closes a peer for being as quiet
    as it is)."""
    if not quiet:
        return options
    base = options if options is not None else SyncOptions()
    keepalive = max(base.keepalive_ms, QUIET_KEEPALIVE_MS)
    idle = max(base.idle_timeout_ms, 3 * keepalive)
    return dataclasses.replace(base, keepalive_ms=keepalive, idle_timeout_ms=idle)


class Due(enum.Enum):
    """What a timer asks for at some ``now``."""

    NOTHING = "nothing"
    OPEN_TIMEOUT = "open-timeout"  # no group matched in time: close
    IDLE = "idle"  # the peer was silent too long: close
    PING = "ping"  # we were quiet too long: say something


class Keepalive:
    """When the session last heard from the peer and last spoke, and when it must open by."""

    def __init__(self, options: SyncOptions) -> None:
        self._options = options
        self.last_received = self.last_sent = self.open_by = 0

    def start(self, now: int) -> None:
        self.last_received = self.last_sent = now
        self.open_by = now + self._options.match_timeout_ms

    def received(self, now: int) -> None:
        self.last_received = now

    def sent(self, now: int) -> None:
        self.last_sent = now

    def deadline(self, *, opening: bool) -> int:
        """When :meth:`due` may next say something other than ``NOTHING``."""
        idle = self.last_received + self._options.idle_timeout_ms
        deadline = min(idle, self.last_sent + self._options.keepalive_ms)
        return min(deadline, self.open_by) if opening else deadline

    def due(self, now: int, *, opening: bool) -> Due:
        if opening and now >= self.open_by:
            return Due.OPEN_TIMEOUT
        if now >= self.last_received + self._options.idle_timeout_ms:
            return Due.IDLE
        if now >= self.last_sent + self._options.keepalive_ms:
            return Due.PING
        return Due.NOTHING


class EphemeralInbox:
    """The peer's ephemeral messages, for every group of the session: passed to the host
    up to ``ephemeral_per_minute`` per clock minute (of the record's arrival), then dropped."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self.minute = self.count = 0

    def admit(self, now: int) -> bool:
        """Count one message arriving at ``now``: is it within the rate?"""
        minute = now // 60_000
        self.count = self.count + 1 if minute == self.minute else 1
        self.minute = minute
        return self.count <= self._link.options.ephemeral_per_minute

    def on_ephemeral(self, m: Ephemeral) -> None:
        if not self.admit(self._link.now):
            self._link.stats.ephemeral_dropped += 1
            return
        self._link.host.ephemeral(m.group, self._link.peer, m.data)


EPHEMERAL: Final[dict[tuple[GroupPhase, MsgType], Row[EphemeralInbox, Any, GroupPhase]]] = {
    (p, MsgType.EPHEMERAL): Row(EphemeralInbox.on_ephemeral) for p in GroupPhase
}
"""Ephemeral messages: legal in every phase of a matched group; the phase stays."""
