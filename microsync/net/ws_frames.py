"""RFC 6455 framing without I/O: what the relay and its clients send after the opening
handshake (:mod:`microsync.net.ws_conn` moves the bytes).

Theory of operation
-------------------
:class:`FrameReader` takes bytes as they arrive (:meth:`~FrameReader.feed`) and hands out one
:class:`Frame` at a time (:meth:`~FrameReader.next`): a whole data message (fragments joined)
or a control frame (ping, pong, close). It checks every rule a peer can break before it holds
any payload: reserved bits, unknown opcodes, the masking rule of its direction (a client must
mask, a server must not), control frames of at most 125 bytes and never fragmented,
continuations only inside a fragmented message, and a message of at most ``max_size`` bytes
(refused from its header, so an announced 2**63-byte frame costs nothing). A broken rule is a
:class:`FrameError` carrying the close code to answer with (1002 protocol error, 1009 too
big, 1007 bad close reason). :func:`frame` builds one frame (masked with the 4 bytes the caller
drew, or not); :func:`close_payload` and :func:`parse_close` the body of a close frame.

Invariants: the reader holds at most the unread bytes it was fed plus one partial message
(``max_size`` + 14 bytes of header); the payload it hands out is unmasked and owned by the
caller; it never reads past a frame it refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from microsync.errors import RemoteProtocolError

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover (websockets built without its C extension)
    from websockets.utils import apply_mask

__all__ = [
    "MAX_CONTROL",
    "CloseCode",
    "Frame",
    "FrameError",
    "FrameReader",
    "Opcode",
    "close_payload",
    "frame",
    "parse_close",
]

MAX_CONTROL: Final = 125
"""The largest payload of a control frame (RFC 6455 5.5)."""


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """The close codes this library sends (RFC 6455 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011


_OPCODES: Final = frozenset(int(op) for op in Opcode)
_CONTROL: Final = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
# codes a peer may put in a close frame: 1000-1014 less the three reserved for local use, and
# the registered / private ranges
_RESERVED_CODES: Final = frozenset({1004, 1005, 1006})


class FrameError(RemoteProtocolError):
    """The peer broke a framing rule; ``code`` is the close code to answer with."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole data message (TEXT or BINARY, fragments joined) or one control frame."""

    opcode: Opcode
    payload: bytes


class FrameReader:
    """Frames from one peer: ``masked`` says whether that peer must mask (it is a client)."""

    def __init__(self, *, masked: bool, max_size: int) -> None:
        self._masked, self._max_size = masked, max_size
        self._buffer = bytearray()
        self._start = 0  # where the next frame begins in the buffer
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self._fragment_size = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet handed out as frames."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        """Add bytes that arrived."""
        if self._start:
            del self._buffer[: self._start]  # O(1) at the front of a bytearray
            self._start = 0
        self._buffer += data

    def next(self) -> Frame | None:
        """The next whole message or control frame; ``None`` until more bytes arrive.
        :class:`FrameError` if the peer broke a rule (then stop reading)."""
        while True:
            got = self._frame()
            if got is None:
                return None
            fin, opcode, payload = got
            if opcode in _CONTROL:
                return Frame(opcode, payload)
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                return message

    def _frame(self) -> tuple[bool, Opcode, bytes] | None:
        buffer, start = self._buffer, self._start
        available = len(buffer) - start
        if available < 2:
            return None
        first, second = buffer[start], buffer[start + 1]
        opcode, length = self._check_header(first, second)
        offset = 2
        if length == 126:
            offset, length = 4, int.from_bytes(buffer[start + 2 : start + 4], "big")
        elif length == 127:
            offset, length = 10, int.from_bytes(buffer[start + 2 : start + 10], "big")
        if available < offset:
            return None
        self._check_length(opcode, length)
        mask_end = offset + 4 if self._masked else offset
        end = mask_end + length
        if available < end:
            return None
        with memoryview(buffer) as view:
            body = view[start + mask_end : start + end]
            if self._masked:
                payload = apply_mask(body, bytes(view[start + offset : start + mask_end]))
            else:
                payload = bytes(body)
            body.release()
        self._start = start + end
        return bool(first & 0x80), opcode, payload

    def _check_header(self, first: int, second: int) -> tuple[Opcode, int]:
        if first & 0x70:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        if first & 0x0F not in _OPCODES:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "unknown opcode")
        opcode = Opcode(first & 0x0F)
        if bool(second & 0x80) != self._masked:
            wrong = "an unmasked frame from a client" if self._masked else "a masked frame"
            raise FrameError(CloseCode.PROTOCOL_ERROR, wrong)
        if opcode in _CONTROL and not first & 0x80:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        return opcode, second & 0x7F

    def _check_length(self, opcode: Opcode, length: int) -> None:
        if opcode in _CONTROL:
            if length > MAX_CONTROL:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "control frame too long")
        elif self._fragment_size + length > self._max_size:
            raise FrameError(CloseCode.MESSAGE_TOO_BIG, "message too big")

    def _assemble(self, fin: bool, opcode: Opcode, payload: bytes) -> Frame | None:
        if opcode is Opcode.CONTINUATION:
            if self._fragment_opcode is None:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            opcode = self._fragment_opcode
        elif self._fragment_opcode is not None:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
        if fin and not self._fragments:
            return Frame(opcode, payload)
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            self._fragment_opcode = opcode
            return None
        whole = b"".join(self._fragments)
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        return Frame(opcode, whole)


def frame(opcode: Opcode, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One final frame of ``payload``; masked with ``mask`` (4 bytes: a client's) if given."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, length | (0x80 if mask else 0)))
    elif length < 65536:
        header = bytes((0x80 | opcode, 126 | (0x80 if mask else 0))) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127 | (0x80 if mask else 0))) + length.to_bytes(8, "big")
    if mask is None:
        return header + payload
    if len(mask) != 4:
        raise ValueError("a frame mask is 4 bytes")
    return b"".join((header, mask, apply_mask(payload, mask)))


def close_payload(code: int, reason: str = "") -> bytes:
    """The body of a close frame: ``code`` and a short UTF-8 ``reason``."""
    encoded = reason.encode()
    if len(encoded) > MAX_CONTROL - 2:
        raise ValueError("a close reason is at most 123 bytes")
    return code.to_bytes(2, "big") + encoded


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code (``None``: the peer gave none) and reason of a close frame's body;
    :class:`FrameError` if it is malformed."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close frame of one byte")
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1014 or 3000 <= code <= 4999) or code in _RESERVED_CODES:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "invalid close code")
    try:
        return code, payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
