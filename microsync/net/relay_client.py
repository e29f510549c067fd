"""A device's side of the relay: one WebSocket, many channels, each a :class:`Stream`.

Theory of operation
-------------------
:class:`RelayClient` holds one WebSocket to a relay (:mod:`microsync.protocol.relay` has the
wire format). ``join(rid)`` presents a rendezvous id; every device the relay pairs us with arrives
as a :class:`RelayChannel` from ``accept()``, carrying ``initiator`` (who runs the Noise
initiator role) and the ``rid`` it was paired on. One reader task (owned by the client, stopped
by ``close()``) decodes the relay's messages and hands DATA to its channel.

The WebSocket is a :class:`~microsync.net.ws_conn.WsConnection`: no task of our own and no
queue between the socket and a channel. Each relay message is handled as it is read; a DATA
payload goes straight into its channel's buffer.

Flow control, with no unbounded queue anywhere: each channel buffers at most ``buffer_size``
bytes (plus one message); while a channel's buffer is full the connection is not read, so TCP
pushes back and the relay's forwarding to us waits. The price is head-of-line blocking: a
channel nobody reads stalls the others on this connection, so every accepted channel must be
read (or closed). ``write`` cuts data into relay messages, writes each at once and waits only
while the transport's buffer is above its high-water mark (back-pressure). At most
``max_channels`` channels are open at once; the relay's extra pairings are closed at once.

``read()`` returns ``b""`` once the other end closed, left or the connection to the relay
ended; ``write`` after that raises :class:`ConnectionResetError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections import deque
from typing import Final

from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.uri import parse_uri

from microsync.errors import DecodeError, RemoteProtocolError
from microsync.net.ws_conn import WsConnection, WsSettings
from microsync.net.ws_frames import CloseCode, Payload
from microsync.protocol.relay import (
    BUCKETS,
    CHANNEL_SIZE,
    DATA_OVERHEAD,
    HEADER_SIZE,
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
    Kind,
    Leave,
    Message,
    Paired,
    bucket_for,
    data_sizes,
    decode,
    encode,
)

__all__ = ["DEFAULT_BUFFER_SIZE", "RelayChannel", "RelayClient", "data_parts", "data_payload"]

DEFAULT_BUFFER_SIZE = 256 * 1024
PING_INTERVAL = 20.0
OPEN_TIMEOUT = 10.0


_ZEROS: Final = bytes(MAX_MESSAGE)


def data_payload(message: Payload) -> tuple[int, memoryview] | None:
    """(channel, payload view) of a DATA message in its own (smallest) bucket, the form the
    relay sends; ``None`` for anything else, which :func:`decode` judges (strictly)."""
    view = memoryview(message)
    size = len(view)
    if size < BUCKETS[0] or view[0] != Kind.DATA:
        return None
    end = HEADER_SIZE + int.from_bytes(view[1:HEADER_SIZE], "big")
    if not DATA_OVERHEAD < end <= size or size != bucket_for(end):
        return None
    if view[end:] != _ZEROS[: size - end]:
        return None
    channel = int.from_bytes(view[HEADER_SIZE:DATA_OVERHEAD], "big")
    return (channel, view[DATA_OVERHEAD:end]) if channel else None


def data_parts(message: Data) -> tuple[bytes, Payload, bytes]:
    """``encode(message)`` as (header, payload, padding): joined, the same bytes."""
    length = CHANNEL_SIZE + len(message.payload)
    if not CHANNEL_SIZE < length <= MAX_PAYLOAD + CHANNEL_SIZE:
        raise ValueError(f"a DATA payload is 1 to {MAX_PAYLOAD} bytes")
    if not 0 < message.channel < 2**32:
        raise ValueError("channel ids are 1 to 2**32 - 1")
    header = bytes((Kind.DATA,)) + length.to_bytes(3, "big") + message.channel.to_bytes(4, "big")
    return (
        header,
        message.payload,
        _ZEROS[: bucket_for(HEADER_SIZE + length) - HEADER_SIZE - length],
    )


@functools.lru_cache(maxsize=256)
def _cuts(length: int) -> tuple[int, ...]:
    """:func:`data_sizes`, remembered: a stream writes the same few lengths again and again."""
    return tuple(data_sizes(length))


class RelayChannel:
    """One end-to-end byte stream through the relay (a :class:`~microsync.net.stream.Stream`)."""

    def __init__(
        self, client: RelayClient, number: int, *, rid: bytes, initiator: bool, buffer_size: int
    ) -> None:
        self._client, self._number = client, number
        self.rid, self.initiator = rid, initiator
        self._chunks: deque[bytes] = deque()
        self._buffered, self._limit = 0, buffer_size
        self._ready = asyncio.Event()  # set while a chunk or the end waits to be read
        self._eof = False  # nothing more will arrive
        self._closed = False  # closed by us

    @property
    def peer(self) -> str:
        return f"relay:{self._client.url}"

    async def read(self) -> bytes:
        """The next bytes from the other end; ``b""`` once it closed."""
        while not self._chunks:
            if self._eof:
                return b""
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < self._limit:
            self._client._unblock(self)
        return chunk

    async def write(self, data: bytes) -> None:
        """Send ``data`` (cut by :func:`~microsync.net.relay.data_sizes`); waits while the
        send buffer is full. :class:`ConnectionResetError` if the channel is closed."""
        view, start = memoryview(data), 0
        for size in _cuts(len(view)):
            if self._eof or self._closed:
                raise ConnectionResetError("relay channel closed")
            await self._client._send(Data(channel=self._number, payload=view[start : start + size]))
            start += size

    async def close(self) -> None:
        """Close this end (the other end reads EOF). Idempotent; never raises."""
        if self._closed:
            return
        tell_relay = not self._eof
        self._finish(closed=True)
        if tell_relay:
            with contextlib.suppress(ConnectionError):
                await self._client._send(Close(channel=self._number))

    def _deliver(self, payload: bytes) -> None:
        if self._closed:
            return
        self._chunks.append(payload)
        self._buffered += len(payload)
        self._ready.set()
        if self._buffered >= self._limit:
            self._client._block(self)

    def _finish(self, *, closed: bool) -> None:
        """No more input (the other end closed); with ``closed``, we closed: drop the buffer."""
        self._client._forget(self._number)
        self._eof = True
        if closed:
            self._closed = True
            self._chunks.clear()
            self._buffered = 0
        self._client._unblock(self)
        self._ready.set()

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
        self._conn: WsConnection | None = None
        self._channels: dict[int, RelayChannel] = {}
        # at most max_channels channels wait here, plus the end-of-connection marker
        self._pending: asyncio.Queue[RelayChannel | None] = asyncio.Queue(max_channels + 1)
        self._ended = False
        self.error: ErrorCode | None = None
        """The relay's ERROR code, if it disconnected us with one."""

    async def connect(self) -> None:
        """Open the WebSocket. :class:`ConnectionRefusedError` if the relay refuses (full),
        :class:`OSError`/:class:`TimeoutError` if it cannot be reached."""
        if self._conn is not None:
            raise RuntimeError("already connected")
        try:
            uri = parse_uri(self.url)
        except InvalidURI as bad:
            raise ValueError(f"not a relay URL: {bad}") from None
        settings = WsSettings(
            max_size=MAX_MESSAGE,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            open_timeout=OPEN_TIMEOUT,
        )
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: WsConnection(settings, uri=uri, handler=self),
                uri.host,
                uri.port,
                ssl=ssl.create_default_context() if uri.secure else None,
            ),
            OPEN_TIMEOUT,
        )
        self._conn = conn  # before the handshake: a message may come with its answer
        try:
            await conn.open()
        except InvalidHandshake as refused:
            self._conn = None
            raise ConnectionRefusedError(f"the relay refused the connection: {refused}") from None
        except BaseException:
            self._conn = None
            raise

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
        if self._conn is None:
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
        """Close every channel and the connection (a close frame; the relay's answer is
        awaited a few seconds at most). Idempotent. A bug met while handling the relay's
        messages is raised here, to the client's owner."""
        for channel in list(self._channels.values()):
            channel._finish(closed=True)
        conn = self._conn
        if conn is None:
            return
        conn.close()
        await conn.wait_closed()
        if conn.failure is not None:
            raise conn.failure

    async def __aenter__(self) -> RelayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what the connection tells us (WsHandler) --------------------------------------------

    def ws_message(self, data: Payload) -> None:
        """One message from the relay (a view of the bytes read): a DATA's payload is copied
        once, into its channel's buffer."""
        found = data_payload(data)  # the bulk of the traffic, checked without a decode
        if found is not None:
            channel = self._channels.get(found[0])
            if channel is not None:
                channel._deliver(bytes(found[1]))
            return
        try:
            self._on_message(decode(bytes(data), from_client=False))
        except (DecodeError, RemoteProtocolError):
            self._malformed()

    def ws_text(self) -> None:
        self._malformed()

    def ws_closed(self) -> None:
        self._ended = True
        for channel in list(self._channels.values()):
            channel._finish(closed=False)
        self._pending.put_nowait(None)

    # --- internals ---------------------------------------------------------------------------

    async def _send(self, message: ClientMessage) -> None:
        conn = self._conn
        if isinstance(message, Data):  # the bulk: framed with one copy of the payload
            sent = conn is not None and not self._ended and conn.send_parts(data_parts(message))
        else:
            sent = conn is not None and not self._ended and conn.send(encode(message))
        if not sent or conn is None:
            raise ConnectionResetError(f"not connected to the relay ({self._reason()})")
        if not conn.writable:
            await conn.drain()

    def _block(self, channel: RelayChannel) -> None:
        if self._conn is not None:
            self._conn.hold(channel)

    def _unblock(self, channel: RelayChannel) -> None:
        if self._conn is not None:
            self._conn.release(channel)

    def _forget(self, number: int) -> None:
        self._channels.pop(number, None)

    def _reason(self) -> str:
        return self.error.name.lower() if self.error is not None else "closed"

    def _malformed(self) -> None:
        assert self._conn is not None
        self._conn.fail(CloseCode.PROTOCOL_ERROR, "malformed relay message")

    def _on_message(self, message: Message) -> None:
        match message:
            case Paired(rid=rid, channel=number, initiator=initiator):
                self._on_paired(rid, number, initiator)
            case Data(channel=number, payload=payload):
                channel = self._channels.get(number)
                if channel is not None:
                    channel._deliver(bytes(payload))
            case Closed(channel=number):
                channel = self._channels.get(number)
                if channel is not None:
                    channel._finish(closed=False)
            case Error(code=code):
                self.error = code
            case _:  # pragma: no cover (decode refuses client-only messages)
                raise RemoteProtocolError("client-only message from the relay")

    def _on_paired(self, rid: bytes, number: int, initiator: bool) -> None:
        if number in self._channels:
            raise RemoteProtocolError("the relay reused a channel id")
        cap = self._max_channels
        if len(self._channels) >= cap or self._pending.qsize() >= cap:
            assert self._conn is not None
            self._conn.send(encode(Close(channel=number)))
            return
        channel = RelayChannel(
            self, number, rid=rid, initiator=initiator, buffer_size=self._buffer_size
        )
        self._channels[number] = channel
        self._pending.put_nowait(channel)
