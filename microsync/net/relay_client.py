"""A device's side of the relay: one WebSocket, many channels, each a :class:`Stream`.

Theory of operation
-------------------
:class:`RelayClient` holds one WebSocket to a relay (:mod:`microsync.protocol.relay` has the
wire format). ``join(rid)`` presents a rendezvous id; every device the relay pairs us with arrives
as a :class:`RelayChannel` from ``accept()``, carrying ``initiator`` (who runs the Noise
initiator role) and the ``rid`` it was paired on. One reader task (owned by the client, stopped
by ``close()``) decodes the relay's messages and hands DATA to its channel.

Flow control, with no unbounded queue anywhere: each channel buffers at most ``buffer_size``
bytes (plus one message); when a channel's buffer is full the reader waits, so the WebSocket's
receive queue (``max_queue`` messages) fills, TCP pushes back and the relay's forwarding to us
waits. The price is head-of-line blocking: a channel nobody reads stalls the others on this
connection, so every accepted channel must be read (or closed). ``write`` splits data into
relay messages and awaits the WebSocket's send buffer (back-pressure). At most ``max_channels``
channels are open at once; the relay's extra pairings are closed at once.

``read()`` returns ``b""`` once the other end closed, left or the connection to the relay
ended; ``write`` after that raises :class:`ConnectionResetError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from microsync.errors import DecodeError, RemoteProtocolError
from microsync.protocol.relay import (
    MAX_MESSAGE,
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
    data_sizes,
    decode,
    encode,
)

__all__ = ["DEFAULT_BUFFER_SIZE", "RelayChannel", "RelayClient"]

DEFAULT_BUFFER_SIZE = 256 * 1024
PING_INTERVAL = 20.0


class RelayChannel:
    """One end-to-end byte stream through the relay (a :class:`~microsync.net.stream.Stream`)."""

    def __init__(
        self, client: RelayClient, number: int, *, rid: bytes, initiator: bool, buffer_size: int
    ) -> None:
        self._client, self._number = client, number
        self.rid, self.initiator = rid, initiator
        self._chunks: deque[bytes] = deque()
        self._buffered, self._limit = 0, buffer_size
        self._changed = asyncio.Condition()
        self._eof = False  # nothing more will arrive
        self._closed = False  # closed by us

    @property
    def peer(self) -> str:
        return f"relay:{self._client.url}"

    async def read(self) -> bytes:
        """The next bytes from the other end; ``b""`` once it closed."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._chunks) or self._eof)
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            self._changed.notify_all()
            return chunk

    async def write(self, data: bytes) -> None:
        """Send ``data`` (cut by :func:`~microsync.net.relay.data_sizes`); waits while the
        send buffer is full. :class:`ConnectionResetError` if the channel is closed."""
        view, start = memoryview(data), 0
        for size in data_sizes(len(view)):
            if self._eof or self._closed:
                raise ConnectionResetError("relay channel closed")
            await self._client._send(Data(channel=self._number, payload=view[start : start + size]))
            start += size

    async def close(self) -> None:
        """Close this end (the other end reads EOF). Idempotent; never raises."""
        if self._closed:
            return
        tell_relay = not self._eof
        await self._finish(closed=True)
        if tell_relay:
            with contextlib.suppress(ConnectionError):
                await self._client._send(Close(channel=self._number))

    async def _deliver(self, payload: bytes) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._buffered < self._limit or self._closed)
            if not self._closed:
                self._chunks.append(payload)
                self._buffered += len(payload)
                self._changed.notify_all()

    async def _finish(self, *, closed: bool) -> None:
        """No more input (the other end closed); with ``closed``, we closed: drop the buffer."""
        self._client._forget(self._number)
        async with self._changed:
            self._eof = True
            if closed:
                self._closed = True
                self._chunks.clear()
                self._buffered = 0
            self._changed.notify_all()

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        state = "closed" if self._closed else "eof" if self._eof else "open"
        return f"RelayChannel({self._number}, {role}, {state})"


class RelayClient:
    """A connection to a relay: ``async with RelayClient("ws://127.0.0.1:PORT") as relay:``."""

    def __init__(
        self, url: str, *, max_channels: int = 64, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> None:
        if max_channels < 1 or buffer_size < 1:
            raise ValueError("max_channels and buffer_size must be positive")
        self.url, self._max_channels, self._buffer_size = url, max_channels, buffer_size
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: dict[int, RelayChannel] = {}
        # at most max_channels channels wait here, plus the end-of-connection marker
        self._pending: asyncio.Queue[RelayChannel | None] = asyncio.Queue(max_channels + 1)
        self._ended = False
        self.error: ErrorCode | None = None
        """The relay's ERROR code, if it disconnected us with one."""

    async def connect(self) -> None:
        """Open the WebSocket. :class:`ConnectionRefusedError` if the relay refuses (full),
        :class:`OSError`/:class:`TimeoutError` if it cannot be reached."""
        if self._ws is not None:
            raise RuntimeError("already connected")
        try:
            self._ws = await connect(
                self.url,
                compression=None,
                proxy=None,
                max_size=MAX_MESSAGE,
                max_queue=16,
                write_limit=128 * 1024,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_INTERVAL,
                open_timeout=10,
                close_timeout=2,
                user_agent_header=None,
            )
        except InvalidHandshake as refused:
            raise ConnectionRefusedError(f"the relay refused the connection: {refused}") from None
        self._reader = asyncio.create_task(self._read_loop(), name="relay-client-reader")

    async def join(self, rid: bytes) -> None:
        """Present rendezvous id ``rid`` (32 bytes): pair with every client that holds it."""
        if len(rid) != RID_SIZE:
            raise ValueError("a rendezvous id is 32 bytes")
        await self._send(Join(rid=rid))

    async def leave(self, rid: bytes) -> None:
        """Stop pairing on ``rid``; channels already made stay open."""
        if len(rid) != RID_SIZE:
            raise ValueError("a rendezvous id is 32 bytes")
        await self._send(Leave(rid=rid))

    async def accept(self) -> RelayChannel:
        """The next channel the relay paired us on. :class:`ConnectionResetError` once the
        connection to the relay has ended."""
        if self._ws is None:
            raise RuntimeError("not connected: call connect() first")
        channel = await self._pending.get()
        if channel is None:
            self._pending.put_nowait(None)  # for the next caller
            raise ConnectionResetError(f"relay connection ended ({self._reason()})")
        return channel

    def channels(self) -> tuple[RelayChannel, ...]:
        """The channels open now (accepted or waiting to be)."""
        return tuple(self._channels.values())

    async def close(self) -> None:
        """Close every channel and the connection; stop the reader. Idempotent."""
        for channel in list(self._channels.values()):
            await channel._finish(closed=True)
        if self._ws is not None:
            await self._ws.close()
        reader = self._reader
        if reader is not None:
            await asyncio.wait({reader})  # it ends with the connection
            if not reader.cancelled() and (error := reader.exception()) is not None:
                raise error  # a bug in the reader: its owner hears of it

    async def __aenter__(self) -> RelayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- internals ---------------------------------------------------------------------------

    async def _send(self, message: ClientMessage) -> None:
        if self._ws is None or self._ended:
            raise ConnectionResetError(f"not connected to the relay ({self._reason()})")
        try:
            await self._ws.send(encode(message))
        except ConnectionClosed:
            raise ConnectionResetError("the relay connection closed") from None

    def _forget(self, number: int) -> None:
        self._channels.pop(number, None)

    def _reason(self) -> str:
        return self.error.name.lower() if self.error is not None else "closed"

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                if isinstance(raw, str):
                    raise RemoteProtocolError("the relay sent a text message")
                await self._on_message(raw)
        except (DecodeError, RemoteProtocolError):
            await self._ws.close(1002, "malformed relay message")
        except (ConnectionClosed, ConnectionResetError):
            pass  # the relay or we closed the connection (also while refusing a pairing)
        finally:
            self._ended = True
            for channel in list(self._channels.values()):
                await channel._finish(closed=False)
            self._pending.put_nowait(None)

    async def _on_message(self, raw: bytes) -> None:
        match decode(raw, from_client=False):
            case Paired(rid=rid, channel=number, initiator=initiator):
                await self._on_paired(rid, number, initiator)
            case Data(channel=number, payload=payload):
                channel = self._channels.get(number)
                if channel is not None:
                    await channel._deliver(bytes(payload))
            case Closed(channel=number):
                channel = self._channels.get(number)
                if channel is not None:
                    await channel._finish(closed=False)
            case Error(code=code):
                self.error = code
            case Join() | Leave() | Close():  # pragma: no cover (decode refuses them)
                raise RemoteProtocolError("client-only message from the relay")

    async def _on_paired(self, rid: bytes, number: int, initiator: bool) -> None:
        if number in self._channels:
            raise RemoteProtocolError("the relay reused a channel id")
        cap = self._max_channels
        if len(self._channels) >= cap or self._pending.qsize() >= cap:
            await self._send(Close(channel=number))
            return
        channel = RelayChannel(
            self, number, rid=rid, initiator=initiator, buffer_size=self._buffer_size
        )
        self._channels[number] = channel
        self._pending.put_nowait(channel)
