"""A byte stream between two devices, whatever carries it (TCP, a relay channel).

The connection runner (:mod:`microsync.net.connection`) speaks the Noise handshake and the sync
session over a :class:`Stream`; the TCP adapter here and the relay client each provide one, so
the same end-to-end session runs over both.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["READ_SIZE", "Stream", "TcpStream", "open_tcp"]

READ_SIZE = 256 * 1024


class Stream(Protocol):
    """An ordered, reliable byte stream."""

    @property
    def peer(self) -> str:
        """Where the other end is, for logs ("127.0.0.1:7425", "relay")."""
        ...

    async def read(self) -> bytes:
        """The next bytes that arrived (any amount); ``b""`` once the other end closed."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data`` (waits while the transport's buffer is full: back-pressure)."""
        ...

    async def close(self) -> None:
        """Close this end. Idempotent; never raises."""
        ...


class TcpStream:
    """A :class:`Stream` over an asyncio TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        name = writer.get_extra_info("peername")
        self._peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name)
        self._closed = False

    @property
    def peer(self) -> str:
        return self._peer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionResetError("stream closed")
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
        except OSError:  # reset, or no goodbye within the second: closed anyway
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: say so
            # else the transport's close waiter was cancelled under us: the stream is closed

    def __repr__(self) -> str:
        return f"TcpStream({self._peer})"


async def open_tcp(host: str, port: int, *, timeout: float = 10.0) -> TcpStream:
    """Connect to ``host:port`` (``OSError``/``TimeoutError`` if unreachable)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    return TcpStream(reader, writer)
