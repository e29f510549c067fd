"""The blind relay's WebSocket adapter: pairs devices that present the same rendezvous id and
forwards ciphertext.

Theory of operation
-------------------
The rules -- pairing by rendezvous id, caps, timers -- are :class:`RelayBroker`'s
(:mod:`microsync.protocol.relay_broker`, sans-IO); the wire format is
:mod:`microsync.protocol.relay` (its names are re-exported here). This module only moves
messages: every client connection is one task group, a reader that hands each binary message
to the broker with the loop's clock and a writer that sends the client's outbox in order. The
reader carries out the broker's effects: it puts each message in its receiver's outbox (all of
one event's before any is sent, so per client they leave in the broker's order: DATA never
overtakes PAIRED) and then waits until those outboxes are flushed, so a slow reader slows its
sender (back-pressure); it reschedules a client's timer when the broker says; on a refusal it
sends ERROR and closes. Before the broker sees a client, the opening handshake is refused with
HTTP 503 once ``max_clients`` are connected and with 429 once ``max_clients_per_address`` come
from its IP (:class:`~microsync.net.limits.ConnectionQuota`).

Invariants: nothing is written to disk and no payload or id is logged; every buffer is bounded
(websockets' ``max_queue``/``write_limit`` per connection, one event's messages in hand per
reader); a connection's tasks end with it, and an error in one of them reaches its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import Enum
from typing import Final, assert_never

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from microsync.net.limits import ConnectionQuota, Refusal, peer_address, refuse_when_full
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


class _Outbox:
    """One client's messages in the broker's order. :meth:`run` (the client's writer task)
    hands queued ones to websockets one at a time; :meth:`send` sends one message at once
    when nothing waits before it. Either way its producer waits as for a direct send."""

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._open = True
        self._sending = False

    def put(self, data: bytes) -> None:
        if self._open:
            self._queue.put_nowait(data)

    async def flushed(self) -> None:
        """Until everything put so far was sent (or the connection is gone)."""
        await self._queue.join()

    async def send(self, data: bytes) -> None:
        """Send ``data`` after what waits here: at once (written before this first yields)
        when nothing does, so the common case, one DATA, costs no task switch."""
        if not self._open:
            return
        if self._sending or not self._queue.empty():
            self.put(data)
            await self.flushed()
            return
        with contextlib.suppress(ConnectionClosed):
            await self._conn.send(data)

    async def run(self) -> None:
        """Send until cancelled or the connection closed; then drop the rest."""
        try:
            while True:
                data = await self._queue.get()
                self._sending = True
                try:
                    await self._conn.send(data)
                finally:
                    self._sending = False
                    self._queue.task_done()
        except ConnectionClosed:
            return
        finally:
            self._open = False
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()


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
        self._server: Server | None = None
        self._broker = RelayBroker(limits)
        self._quota = ConnectionQuota(
            total=limits.max_clients, per_address=limits.max_clients_per_address
        )
        self._outboxes: dict[ClientId, _Outbox] = {}
        self._timers: dict[ClientId, asyncio.Timeout] = {}
        self._received = self._sent = 0
        self.port = 0

    async def start(self) -> int:
        """Listen; return the bound port."""
        if self._server is not None:
            raise RuntimeError("the relay is already started")
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            compression=None,
            max_size=MAX_MESSAGE,
            max_queue=16,
            write_limit=128 * 1024,
            ping_interval=self.limits.ping_interval,
            ping_timeout=self.limits.ping_timeout,
            close_timeout=2,
            server_header=None,
            process_request=self._admit,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Close every client and stop listening. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
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
            bytes_received=self._received,
            bytes_sent=self._sent,
            bytes_forwarded=self._broker.bytes_forwarded,
        )

    # --- one connection ----------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the opening handshake once the connection quota is full (HTTP 503) or
        full for the client's address (429)."""
        return refuse_when_full(connection, self._quota, "relay full")

    async def _handle(self, conn: ServerConnection) -> None:
        address = peer_address(conn)
        refusal = self._quota.admit(address)  # again: a rush passes _admit together
        if refusal is not None:
            code = ErrorCode.RELAY_FULL if refusal is Refusal.TOTAL else ErrorCode.ADDRESS_FULL
            await self._refuse(conn, code, encode(Error(code=code)))
            return
        try:
            await self._serve_client(conn)
        finally:
            self._quota.release(address)

    async def _serve_client(self, conn: ServerConnection) -> None:
        """One task group: the outbox's writer and, in the body, the reader."""
        loop = asyncio.get_running_loop()
        client = self._broker.connect(loop.time())
        outbox = self._outboxes[client] = _Outbox(conn)
        log.debug("relay client connected (%d)", self._broker.clients)
        goodbye: Disconnect | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(outbox.run(), name="relay client writer")
                goodbye = await self._read(client, conn)
                writer.cancel()
        finally:
            del self._outboxes[client]
            await self._apply(self._broker.disconnected(client, loop.time()))
            log.debug("relay client gone (%d)", self._broker.clients)
        if goodbye is not None:
            await self._refuse(conn, goodbye.code, goodbye.data)

    async def _read(self, client: ClientId, conn: ServerConnection) -> Disconnect | None:
        """Hand ``client``'s messages and timer to the broker until it is refused (the
        refusal) or its connection closed (``None``)."""
        loop = asyncio.get_running_loop()
        while True:
            timer = asyncio.timeout_at(self._broker.deadline(client))
            try:
                async with timer:
                    self._timers[client] = timer
                    try:
                        return await self._receive(client, conn)
                    finally:
                        del self._timers[client]
            except TimeoutError:
                if not timer.expired():
                    raise
            goodbye = await self._apply(self._broker.expire(client, loop.time()))
            if goodbye is not None:
                return goodbye

    async def _receive(self, client: ClientId, conn: ServerConnection) -> Disconnect | None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                raw = await conn.recv()
                if isinstance(raw, str):
                    effects = self._broker.refuse(client, ErrorCode.MALFORMED, loop.time())
                else:
                    self._count(Flow.RECEIVED, raw)
                    effects = self._broker.receive(client, raw, loop.time())
                goodbye = await self._apply(effects)
                if goodbye is not None:
                    return goodbye
        except ConnectionClosed:
            return None

    async def _apply(self, effects: list[Effect]) -> Disconnect | None:
        """Carry out the broker's ``effects``: queue every message (one alone is sent at
        once), then wait until each receiver's outbox is flushed. The refusal among them, if
        any, is returned."""
        goodbye: Disconnect | None = None
        sends: list[tuple[_Outbox, bytes]] = []
        for effect in effects:
            match effect:
                case Send(to=to, data=data):
                    outbox = self._outboxes.get(to)
                    if outbox is not None:
                        self._count(Flow.SENT, data)
                        sends.append((outbox, data))
                case Deadline(client=client, at=at):
                    timer = self._timers.get(client)
                    if timer is not None:
                        timer.reschedule(at)
                case Disconnect():
                    goodbye = effect
                case _:
                    assert_never(effect)
        if len(sends) == 1:
            await sends[0][0].send(sends[0][1])
            return goodbye
        for outbox, data in sends:
            outbox.put(data)
        for outbox in {id(outbox): outbox for outbox, _ in sends}.values():
            await outbox.flushed()
        return goodbye

    def _count(self, flow: Flow, raw: bytes) -> None:
        if self._tap is not None:
            self._tap(flow, raw)
        if flow is Flow.RECEIVED:
            self._received += len(raw)
        else:
            self._sent += len(raw)

    async def _refuse(self, conn: ServerConnection, code: ErrorCode, error: bytes) -> None:
        """Tell the client ``code`` (the encoded ERROR ``error``) and close its connection."""
        log.info("relay client refused: %s", code.name)
        self._count(Flow.SENT, error)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(conn.send(error), 1.0)
            await asyncio.wait_for(conn.close(1008, code.name.lower()), 2.0)


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
