"""One WebSocket on an asyncio transport, lean on the data path: the relay's and its
clients' connection (the framing is :mod:`microsync.net.ws_frames`).

Theory of operation
-------------------
:class:`WsConnection` is an :class:`asyncio.Protocol`. The opening handshake is
:mod:`microsync.net.ws_opening` (websockets' sans-IO HTTP; no extensions: compression off),
within ``open_timeout``; after it, every frame is read by a
:class:`~microsync.net.ws_frames.FrameReader` and written by
:func:`~microsync.net.ws_frames.frame` with no task, queue or lock in between: each binary
message goes to :meth:`WsHandler.ws_message` from ``data_received``, and :meth:`send` writes
one frame to the transport at once.

Flow control is by *holds*: while anything holds the connection (:meth:`hold` /
:meth:`release`) no buffered frame is handed out, and a read that arrives meanwhile pauses the
transport (``pause_reading``: one read at most waits beyond the hold). A relay holds a
sender while a receiver's transport buffer is above its high-water mark
(:meth:`throttle_by`); a client holds its connection while a channel's buffer is full; a
connection holds itself while its own buffer is full (a peer that pings but does not read).
Writers that want to wait await :meth:`drain`, which returns at once below the high-water mark.

The connection answers pings, pings its peer every ``ping_interval`` and drops it when the
matching pong is ``ping_timeout`` late (not while a hold on it by someone else may keep the
pong unread), and runs the closing handshake (a close frame each way, then the server closes
TCP; ``close_timeout`` bounds every wait). A framing error is answered with its close code.

Invariants: the bytes held are two reads and one partial message plus what the transport
buffers; a handler's exception ends that connection only (kept in :attr:`failure` for its
owner).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Final, Protocol, TypeVar

from websockets.exceptions import InvalidHandshake
from websockets.http11 import Request
from websockets.uri import WebSocketURI

from microsync.net.ws_frames import (
    CloseCode,
    Frame,
    FrameError,
    FrameReader,
    Opcode,
    Payload,
    close_payload,
    frame,
    frame_of_parts,
    parse_close,
)
from microsync.net.ws_opening import ClientOpening, HttpRefusal, OpeningFailed, ServerOpening

__all__ = ["WsConnection", "WsHandler", "WsSettings"]

log = logging.getLogger(__name__)

_MASKS: Final = 4096  # random bytes drawn at once for client frame masks (1,024 masks)
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class WsSettings:
    """Limits and timers of one connection."""

    max_size: int
    """The largest message accepted (a bigger one is refused from its header: close 1009)."""
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    close_timeout: float = 2.0
    write_limit: int = 256 * 1024
    """The transport's high-water mark: above it the connection is not :attr:`writable`."""


class WsHandler(Protocol):
    """What a connection tells its owner once it is open."""

    def ws_message(self, data: Payload) -> None:
        """One binary message (on a client's connection, a view of the bytes read: copy
        what you keep)."""

    def ws_text(self) -> None:
        """A text message arrived (neither end of the relay speaks text)."""

    def ws_closed(self) -> None:
        """The connection is gone (called once)."""


OnRequest = Callable[["WsConnection", Request], "WsHandler | HttpRefusal"]


class State(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent or received
    CLOSED = "closed"


class WsConnection(asyncio.Protocol):
    """A server's connection (``on_request`` admits it) or a client's (``uri`` and
    ``handler``: call :meth:`open` once connected)."""

    def __init__(
        self,
        settings: WsSettings,
        *,
        on_request: OnRequest | None = None,
        uri: WebSocketURI | None = None,
        handler: WsHandler | None = None,
    ) -> None:
        if (on_request is None) == (uri is None) or (uri is not None and handler is None):
            raise ValueError("a server connection takes on_request, a client uri and handler")
        self.settings, self._on_request, self._handler = settings, on_request, handler
        self._opening: ServerOpening | ClientOpening
        if uri is not None:
            self._opening = ClientOpening(uri, max_size=settings.max_size)
        else:
            self._opening = ServerOpening(max_size=settings.max_size)
        self._client = uri is not None
        self._reader = FrameReader(
            masked=not self._client, max_size=settings.max_size, views=self._client
        )
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._state = State.CONNECTING
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._holds: set[object] = set()
        self._paused = False  # the transport's reading is paused (for a hold)
        self._writable = True
        self._when_writable: list[Callable[[], None]] = []
        self._masks, self._mask_at = b"", _MASKS
        self._ping: bytes | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.failure: BaseException | None = None
        """An exception a handler raised (the connection was dropped for it)."""
        self.close_code: int | None = None
        """The code of the peer's close frame, if one came."""

    # --- what the owner uses -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state is State.OPEN

    @property
    def writable(self) -> bool:
        """Below the transport's high-water mark (and open)."""
        return self._writable and self._state is State.OPEN

    @property
    def remote_address(self) -> tuple[str, int] | None:
        name = self._transport.get_extra_info("peername") if self._transport else None
        return (str(name[0]), int(name[1])) if isinstance(name, tuple) else None

    async def open(self) -> None:
        """A client's opening handshake, within ``open_timeout``. :class:`InvalidHandshake`
        if the server refused (its HTTP status in the message); :class:`TimeoutError`,
        :class:`ConnectionError` if it did not answer."""
        assert isinstance(self._opening, ClientOpening) and self._transport is not None
        self._transport.write(self._opening.request())
        try:
            await asyncio.wait_for(asyncio.shield(self._opened), self.settings.open_timeout)
        except BaseException:
            self.abort()
            raise

    def send(self, data: Payload) -> bool:
        """Write one binary message now; ``False`` (nothing sent) unless the connection is
        open. Never waits: check :attr:`writable` or await :meth:`drain`."""
        if self._state is not State.OPEN or self._transport is None:
            return False
        self._transport.write(frame(Opcode.BINARY, data, mask=self._mask()))
        return True

    def send_parts(self, parts: Sequence[Payload]) -> bool:
        """:meth:`send` of ``parts`` joined, with one copy of each."""
        if self._state is not State.OPEN or self._transport is None:
            return False
        self._transport.write(frame_of_parts(Opcode.BINARY, parts, mask=self._mask()))
        return True

    async def drain(self) -> None:
        """Until the transport is below its high-water mark. :class:`ConnectionResetError`
        if the connection closed."""
        while not self.writable:
            if self._state is not State.OPEN:
                raise ConnectionResetError("the WebSocket is closed")
            waiter: asyncio.Future[None] = self._loop.create_future()

            def wake(waiter: asyncio.Future[None] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            self.when_writable(wake)
            await waiter

    def when_writable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the transport drains below its mark or closes."""
        if self._state is State.CLOSED:
            callback()
        else:
            self._when_writable.append(callback)

    def hold(self, key: object) -> None:
        """Stop reading until ``key`` is released (and every other hold): no frame is handed
        out from now on, and the transport is paused if another read arrives meanwhile
        (most holds end before that, and cost no system call)."""
        self._holds.add(key)

    def release(self, key: object) -> None:
        """Drop the hold ``key``; the last one resumes reading."""
        if key not in self._holds:
            return
        self._holds.discard(key)
        if not self._holds and self._transport is not None and self._state is not State.CLOSED:
            if self._paused:
                self._paused = False
                self._transport.resume_reading()
            self._loop.call_soon(self._pump)

    def throttle_by(self, other: WsConnection) -> None:
        """Hold this connection while ``other`` is above its high-water mark."""
        if not other.writable and other._state is State.OPEN and other not in self._holds:
            self.hold(other)
            other.when_writable(lambda: self.release(other))

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (a close frame; the TCP connection ends within
        ``close_timeout``). Idempotent."""
        if self._state is State.OPEN:
            self._write_close(code, reason)
        elif self._state is State.CONNECTING:
            self.abort()

    def fail(self, code: CloseCode, reason: str) -> None:
        """The peer broke a rule: a close frame with ``code``, then the TCP connection ends
        (once what is buffered is written, ``close_timeout`` at most)."""
        self._write_close(code, reason)
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the TCP connection now."""
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        """Until the TCP connection is gone."""
        await asyncio.shield(self._closed)

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self.settings.write_limit)
        self._timer("open", self.settings.open_timeout, self.abort)

    def data_received(self, data: bytes) -> None:
        if self._state is State.CONNECTING:
            self._handshake_data(data)
        elif self._state is not State.CLOSED:
            self._reader.feed(data)
            if not self._holds:
                self._pump()
            elif not self._paused and self._transport is not None:
                self._paused = True  # held: what was read waits, and nothing more is read
                self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._state is State.CONNECTING and isinstance(self._opening, ClientOpening):
            try:
                self._opening.eof()
            except (InvalidHandshake, ConnectionError) as failed:
                self._opening_failed(failed)
        return None  # close the transport

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_writers()

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self._state in (State.OPEN, State.CLOSING)
        self._state = State.CLOSED
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if not self._opened.done():
            self._opened.set_exception(ConnectionResetError("the connection closed"))
            self._opened.exception()  # retrieved: an owner that stopped waiting is fine
        self._wake_writers()
        self._closed.set_result(None)
        if was_open and self._handler is not None:
            self._call(self._handler.ws_closed)

    # --- the opening handshake ---------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        opening = self._opening
        try:
            if isinstance(opening, ClientOpening):
                rest = opening.receive(data)
                if rest is not None:
                    self._now_open()
                    self._opened.set_result(None)
                    self.data_received(rest)
            elif (request := opening.receive(data)) is not None:
                self._answer(opening, request)
        except InvalidHandshake as failed:
            self._opening_failed(failed)

    def _answer(self, opening: ServerOpening, request: Request) -> None:
        """Admit the request (``on_request``) or refuse it; open, or close after the answer."""
        refusal = opening.check(request)
        if refusal is None:
            on_request = self._on_request
            assert on_request is not None
            answer = self._call(lambda: on_request(self, request))
            if isinstance(answer, HttpRefusal):
                refusal = answer
            elif answer is None:  # on_request failed
                refusal = HttpRefusal(HTTPStatus.INTERNAL_SERVER_ERROR, "error")
            else:
                self._handler = answer
        assert self._transport is not None
        self._transport.write(opening.answer(refusal))
        if refusal is not None:
            self._transport.close()
            return
        self._now_open()
        if opening.rest:
            self.data_received(opening.rest)

    def _opening_failed(self, failed: InvalidHandshake | ConnectionError) -> None:
        if not self._opened.done():
            self._opened.set_exception(failed)
            self._opened.exception()  # retrieved: a server's is never awaited
        if isinstance(failed, OpeningFailed) and failed.answer and self._transport is not None:
            self._transport.write(failed.answer)
            self._transport.close()
        else:
            self.abort()

    def _now_open(self) -> None:
        self._state = State.OPEN
        self._timers.pop("open").cancel()
        if self.settings.ping_interval is not None:
            self._timer("keepalive", self.settings.ping_interval, self._keepalive)

    # --- the data phase ----------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand out buffered frames until a hold or the end of the bytes."""
        reader, handler = self._reader, self._handler
        try:
            while not self._holds and self._state in (State.OPEN, State.CLOSING):
                got = reader.next()
                if got is None:
                    return
                if got.opcode is Opcode.BINARY and self._state is State.OPEN and handler:
                    handler.ws_message(got.payload)  # the bulk: no more indirection
                else:
                    self._dispatch(got)
        except FrameError as error:
            self.fail(error.code, error.reason)
        except Exception as error:  # a bug in the owner: it hears of it through .failure
            self._failed(error)

    def _dispatch(self, got: Frame) -> None:
        handler, opcode = self._handler, got.opcode
        if self._state is not State.OPEN or handler is None:
            if opcode is Opcode.CLOSE:
                self._on_close(bytes(got.payload))
            return  # after our close frame, data is dropped
        if opcode is Opcode.BINARY:
            self._call(lambda: handler.ws_message(got.payload))
        elif opcode is Opcode.TEXT:
            self._call(handler.ws_text)
        elif opcode is Opcode.PING:
            self._write_control(Opcode.PONG, bytes(got.payload))
            self.throttle_by(self)
        elif opcode is Opcode.PONG:
            if got.payload == self._ping:
                self._ping = None
        else:
            self._on_close(bytes(got.payload))

    def _on_close(self, payload: bytes) -> None:
        try:
            code, _reason = parse_close(payload)
        except FrameError as error:
            self.fail(error.code, error.reason)
            return
        self.close_code = code
        if self._state is State.OPEN:  # echo it (RFC 6455 5.5.1), then end
            self._write_close(CloseCode.NORMAL if code is None else code, "")
        self._finish()

    def _finish(self) -> None:
        """Both close frames are out (or the peer broke the rules): the server ends TCP now;
        a client waits for it, ``close_timeout`` at most."""
        if not self._client and self._transport is not None:
            self._transport.close()

    def _write_close(self, code: int, reason: str) -> None:
        if self._state is State.OPEN:
            self._write_control(Opcode.CLOSE, close_payload(code, reason))
            self._state = State.CLOSING
            self._timer("close", self.settings.close_timeout, self.abort)

    def _write_control(self, opcode: Opcode, payload: bytes) -> None:
        if self._transport is not None:
            self._transport.write(frame(opcode, payload, mask=self._mask()))

    def _mask(self) -> bytes | None:
        """A fresh random mask for a client's frame (``None`` for a server's)."""
        if not self._client:
            return None
        if self._mask_at >= _MASKS:
            self._masks, self._mask_at = os.urandom(_MASKS), 0
        start, self._mask_at = self._mask_at, self._mask_at + 4
        return self._masks[start : start + 4]

    def _keepalive(self) -> None:
        if self._state is not State.OPEN:
            return
        if self._ping is None:
            self._ping = os.urandom(4)
            self._write_control(Opcode.PING, self._ping)
            self._timer("pong", self.settings.ping_timeout, self._pong_late)
        assert self.settings.ping_interval is not None
        self._timer("keepalive", self.settings.ping_interval, self._keepalive)

    def _pong_late(self) -> None:
        if self._ping is None or self._state is not State.OPEN:
            return
        if self._holds - {self}:  # the pong may sit unread behind someone else's hold
            self._timer("pong", self.settings.ping_timeout, self._pong_late)
            return
        log.debug("websocket keepalive ping timed out")
        self._write_close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self.abort()

    # --- helpers -----------------------------------------------------------------------------

    def _timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        if self._state is not State.CLOSED:
            self._timers[name] = self._loop.call_later(delay, callback)

    def _wake_writers(self) -> None:
        callbacks, self._when_writable = self._when_writable, []
        for callback in callbacks:
            callback()

    def _call(self, callback: Callable[[], T]) -> T | None:
        """Run a handler's callback; if it raises, keep the error and drop the connection."""
        try:
            return callback()
        except Exception as error:  # a bug in the owner: it hears of it through .failure
            self._failed(error)
            return None

    def _failed(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
        self.abort()
