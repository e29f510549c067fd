"""A running device's TCP listener: accept, admit within the quota, and hand each admitted
connection to the runtime (one child task of the device's task group per connection).

A failing ``accept()`` (out of descriptors) is retried after a growing delay and logged once
per interval with a count; a refused connection is closed at once and counted likewise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import TYPE_CHECKING

from microsync.net.limits import (
    RESOURCE_ERRNOS,
    AcceptBackoff,
    ConnectionQuota,
    LogBudget,
    Refusal,
    ServeLimits,
    address_key,
    descriptor_room,
)
from microsync.net.stream import TcpStream

if TYPE_CHECKING:
    from microsync.node.runtime import Runtime

__all__ = ["Listener", "listen"]

log = logging.getLogger("microsync.node")


def listen(address: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``address:port`` (``OSError`` if taken)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server((address, port), family=family, backlog=128)
    listener.setblocking(False)
    return listener


def total_cap(limits: ServeLimits) -> int:
    """``limits.max_connections``, lowered to half the descriptors this process has left (the
    other half stays for storage, dials and the relay), so inbound connections alone never
    run the process out of descriptors."""
    room = descriptor_room()
    if room is None or room // 2 >= limits.max_connections:
        return limits.max_connections
    cap = max(1, room // 2)
    log.info("at most %d inbound connections (descriptors left: %d)", cap, room)
    return cap


class Listener:
    """Accepts on ``sock`` for ``runtime`` (see the module docstring); :meth:`close` it."""

    def __init__(self, runtime: Runtime, sock: socket.socket) -> None:
        self.runtime = runtime
        self.sock = sock
        limits = runtime.limits
        self._limits = limits
        self._quota = ConnectionQuota(total=total_cap(limits), per_address=limits.max_per_address)
        self._refused = {reason: LogBudget(limits.log_interval) for reason in Refusal}

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    async def accept_loop(self) -> None:
        """Accept connections until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = AcceptBackoff(self._limits.accept_backoff_start, self._limits.accept_backoff_max)
        failures = LogBudget(self._limits.log_interval)
        while True:
            try:
                sock, address = await loop.sock_accept(self.sock)
            except OSError as exc:
                self._note_accept_failure(exc, failures, loop.time())
                if exc.errno in RESOURCE_ERRNOS:
                    await asyncio.sleep(backoff.failed())
                continue  # else one connection's trouble (reset before we took it)
            if backoff.failing:
                log.warning("accepting connections again (%d more failures)", failures.flush())
            backoff.succeeded()
            self._admit(sock, address)

    def _note_accept_failure(self, exc: OSError, failures: LogBudget, now: float) -> None:
        count = failures.count(now)
        if count is not None:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            log.warning(
                "cannot accept connections: %s (%d failure(s) since the last report)",
                reason,
                count,
            )

    def _admit(self, sock: socket.socket, address: object) -> None:
        """Serve an accepted socket if the quota has room for its address, else close it."""
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        key = address_key(host)
        stopping = self.runtime.stopping
        refusal = Refusal.TOTAL if stopping else self._quota.admit(key)
        if refusal is not None:
            sock.close()
            count = self._refused[refusal].count(asyncio.get_running_loop().time())
            if count is not None and not stopping:
                log.warning("refused %d connection(s): %s", count, refusal.value)
            return
        if self.runtime.spawn(self._serve_socket(sock, key), f"serve {host}") is None:
            self._quota.release(key)  # stopping meanwhile: the socket was never served
            sock.close()

    async def _serve_socket(self, sock: socket.socket, key: str) -> None:
        """One admitted connection, holding its quota slot until it ends."""
        try:
            try:
                reader, writer = await asyncio.open_connection(sock=sock)
            except OSError:
                sock.close()
                return
            await self.runtime.serve(TcpStream(reader, writer))
        finally:
            self._quota.release(key)

    def close(self) -> None:
        self.sock.close()
