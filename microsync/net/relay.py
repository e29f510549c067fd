"""The blind relay's WebSocket adapter: pairs devices that present the same rendezvous id and
forwards ciphertext.

Theory of operation
-------------------
The rules -- pairing by rendezvous id, caps, timers -- are :class:`RelayBroker`'s
(:mod:`microsync.protocol.relay_broker`, sans-IO); the wire format is
:mod:`microsync.protocol.relay` (its names are re-exported here). This module only moves
messages, with no task per client: every connection is a
:class:`~microsync.net.ws_conn.WsConnection`, which hands each binary message to the broker
(with the loop's clock) from ``data_received``, and the broker's effects are carried out at
once: each :class:`Send` is one frame written to its receiver's transport, so per client
messages leave in the broker's order (DATA never overtakes PAIRED). Back-pressure: while a
receiver's transport buffer is above its high-water mark, its sender is not read
(:meth:`~microsync.net.ws_conn.WsConnection.throttle_by`), so a slow reader slows its sender
and TCP pushes back to it. Each client's broker timer is a loop timer rescheduled when the
broker says; on a refusal the client gets ERROR and a close frame. The opening handshake is
refused with HTTP 503 once ``max_clients`` are connected and with 429 once
``max_clients_per_address`` come from its IP (:class:`~microsync.net.limits.ConnectionQuota`:
the slot is taken in the same step, so a rush cannot pass it together).

Invariants: nothing is written to disk and no payload or id is logged; every buffer is bounded
(per connection one partial message read and the transport's high-water mark written, plus the
messages of one read); a connection's timers end with it, and a bug in handling one client's
message drops that client only (and is logged).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from enum import Enum
from http import HTTPStatus
from typing import Final, assert_never

from websockets.http11 import Request

from microsync.net.limits import ConnectionQuota, Refusal, address_key
from microsync.net.ws_conn import WsConnection, WsSettings
from microsync.net.ws_frames import CloseCode, Payload
from microsync.net.ws_opening import HttpRefusal
from microsync.protocol.relay import (
    BUCKETS,
    MAX_MESSAGE,
    MAX_PAYLOAD,
    RID_SIZE,
    ClientMessage,
    Close,
    Closed,
    Data,
    Error,
    ErrorCode,
    Join,
    Leave,
    Paired,
    RelayMessage,
    bucket_for,
    data_sizes,
    decode,
    encode,
)
from microsync.protocol.relay_broker import (
    ClientId,
    Deadline,
    Disconnect,
    Effect,
    RelayBroker,
    RelayLimits,
    RelayStats,
    Send,
)

__all__ = [
    "BUCKETS",
    "MAX_MESSAGE",
    "MAX_PAYLOAD",
    "RID_SIZE",
    "ClientMessage",
    "Close",
    "Closed",
    "Data",
    "Error",
    "ErrorCode",
    "Flow",
    "Join",
    "Leave",
    "Paired",
    "RelayLimits",
    "RelayMessage",
    "RelayServer",
    "RelayStats",
    "bucket_for",
    "data_sizes",
    "decode",
    "encode",
    "run_relay",
]

log = logging.getLogger(__name__)

DEFAULT_LIMITS: Final = RelayLimits()


class Flow(Enum):
    RECEIVED = "received"
    SENT = "sent"


Tap = Callable[[Flow, bytes], None]


class _Client:
    """One admitted connection: the broker's client on a WebSocket (its handler)."""

    def __init__(self, relay: RelayServer, conn: WsConnection, client: ClientId, key: str):
        self.relay, self.conn, self.id, self.key = relay, conn, client, key
        self.timer: asyncio.TimerHandle | None = None

    def ws_message(self, data: Payload) -> None:
        self.relay._received(self, data if isinstance(data, bytes) else bytes(data))

    def ws_text(self) -> None:
        self.relay._refuse_text(self)

    def ws_closed(self) -> None:
        self.relay._gone(self)


class RelayServer:
    """The relay: ``async with RelayServer() as relay: ... relay.port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: RelayLimits = DEFAULT_LIMITS,
        tap: Tap | None = None,
    ) -> None:
        """``tap(flow, message)`` sees every WebSocket message received and sent (for audits)."""
        self._host, self._port, self.limits, self._tap = host, port, limits, tap
        self._server: asyncio.Server | None = None
        self._broker = RelayBroker(limits)
        self._quota = ConnectionQuota(
            total=limits.max_clients, per_address=limits.max_clients_per_address
        )
        self._settings = WsSettings(
            max_size=MAX_MESSAGE,
            ping_interval=limits.ping_interval,
            ping_timeout=limits.ping_timeout,
        )
        self._clients: dict[ClientId, _Client] = {}
        self._opening: weakref.WeakSet[WsConnection] = weakref.WeakSet()  # not yet admitted
        self._received_bytes = self._sent = 0
        self.port = 0

    async def start(self) -> int:
        """Listen; return the bound port."""
        if self._server is not None:
            raise RuntimeError("the relay is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, self._host, self._port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close every client (close frame 1001) and stop listening. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for opening in list(self._opening):  # mid-handshake: nobody to say goodbye to
            opening.abort()
        conns = [client.conn for client in self._clients.values()]
        for conn in conns:
            conn.close(CloseCode.GOING_AWAY)
        if conns:
            closing = {asyncio.ensure_future(conn.wait_closed()) for conn in conns}
            _, late = await asyncio.wait(closing, timeout=self._settings.close_timeout + 1)
            for conn in conns:
                conn.abort()
            if late:
                await asyncio.wait(late)
        await server.wait_closed()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def stats(self) -> RelayStats:
        return RelayStats(
            clients=self._broker.clients,
            channels=self._broker.channels,
            rendezvous_ids=self._broker.rendezvous_ids,
            bytes_received=self._received_bytes,
            bytes_sent=self._sent,
            bytes_forwarded=self._broker.bytes_forwarded,
        )

    # --- one connection ----------------------------------------------------------------------

    def _connection(self) -> WsConnection:
        conn = WsConnection(self._settings, on_request=self._admit)
        self._opening.add(conn)
        return conn

    def _admit(self, conn: WsConnection, request: Request) -> _Client | HttpRefusal:
        """Take a quota slot for the client's address and make it a broker client, or refuse
        the opening handshake (HTTP 503 when full or stopped, 429 when full for its address)."""
        self._opening.discard(conn)
        if self._server is None:
            return HttpRefusal(HTTPStatus.SERVICE_UNAVAILABLE, "relay stopped")
        remote = conn.remote_address
        key = address_key(remote[0]) if remote is not None else "unknown"
        refusal = self._quota.admit(key)
        if refusal is Refusal.TOTAL:
            return HttpRefusal(HTTPStatus.SERVICE_UNAVAILABLE, "relay full")
        if refusal is Refusal.ADDRESS:
            return HttpRefusal(HTTPStatus.TOO_MANY_REQUESTS, "too many connections")
        loop = asyncio.get_running_loop()
        client = _Client(self, conn, self._broker.connect(loop.time()), key)
        self._clients[client.id] = client
        self._schedule(client, self._broker.deadline(client.id))
        log.debug("relay client connected (%d)", self._broker.clients)
        return client

    def _received(self, client: _Client, raw: bytes) -> None:
        self._count(Flow.RECEIVED, raw)
        now = asyncio.get_running_loop().time()
        self._apply(self._broker.receive(client.id, raw, now), client)

    def _refuse_text(self, client: _Client) -> None:
        now = asyncio.get_running_loop().time()
        self._apply(self._broker.refuse(client.id, ErrorCode.MALFORMED, now), client)

    def _expire(self, client: _Client) -> None:
        client.timer = None
        now = asyncio.get_running_loop().time()
        self._apply(self._broker.expire(client.id, now), client)

    def _gone(self, client: _Client) -> None:
        if self._clients.pop(client.id, None) is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        self._quota.release(client.key)
        if client.conn.failure is not None:
            log.error("relay client dropped: %r", client.conn.failure)
        now = asyncio.get_running_loop().time()
        self._apply(self._broker.disconnected(client.id, now), None)
        log.debug("relay client gone (%d)", self._broker.clients)

    def _apply(self, effects: list[Effect], source: _Client | None) -> None:
        """Carry out the broker's ``effects`` in order; hold ``source`` while a receiver it
        wrote to is above its high-water mark."""
        for effect in effects:
            match effect:
                case Send(to=to, data=data):
                    receiver = self._clients.get(to)
                    if receiver is not None and receiver.conn.send(data):
                        self._count(Flow.SENT, data)
                        if source is not None:
                            source.conn.throttle_by(receiver.conn)
                case Deadline(client=client, at=at):
                    found = self._clients.get(client)
                    if found is not None:
                        self._schedule(found, at)
                case Disconnect(client=client, code=code, data=data):
                    found = self._clients.get(client)
                    if found is not None:
                        log.info("relay client refused: %s", code.name)
                        if found.conn.send(data):
                            self._count(Flow.SENT, data)
                        found.conn.close(CloseCode.POLICY_VIOLATION, code.name.lower())
                case _:
                    assert_never(effect)

    def _schedule(self, client: _Client, at: float | None) -> None:
        if client.timer is not None:
            client.timer.cancel()
        loop = asyncio.get_running_loop()
        client.timer = None if at is None else loop.call_at(at, self._expire, client)

    def _count(self, flow: Flow, raw: bytes) -> None:
        if self._tap is not None:
            self._tap(flow, raw)
        if flow is Flow.RECEIVED:
            self._received_bytes += len(raw)
        else:
            self._sent += len(raw)


async def run_relay(
    host: str,
    port: int,
    *,
    limits: RelayLimits = DEFAULT_LIMITS,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run a relay on ``host:port`` until cancelled; ``ready(bound_port)`` once listening."""
    async with RelayServer(host, port, limits=limits) as relay:
        if ready is not None:
            ready(relay.port)
        await asyncio.Event().wait()
