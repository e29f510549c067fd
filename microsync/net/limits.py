"""Connection quotas: how many connections a listener holds, in total and per remote address,
and how it backs off (and logs) when the process runs out of descriptors.

Theory of operation
-------------------
A listener asks :meth:`ConnectionQuota.admit` for every socket it accepts, before it spends
anything on it (no handshake, no task): over the total or the per-address cap, the socket is
closed at once. An admitted connection holds its slot until :meth:`ConnectionQuota.release`,
when the connection has ended, whatever ended it. Addresses are keyed by :func:`address_key`:
the IP (an IPv6 address by its /64, which one host usually holds whole).

:class:`LogBudget` turns a burst of one kind of failure into one log line per interval with a
count; :class:`AcceptBackoff` spaces out retries of a failing ``accept()`` (``EMFILE``...).
Both take ``now`` as an argument; nothing here does I/O.

Invariants: ``total <= max_connections`` and ``per_address[key] <= max_per_address`` at all
times; a slot is released exactly once.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Response

__all__ = [
    "RESOURCE_ERRNOS",
    "AcceptBackoff",
    "ConnectionQuota",
    "LogBudget",
    "Refusal",
    "ServeLimits",
    "address_key",
    "descriptor_room",
]

RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""``accept()`` failures that mean "out of descriptors or memory": retry later, not now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeLimits:
    """What a device's listener admits (``Device.start(limits=...)``, ``microsync serve``).

    Time before a connection can prove anything is bounded twice: ``handshake_timeout`` for
    the Noise handshake, then ``SyncOptions.match_timeout_ms`` for the session to match a
    group (pings do not extend it) or ``pairing_timeout`` for an invite's pairing.
    """

    max_connections: int = 256
    """Inbound connections at once (handshaking or syncing). Also capped at start to half the
    descriptors the process has left (:func:`descriptor_room`)."""
    max_per_address: int = 16
    """Inbound connections at once from one IP (one IPv6 /64)."""
    handshake_timeout: float = 10.0
    """Seconds a peer gets to complete the handshake."""
    pairing_timeout: float = 30.0
    """Seconds a peer that handshook to redeem an invite gets to complete the pairing (a
    stranger without the invite's secret fails sooner)."""
    accept_backoff_start: float = 0.05
    accept_backoff_max: float = 2.0
    """When ``accept()`` fails (out of descriptors), wait this long before the next try,
    doubling from start to max; reset by the next success."""
    log_interval: float = 60.0
    """At most one log line per interval for each kind of refusal or accept failure."""

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_address < 1:
            raise ValueError("connection caps must be at least 1")
        if min(self.handshake_timeout, self.pairing_timeout, self.log_interval) <= 0:
            raise ValueError("timeouts and intervals must be positive")
        if not 0 < self.accept_backoff_start <= self.accept_backoff_max:
            raise ValueError("the accept backoff must grow from a positive start")


class Refusal(Enum):
    """Why a connection was not admitted."""

    TOTAL = "too many connections"
    ADDRESS = "too many connections from one address"


def address_key(host: str) -> str:
    """The quota key of a remote ``host``: its IP, an IPv4-mapped IPv6 address as IPv4, any
    other IPv6 address as its /64. A name that is not an IP is its own key."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionQuota:
    """Slots for connections: at most ``total`` at once, ``per_address`` from one key."""

    def __init__(self, *, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self._held: dict[str, int] = {}
        self._count = 0

    @property
    def held(self) -> int:
        """Slots held now."""
        return self._count

    def held_by(self, key: str) -> int:
        return self._held.get(key, 0)

    def admit(self, key: str) -> Refusal | None:
        """Take a slot for ``key`` (``None``), or say why not (nothing is taken)."""
        if self._count >= self.total:
            return Refusal.TOTAL
        if self._held.get(key, 0) >= self.per_address:
            return Refusal.ADDRESS
        self._held[key] = self._held.get(key, 0) + 1
        self._count += 1
        return None

    def release(self, key: str) -> None:
        """Give back a slot that :meth:`admit` gave ``key``."""
        left = self._held[key] - 1
        if left:
            self._held[key] = left
        else:
            del self._held[key]
        self._count -= 1


class LogBudget:
    """Count events; say when to log them: at the first, then at most once per ``interval``
    seconds, with how many happened since the last line."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None
        self._pending = 0

    def count(self, now: float) -> int | None:
        """Note one event; the number to report if a line is due now, else ``None``."""
        self._pending += 1
        if self._last is not None and now - self._last < self._interval:
            return None
        self._last, pending, self._pending = now, self._pending, 0
        return pending

    def flush(self) -> int:
        """Events noted but not reported yet (and forget them)."""
        pending, self._pending = self._pending, 0
        return pending


class AcceptBackoff:
    """The delay before the next ``accept()`` after a failure: doubling, capped, and reset by
    a success."""

    def __init__(self, start: float, maximum: float) -> None:
        self._start, self._max = start, maximum
        self._next = start
        self.failing = False

    def failed(self) -> float:
        """One more failure: how long to wait before trying again."""
        delay, self._next = self._next, min(self._next * 2, self._max)
        self.failing = True
        return delay

    def succeeded(self) -> None:
        self._next, self.failing = self._start, False


def descriptor_room(reserve: int = 32) -> int | None:
    """File descriptors this process may still open (soft limit minus those open now minus a
    reserve), or ``None`` where that cannot be known."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - used - reserve)


def peer_address(connection: ServerConnection) -> str:
    """The quota key of a WebSocket connection's remote IP (:func:`address_key`)."""
    remote = connection.remote_address
    return address_key(str(remote[0]) if isinstance(remote, tuple) else str(remote))


def refuse_when_full(
    connection: ServerConnection, quota: ConnectionQuota, full: str
) -> Response | None:
    """The HTTP answer refusing a WebSocket opening handshake when ``quota`` is full (503,
    ``full`` as its text) or full for the client's address (429); ``None`` to let it in. The
    relay and the keeper check again once admitted: a rush can pass this together."""
    if quota.held >= quota.total:
        return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{full}\n")
    if quota.held_by(peer_address(connection)) >= quota.per_address:
        return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections\n")
    return None
