"""Frames on the wire and records inside them (sans-IO).

Theory of operation
-------------------
Everything microsync writes to a stream, the cleartext preamble, the Noise handshake messages
and every transport message, is a **frame**: a 2-byte big-endian length, then that many bytes.
A transport frame's body is one Noise message, at most 65,535 bytes, so it carries at most
65,519 bytes of plaintext.

A **record** is what the layer above sends: any byte string up to a maximum record size. Its
plaintext is cut into **chunks**, each sent as one Noise message whose plaintext is one flag
byte and the chunk::

    plaintext = flag (0x00: more chunks follow, 0x01: last chunk) || chunk

Every chunk but the last carries exactly :data:`MAX_CHUNK_SIZE` bytes, so a record has exactly
one encoding and the reader can reject any other. The flag is inside the encrypted, ordered
Noise stream, so a record cannot be cut short or spliced without a decryption failure.

:class:`FrameDecoder` is fed arbitrary slices and hands out complete frame bodies one at a time
(a truncated frame just waits for more bytes); a length above the limit is a
:class:`~microsync.errors.RemoteProtocolError`. :class:`RecordAssembler` joins chunk plaintexts
into records, bounding memory by the record limit. :class:`SecureChannel` puts the three
together over the two CipherStates a finished handshake gives: ``encrypt_record`` returns
frames ready to write, ``feed`` returns whole decrypted records. Any failure on the receiving
side (a frame that does not decrypt, a bad length or flag, an oversized record) closes the
channel for good: the failed frame does not advance the nonce, and every later call raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from microsync.errors import LocalProtocolError, MicrosyncError, RemoteProtocolError
from microsync.protocol.noise import MAX_MESSAGE_SIZE, MAX_PLAINTEXT_SIZE, CipherState

__all__ = [
    "DEFAULT_MAX_RECORD_SIZE",
    "FLAG_LAST",
    "FLAG_MORE",
    "LENGTH_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_FRAME_SIZE",
    "FrameDecoder",
    "RecordAssembler",
    "SecureChannel",
    "chunk_record",
    "encode_frame",
]

LENGTH_SIZE: Final = 2
MAX_FRAME_SIZE: Final = MAX_MESSAGE_SIZE
MAX_CHUNK_SIZE: Final = MAX_PLAINTEXT_SIZE - 1
FLAG_MORE: Final = 0x00
FLAG_LAST: Final = 0x01
DEFAULT_MAX_RECORD_SIZE: Final = 4 * 1024 * 1024
_FLAGS: Final = (bytes((FLAG_MORE,)), bytes((FLAG_LAST,)))


def encode_frame(body: bytes) -> bytes:
    """``len(body)`` as 2 bytes big-endian, then ``body`` (at most 65,535 bytes)."""
    if len(body) > MAX_FRAME_SIZE:
        raise LocalProtocolError(f"a frame carries at most {MAX_FRAME_SIZE} bytes")
    return len(body).to_bytes(LENGTH_SIZE, "big") + body


class FrameDecoder:
    """Splits a byte stream into frame bodies. Feed it any slices; it never blocks.

    When everything fed so far was consumed, new bytes are kept as they are and frames are
    cut out of them without a copy; only a partial frame left over is copied, into a growing
    ``bytearray`` (so feeding one byte at a time stays linear).
    """

    __slots__ = ("_buffer", "_start", "max_frame_size")

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._buffer: bytes | bytearray = b""
        self._start = 0  # bytes before this offset were handed out
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their frame."""
        return len(self._buffer) - self._start

    def append(self, data: bytes) -> None:
        """Add bytes from the stream; take frames out with :meth:`next_frame`."""
        if self._start == len(self._buffer):
            self._buffer, self._start = bytes(data), 0
            return
        if isinstance(self._buffer, bytes) or self._start:
            self._buffer, self._start = bytearray(memoryview(self._buffer)[self._start :]), 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or ``None`` until more bytes arrive."""
        view = self.next_frame_view()
        return None if view is None else bytes(view)

    def next_frame_view(self) -> memoryview | None:
        """Like :meth:`next_frame`, as a read-only view over immutable bytes (often no copy)."""
        buffer, start = self._buffer, self._start
        if len(buffer) - start < LENGTH_SIZE:
            return None
        size = (buffer[start] << 8) | buffer[start + 1]
        if size > self.max_frame_size:
            raise RemoteProtocolError(f"frame length above the limit of {self.max_frame_size}")
        end = start + LENGTH_SIZE + size
        if len(buffer) < end:
            return None
        self._start = end
        if isinstance(buffer, bytes):
            return memoryview(buffer)[start + LENGTH_SIZE : end]
        with memoryview(buffer) as view:
            return memoryview(bytes(view[start + LENGTH_SIZE : end]))

    def feed(self, data: bytes) -> list[bytes]:
        """:meth:`append` then every complete frame body, in order."""
        self.append(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def __repr__(self) -> str:
        return f"FrameDecoder(buffered={self.buffered})"


def chunk_record(record: bytes, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> Iterator[bytes]:
    """The chunk plaintexts (flag byte first) that carry ``record``; at least one.

    The size is checked at once; the chunks are made one at a time, as they are encrypted.
    """
    if len(record) > max_record_size:
        raise LocalProtocolError(f"a record is at most {max_record_size} bytes")
    view = memoryview(record)
    starts = range(0, max(len(record), 1), MAX_CHUNK_SIZE)
    last = starts[-1]
    return (_FLAGS[start == last] + view[start : start + MAX_CHUNK_SIZE] for start in starts)


class RecordAssembler:
    """Joins chunk plaintexts back into records, refusing anything :func:`chunk_record`
    would not have written, and records above ``max_record_size``."""

    __slots__ = ("_parts", "_size", "max_record_size")

    def __init__(self, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        self.max_record_size = max_record_size
        self._parts: list[memoryview] = []  # chunks of the record so far, flag bytes cut off
        self._size = 0

    @property
    def partial(self) -> bool:
        """Whether a record has started but its last chunk has not arrived."""
        return bool(self._parts)

    def add(self, plaintext: bytes) -> bytes | None:
        """Take one chunk plaintext; the whole record once its last chunk is in."""
        if not plaintext or plaintext[0] not in (FLAG_MORE, FLAG_LAST):
            raise RemoteProtocolError("a record chunk has an unknown flag")
        chunk = memoryview(plaintext)[1:]
        if plaintext[0] == FLAG_MORE and len(chunk) != MAX_CHUNK_SIZE:
            raise RemoteProtocolError("a record chunk before the last is not full")
        self._size += len(chunk)
        if self._size > self.max_record_size:
            raise RemoteProtocolError(f"a record is above the limit of {self.max_record_size}")
        if plaintext[0] == FLAG_MORE:
            self._parts.append(chunk)
            return None
        record = b"".join([*self._parts, chunk]) if self._parts else bytes(chunk)
        self._parts, self._size = [], 0
        return record

    def __repr__(self) -> str:
        return f"RecordAssembler(buffered={self._size})"


class SecureChannel:
    """An encrypted, framed, record-oriented channel over a finished Noise handshake."""

    __slots__ = ("_assembler", "_closed", "_decoder", "_receive", "_send", "handshake_hash")

    def __init__(
        self,
        send: CipherState,
        receive: CipherState,
        *,
        handshake_hash: bytes,
        decoder: FrameDecoder | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self._send, self._receive = send, receive
        self._decoder = decoder if decoder is not None else FrameDecoder()
        self._decoder.max_frame_size = MAX_FRAME_SIZE
        self._assembler = RecordAssembler(max_record_size)
        self._closed = False
        self.handshake_hash = handshake_hash
        """The Noise handshake hash: not secret, unique to this session (channel binding)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def encrypt_record(self, record: bytes) -> bytes:
        """The frames that carry ``record``, ready to write to the stream."""
        self._check_open()
        parts: list[bytes] = []
        for plaintext in chunk_record(record, self._assembler.max_record_size):
            ciphertext = self._send.encrypt_with_ad(b"", plaintext)
            parts += (len(ciphertext).to_bytes(LENGTH_SIZE, "big"), ciphertext)
        return b"".join(parts)

    def feed(self, data: bytes) -> list[bytes]:
        """Take bytes from the stream; return every record they complete, in order.

        ``feed(b"")`` returns records already buffered (for example bytes that arrived in the
        same read as the end of the handshake).
        """
        self._check_open()
        self._decoder.append(data)
        records = []
        while (record := self.next_record()) is not None:
            records.append(record)
        return records

    def next_record(self) -> bytes | None:
        """The next whole record from the bytes already fed, or ``None``."""
        self._check_open()
        try:
            while (frame := self._decoder.next_frame_view()) is not None:
                record = self._assembler.add(self._receive.decrypt_with_ad(b"", frame))
                if record is not None:
                    return record
        except MicrosyncError:
            self._closed = True
            raise
        return None

    def receive_eof(self) -> None:
        """The stream ended: raise :class:`RemoteProtocolError` if it cut a frame or record."""
        if self._decoder.buffered or self._assembler.partial:
            self._closed = True
            raise RemoteProtocolError("the stream ended inside a frame or record")

    def close(self) -> None:
        """Refuse any further use."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the secure channel is closed")

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SecureChannel({state}, sent={self._send.nonce}, received={self._receive.nonce})"
