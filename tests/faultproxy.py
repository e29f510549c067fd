"""A TCP proxy on 127.0.0.1 that makes a loopback connection behave like a bad network.

Every connection accepted on :attr:`FaultProxy.port` is forwarded to ``target``. Each direction
is pumped by its own task; with ``delay`` every chunk is held that many seconds after it was read
before it is written (a one-way delay: the pipe stays full, so throughput is not capped the way a
stop-and-wait delay would cap it). ``cut_after`` ends a connection once exactly that many bytes
have passed through it (both directions together): nothing more is forwarded, what passed is
delivered, then both sides are closed, usually in the middle of a record; this applies to the
next ``cuts`` connections only (``None``: every one). :meth:`cut_all` cuts every open connection
on demand with a reset (what a peer had not read yet is lost).

Counters (``accepted``, ``cuts``, ``forwarded``) let a test prove the faults happened. Everything
runs on the caller's event loop and :meth:`close` (or ``async with``) ends every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]

CHUNK = 64 * 1024


class _Link:
    """One proxied connection: two sockets and two pump tasks."""

    def __init__(self, proxy: FaultProxy, budget: int | None) -> None:
        self.proxy = proxy
        self.budget = budget
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.cut = False

    def allow(self, size: int) -> int:
        """How many of the next ``size`` bytes may pass; fewer once the budget runs out."""
        if self.budget is None:
            return size
        allowed = min(size, self.budget)
        self.budget -= allowed
        return allowed

    def abort(self) -> None:
        """Cut both sides at once with a reset, as a crashed router or a dead NAT entry does
        (what the peer had not read yet is lost)."""
        self._mark_cut()
        for writer in self.writers:
            if not writer.transport.is_closing():
                writer.transport.abort()

    def _mark_cut(self) -> None:
        if not self.cut:
            self.cut = True
            self.proxy.cuts += 1

    def end(self) -> None:
        """The budget is spent: forward nothing more, close both sides once what passed has
        been delivered (the peer reads it, then finds the stream ended inside a record)."""
        self._mark_cut()
        for writer in self.writers:
            writer.close()

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        delay = self.proxy.delay
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, data = await held.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()
            if self.budget != 0 and not writer.is_closing() and writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while not self.cut:
                data = await reader.read(CHUNK)
                passed = data[: self.allow(len(data))]
                self.proxy.forwarded += len(passed)
                if passed:
                    held.put_nowait((loop.time() + delay, passed))
                if not data or len(passed) < len(data) or self.budget == 0:
                    break
            held.put_nowait((0.0, b""))
            await sender
            if self.budget == 0:
                self.end()
        except (ConnectionError, OSError):
            self.abort()
        finally:
            sender.cancel()
            with contextlib.suppress(BaseException):
                await sender


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``target``, with a one-way ``delay`` (seconds, each
    direction) and, optionally, connections cut after ``cut_after`` bytes."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        delay: float = 0.0,
        cut_after: int | None = None,
        cuts: int | None = None,
    ) -> None:
        self.target = target
        self.delay = delay
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.port = 0
        self.accepted = 0
        self.cuts = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _budget(self) -> int | None:
        if self.cut_after is None or self.cuts_left == 0:
            return None
        if self.cuts_left is not None:
            self.cuts_left -= 1
        return self.cut_after

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(self, self._budget())
        link.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._links.add(link)
        try:
            far_reader, far_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link.writers.append(far_writer)
        try:
            link.tasks = [
                asyncio.ensure_future(link.pump(reader, far_writer)),
                asyncio.ensure_future(link.pump(far_reader, writer)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            for pump in link.tasks:
                pump.cancel()
            for side in link.writers:
                side.transport.abort()
            self._links.discard(link)
            self._tasks.discard(task)

    def cut_all(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def close(self) -> None:
        """Stop listening and cut every connection; waits for every task started here."""
        if self._server is not None:
            self._server.close()
        self.cut_all()
        for link in list(self._links):
            for pump in link.tasks:
                pump.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
