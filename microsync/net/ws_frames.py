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
(``max_size`` + 14 bytes of header), and copies only the bytes of a frame cut between two
reads; the payload it hands out is unmasked; it never reads past a frame it refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
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
    "Payload",
    "close_payload",
    "frame",
    "frame_of_parts",
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


_OPCODES: Final = {int(op): op for op in Opcode}
_FINAL_BINARY: Final = 0x80 | Opcode.BINARY
_CONTROL: Final = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
# codes a peer may put in a close frame: 1000-1014 less the three reserved for local use, and
# the registered / private ranges
_RESERVED_CODES: Final = frozenset({1004, 1005, 1006})


class FrameError(RemoteProtocolError):
    """The peer broke a framing rule; ``code`` is the close code to answer with."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


Payload = bytes | memoryview


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole data message (TEXT or BINARY, fragments joined) or one control frame."""

    opcode: Opcode
    payload: Payload


@dataclass(frozen=True, slots=True)
class _Header:
    fin: bool
    opcode: Opcode
    mask: int  # where the mask (or, unmasked, the payload) starts, from the frame's start
    body: int  # where the payload starts
    size: int  # the whole frame's length


class FrameReader:
    """Frames from one peer: ``masked`` says whether that peer must mask (it is a client).
    With ``views``, an unmasked data payload is a :class:`memoryview` of the bytes fed, not a
    copy (copy what you keep); control frames and masked payloads are always ``bytes``."""

    def __init__(self, *, masked: bool, max_size: int, views: bool = False) -> None:
        self._masked, self._max_size, self._views = masked, max_size, views
        self._chunk, self._at = b"", 0  # the bytes being read, and where the next frame starts
        self._queue: deque[bytes] = deque()  # bytes fed while the chunk was still being read
        self._partial = bytearray()  # a frame begun in an earlier chunk (then _chunk is spent)
        self._fragments: list[Payload] = []
        self._fragment_opcode: Opcode | None = None
        self._fragment_size = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet handed out as frames."""
        queued = sum(len(chunk) for chunk in self._queue)
        return len(self._partial) + len(self._chunk) - self._at + queued

    def feed(self, data: bytes) -> None:
        """Add bytes that arrived. A frame that lies whole in them is never copied here; only
        the bytes of a frame cut between two reads are gathered."""
        data = bytes(data)  # no-op for bytes; a caller's bytearray could change under a view
        if self._at < len(self._chunk) or self._queue:  # fed before everything was read
            self._queue.append(data)
        else:
            self._chunk, self._at = data, 0

    def next(self) -> Frame | None:
        """The next whole message or control frame; ``None`` until more bytes arrive.
        :class:`FrameError` if the peer broke a rule (then stop reading)."""
        chunk, start = self._chunk, self._at
        if len(chunk) - start >= 14 and chunk[start] == _FINAL_BINARY and not self._partial:
            whole = self._whole_binary(chunk, start)  # the bulk of the traffic
            if whole is not None:
                return whole
        while True:
            got = self._from_partial() if self._partial else self._from_chunk()
            if got is None:  # this chunk is spent
                if not self._queue:
                    return None
                self._chunk, self._at = self._queue.popleft(), 0
                continue
            fin, opcode, payload = got
            if opcode in _CONTROL:
                return Frame(opcode, payload)
            message = self._assemble(fin, opcode, payload)
            if message is not None:
                return message

    def _whole_binary(self, chunk: bytes, start: int) -> Frame | None:
        """A final binary frame lying whole in ``chunk`` at ``start``, read in one step;
        ``None`` (and nothing read) for anything else, which the general path reads."""
        second = chunk[start + 1]
        if self._fragment_opcode is not None or bool(second & 0x80) != self._masked:
            return None
        code = second & 0x7F
        if code == 127:
            offset, length = 10, int.from_bytes(chunk[start + 2 : start + 10], "big")
        elif code == 126:
            offset, length = 4, int.from_bytes(chunk[start + 2 : start + 4], "big")
        else:
            offset, length = 2, code
        body = start + offset + 4 if self._masked else start + offset
        end = body + length
        if length > self._max_size or end > len(chunk):
            return None
        self._at = end
        view = memoryview(chunk)[body:end]
        if self._masked:
            return Frame(Opcode.BINARY, apply_mask(view, chunk[body - 4 : body]))
        return Frame(Opcode.BINARY, view if self._views else bytes(view))

    def _from_chunk(self) -> tuple[bool, Opcode, Payload] | None:
        chunk, start = self._chunk, self._at
        header = self._header(chunk, start)
        if header is not None and start + header.size <= len(chunk):
            self._at = start + header.size
            return self._take(chunk, start, header)
        if start < len(chunk):  # a frame that goes on in the next read: gather it
            self._partial = bytearray(memoryview(chunk)[start:])
        self._chunk, self._at = b"", 0
        return None

    def _from_partial(self) -> tuple[bool, Opcode, Payload] | None:
        partial, chunk, at = self._partial, self._chunk, self._at
        while (header := self._header(partial, 0)) is None:
            if at >= len(chunk):
                self._at = at
                return None
            partial.append(chunk[at])  # the header, byte by byte: never past this frame
            at += 1
        take = min(header.size - len(partial), len(chunk) - at)
        partial += memoryview(chunk)[at : at + take]
        self._at = at + take
        if len(partial) < header.size:
            return None
        self._partial = bytearray()
        return self._take(partial, 0, header)

    def _header(self, buffer: bytes | bytearray, start: int) -> _Header | None:
        """The header of the frame at ``start`` once it is all in; checked first."""
        available = len(buffer) - start
        if available < 2:
            return None
        first = buffer[start]
        opcode, length = self._check_header(first, buffer[start + 1])
        offset = 2
        if length == 126:
            offset = 4
        elif length == 127:
            offset = 10
        mask_end = offset + 4 if self._masked else offset
        if available < mask_end:
            return None
        if offset > 2:
            length = int.from_bytes(buffer[start + 2 : start + offset], "big")
        self._check_length(opcode, length)
        return _Header(bool(first & 0x80), opcode, offset, mask_end, mask_end + length)

    def _take(
        self, buffer: bytes | bytearray, start: int, header: _Header
    ) -> tuple[bool, Opcode, Payload]:
        body = memoryview(buffer)[start + header.body : start + header.size]
        payload: Payload
        if self._masked:
            mask = bytes(buffer[start + header.mask : start + header.body])
            payload = apply_mask(body, mask)
        elif self._views and header.opcode not in _CONTROL:
            payload = body
        else:
            payload = bytes(body)
        return header.fin, header.opcode, payload

    def _check_header(self, first: int, second: int) -> tuple[Opcode, int]:
        if first & 0x70:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set")
        opcode = _OPCODES.get(first & 0x0F)
        if opcode is None:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "unknown opcode")
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

    def _assemble(self, fin: bool, opcode: Opcode, payload: Payload) -> Frame | None:
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


def frame(opcode: Opcode, payload: Payload, *, mask: bytes | None = None) -> bytes:
    """One final frame of ``payload``; masked with ``mask`` (4 bytes: a client's) if given."""
    if mask is not None:
        return frame_of_parts(opcode, (payload,), mask=mask)
    length = len(payload)
    if length < 126:
        return b"".join((bytes((0x80 | opcode, length)), payload))
    if length < 65536:
        return b"".join((bytes((0x80 | opcode, 126)), length.to_bytes(2, "big"), payload))
    return b"".join((bytes((0x80 | opcode, 127)), length.to_bytes(8, "big"), payload))


def frame_of_parts(opcode: Opcode, parts: Sequence[Payload], *, mask: bytes | None = None) -> bytes:
    """One final frame whose payload is ``parts`` joined, built with one copy of each part
    (each masked where it falls: the mask turns with the part's offset)."""
    length = sum(len(part) for part in parts)
    bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((0x80 | opcode, bit | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, bit | 127)) + length.to_bytes(8, "big")
    if mask is None:
        return b"".join((header, *parts))
    if len(mask) != 4:
        raise ValueError("a frame mask is 4 bytes")
    out, offset = [header, mask], 0
    for part in parts:
        turn = offset % 4
        out.append(apply_mask(part, mask[turn:] + mask[:turn]) if part else b"")
        offset += len(part)
    return b"".join(out)


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
