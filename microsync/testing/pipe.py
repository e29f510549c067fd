"""An in-memory byte stream pair with fault injection: what :class:`~microsync.testing.AppKit`
runs real handshakes and real sync sessions over.

A :class:`MemoryStream` is a :class:`~microsync.net.stream.Stream` (ordered and reliable while
it lasts, like TCP). The faults a byte stream can have are the ones a TCP connection has: it
is slow (``delay``: each write waits up to that many real milliseconds, drawn from the seed),
or it is cut (``cut_after``: after that many bytes both ends see the connection reset, and
what was in flight is lost). Whole-message loss, reordering and duplication are what a relay
or LAN does *between* connections; the kit models them by which pairs sync, in which order,
and which connections are cut (see :mod:`microsync.testing.kit`).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

__all__ = ["MemoryStream", "PipeFaults", "memory_pipe"]


@dataclass(slots=True)
class PipeFaults:
    """The faults of one pipe (both directions): ``cut_after`` bytes in total (``None``: never
    cut), and each write delayed by up to ``delay_ms`` real milliseconds."""

    cut_after: int | None = None
    delay_ms: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    sent: int = 0
    cut: bool = False


class MemoryStream:
    """One end of an in-memory pipe (see the module docstring)."""

    def __init__(self, name: str, faults: PipeFaults) -> None:
        self._name = name
        self._faults = faults
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._other: MemoryStream | None = None
        self._closed = False

    @property
    def peer(self) -> str:
        return f"memory:{self._name}"

    @property
    def was_cut(self) -> bool:
        """The pipe was cut by its faults (not closed by either end)."""
        return self._faults.cut

    async def read(self) -> bytes:
        if self._closed:
            return b""
        return await self._inbox.get()  # b"" once the other end closed or the pipe was cut

    async def write(self, data: bytes) -> None:
        faults, other = self._faults, self._other
        if self._closed or faults.cut or other is None or other._closed:
            raise ConnectionResetError("memory pipe closed")
        if faults.delay_ms > 0:
            await asyncio.sleep(faults.rng.uniform(0, faults.delay_ms) / 1000)
        else:
            await asyncio.sleep(0)  # let the other side run: interleaving as on a wire
        if faults.cut:
            raise ConnectionResetError("memory pipe cut")
        if faults.cut_after is not None and faults.sent + len(data) > faults.cut_after:
            keep = faults.cut_after - faults.sent
            faults.sent, faults.cut = faults.cut_after, True
            if keep > 0:
                other._inbox.put_nowait(data[:keep])  # a cut record: the peer sees it broken
            other._inbox.put_nowait(b"")
            self._inbox.put_nowait(b"")
            raise ConnectionResetError("memory pipe cut")
        faults.sent += len(data)
        other._inbox.put_nowait(bytes(data))

    def cut(self) -> None:
        """Cut the pipe now, as its faults would: both ends see the connection reset."""
        if not self._faults.cut:
            self._faults.cut = True
            self._inbox.put_nowait(b"")
            if self._other is not None:
                self._other._inbox.put_nowait(b"")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put_nowait(b"")
        if self._other is not None:
            self._other._inbox.put_nowait(b"")

    def __repr__(self) -> str:
        return f"MemoryStream({self._name!r})"


def memory_pipe(
    a: str, b: str, faults: PipeFaults | None = None
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends: ``a``'s end (whose peer is ``b``) and ``b``'s end."""
    shared = faults if faults is not None else PipeFaults()
    end_a, end_b = MemoryStream(b, shared), MemoryStream(a, shared)
    end_a._other, end_b._other = end_b, end_a
    return end_a, end_b
