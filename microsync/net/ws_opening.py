"""The WebSocket opening handshake, without I/O, for :mod:`microsync.net.ws_conn`: websockets'
sans-IO :class:`~websockets.server.ServerProtocol` / :class:`~websockets.client.ClientProtocol`
do the HTTP (request and response parsing, ``Sec-WebSocket-Key`` and ``-Accept``, no
extensions offered or accepted, so no compression); this module cuts the bytes at the end of
the HTTP head, so that what follows a 101 answer is read as frames by our own reader, never by
websockets.

Invariants: a head is at most :data:`MAX_HEAD` bytes (more is :class:`OpeningFailed`); a
refusal's body is websockets' to read (it bounds it); nothing here writes or reads a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI

__all__ = ["MAX_HEAD", "ClientOpening", "HttpRefusal", "OpeningFailed", "ServerOpening"]

MAX_HEAD: Final = 16 * 1024
"""The most bytes of an HTTP request or response head (up to its blank line)."""


@dataclass(frozen=True, slots=True)
class HttpRefusal:
    """An HTTP answer that refuses an opening handshake."""

    status: HTTPStatus
    text: str


class OpeningFailed(InvalidHandshake):
    """The other end's HTTP was not a WebSocket opening; ``answer`` is what to send back."""

    def __init__(self, reason: str, answer: bytes = b"") -> None:
        super().__init__(reason)
        self.answer = answer


def _head_end(buffer: bytearray, searched: int) -> int | None:
    """Where the head in ``buffer`` ends (after its blank line), looking past ``searched``."""
    end = buffer.find(b"\r\n\r\n", max(0, searched - 3))
    if end >= 0:
        return end + 4
    if len(buffer) > MAX_HEAD:
        raise OpeningFailed("HTTP head too long")
    return None


def _written(proto: ServerProtocol | ClientProtocol) -> bytes:
    return b"".join(proto.data_to_send())


class ServerOpening:
    """A server's side: :meth:`receive` the request, :meth:`check` it, :meth:`answer`."""

    def __init__(self, *, max_size: int) -> None:
        self._proto = ServerProtocol(max_size=max_size)
        self._head = bytearray()
        self.rest = b""
        """What the client sent after its request head (frames, if it did not wait)."""

    def receive(self, data: bytes) -> Request | None:
        """The request once its head is in (``None`` until then); :class:`OpeningFailed`
        if it is not HTTP or too long."""
        searched = len(self._head)
        self._head += data
        end = _head_end(self._head, searched)
        if end is None:
            return None
        head, self.rest = bytes(self._head[:end]), bytes(self._head[end:])
        self._head = bytearray()
        self._proto.receive_data(head)
        events = self._proto.events_received()
        if not events or not isinstance(events[0], Request):
            raise OpeningFailed("not an HTTP request", _written(self._proto))
        return events[0]

    def check(self, request: Request) -> HttpRefusal | None:
        """``None`` if ``request`` opens a WebSocket, else the refusal websockets made."""
        self._response = self._proto.accept(request)
        if self._response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        return HttpRefusal(HTTPStatus(self._response.status_code), "")

    def answer(self, refusal: HttpRefusal | None) -> bytes:
        """The bytes of the answer to the checked request: 101, or ``refusal`` (also the
        refusal :meth:`check` made, which is sent as websockets wrote it)."""
        response = self._response
        if refusal is not None and response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            response = self._proto.reject(refusal.status, f"{refusal.text}\n")
        self._proto.send_response(response)
        return _written(self._proto)


class ClientOpening:
    """A client's side: send :meth:`request`, then :meth:`receive` the answer."""

    def __init__(self, uri: WebSocketURI, *, max_size: int) -> None:
        self._proto = ClientProtocol(uri, max_size=max_size)
        self._head = bytearray()
        self._head_seen = False

    def request(self) -> bytes:
        """The opening request's bytes."""
        self._proto.send_request(self._proto.connect())
        return _written(self._proto)

    def receive(self, data: bytes) -> bytes | None:
        """What follows the answer's head once the server accepted (``None`` until then);
        :class:`~websockets.exceptions.InvalidHandshake` (an ``InvalidStatus`` naming the
        HTTP status, for a refusal) if it did not."""
        if self._head_seen:  # a refusal's body
            self._proto.receive_data(data)
            return self._outcome(b"")
        searched = len(self._head)
        self._head += data
        end = _head_end(self._head, searched)
        if end is None:
            return None
        cut = end - searched
        self._head_seen, self._head = True, bytearray()
        self._proto.receive_data(data[:cut])
        if self._proto.state is not State.OPEN:
            self._proto.receive_data(data[cut:])
        return self._outcome(data[cut:])

    def eof(self) -> None:
        """The server closed before it answered: raise why."""
        self._proto.receive_eof()
        self._outcome(b"")
        raise ConnectionResetError("the server closed before answering")

    def _outcome(self, rest: bytes) -> bytes | None:
        if self._proto.handshake_exc is not None:
            raise self._proto.handshake_exc
        return rest if self._proto.state is State.OPEN else None
