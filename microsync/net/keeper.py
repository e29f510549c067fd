"""The keeper server: a WebSocket front for :class:`~microsync.storage.keeper_store.KeeperStore`.

Theory of operation
-------------------
Each WebSocket connection gets a fresh challenge and its own
:class:`~microsync.protocol.keeper_session.KeeperRules`; every binary message is decoded
strictly, checked by the rules, and the resulting store action runs on the store. Writes go to
a :class:`~microsync.storage.keeper_writer.KeeperWriter` (its own SQLite connection on its own
thread): pushes that arrive together, from any connections, commit in one transaction, and each
connection's STORED is sent only once its items' commit is on disk. Reads use a second
connection on the event loop, which never waits for a commit. A PULL streams its page one ITEM
message at a time, each read from the store just before it is sent and each send awaiting the
client's socket (back-pressure):
memory per connection is bounded by websockets' ``max_queue`` incoming messages and
``write_limit`` outgoing bytes, plus one item.

Retention: items older than ``retention`` seconds are never served and are purged by a sweep
every ``retention / 8`` seconds (at most hourly) and at start. A malformed message, a request
out of order or too many bad proofs gets ERROR and a hang-up; nothing is logged but counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from microsync.clock import now_ms
from microsync.errors import DecodeError
from microsync.group.mailbox import CHALLENGE_SIZE, ItemId, SealedItem
from microsync.net.limits import ConnectionQuota, peer_address, refuse_when_full
from microsync.net.relay import Flow
from microsync.protocol.keeper import (
    BATCH_BYTES,
    ITEM_ROOM,
    MAX_BATCH,
    MAX_MESSAGE,
    ClientMessage,
    Delete,
    End,
    Error,
    ErrorCode,
    Items,
    KeeperMessage,
    Prove,
    Pull,
    Push,
    Refusal,
    Refused,
    Stored,
    decode,
    encode,
)
from microsync.protocol.keeper import Deleted as DeletedMessage
from microsync.protocol.keeper_session import (
    Action,
    ConnectionLimits,
    KeeperRules,
    Purge,
    Read,
    Store,
)
from microsync.storage.keeper_store import ItemRef, KeeperFull, KeeperStore, MailboxFull
from microsync.storage.keeper_writer import KeeperWriter

__all__ = ["KeeperLimits", "KeeperServer", "run_keeper"]

log = logging.getLogger(__name__)

Tap = Callable[[Flow, bytes], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeeperLimits:
    """A keeper's caps and timers."""

    mailbox_quota: int = 1 << 30
    """Bytes of payload one mailbox may hold."""
    mailbox_items: int = 1 << 20
    max_bytes: int | None = None
    """Cap on the database file (``None``: the disk is the cap)."""
    retention: float | None = None
    """Seconds an item is kept (``None``: until deleted)."""
    connection: ConnectionLimits = field(default_factory=ConnectionLimits)
    max_clients: int = 1000
    max_clients_per_address: int = 32
    idle_timeout: float = 300.0
    """Seconds a connection may stay without sending a request."""
    max_queue: int = 4
    """Incoming messages websockets buffers per connection (each at most ~1.1 MiB)."""
    live_wait: float = 50.0
    """Seconds a waiting PULL is held when nothing arrives (then END, and the client asks
    again)."""


class KeeperServer:
    """``async with KeeperServer(data_dir) as keeper: ... keeper.port``."""

    def __init__(
        self,
        data: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: KeeperLimits = KeeperLimits(),
        tap: Tap | None = None,
    ) -> None:
        """``tap(flow, message)`` sees every WebSocket message received and sent (audits)."""
        self._data, self._host, self._port, self.limits, self._tap = data, host, port, limits, tap
        self._store: KeeperStore | None = None
        self._writer: KeeperWriter | None = None
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._arrivals = _Arrivals()
        self._quota = ConnectionQuota(
            total=limits.max_clients, per_address=limits.max_clients_per_address
        )
        self.port = 0

    @property
    def store(self) -> KeeperStore:
        """The store's reading connection (the event loop's; writes go to :attr:`writer`)."""
        if self._store is None:
            raise RuntimeError("the keeper is not started")
        return self._store

    @property
    def writer(self) -> KeeperWriter:
        if self._writer is None:
            raise RuntimeError("the keeper is not started")
        return self._writer

    async def start(self) -> int:
        """Open the store, sweep expired items, listen; return the bound port."""
        if self._server is not None:
            raise RuntimeError("the keeper is already started")
        limits = self.limits

        def open_store() -> KeeperStore:
            return KeeperStore(
                self._data,
                mailbox_quota=limits.mailbox_quota,
                mailbox_items=limits.mailbox_items,
                max_bytes=limits.max_bytes,
            )

        self._writer = await KeeperWriter.open(open_store)
        try:
            self._store = open_store()  # after the writer made the schema: reads only
            await self._sweep()
            self._server = await serve(
                self._handle,
                self._host,
                self._port,
                compression=None,
                max_size=MAX_MESSAGE,
                max_queue=limits.max_queue,
                write_limit=256 * 1024,
                close_timeout=2,
                server_header=None,
                process_request=self._admit,
            )
        except BaseException:  # the port is taken, or cancelled: leave nothing open
            await self._close_store()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        if limits.retention is not None:
            self._sweeper = asyncio.create_task(self._sweep_every(limits.retention / 8))
        return self.port

    async def stop(self) -> None:
        """Close every connection, stop listening, close the store. Idempotent."""
        server, self._server = self._server, None
        sweeper, self._sweeper = self._sweeper, None
        self._arrivals.wake_all()  # waiting pulls answer END now
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if server is not None:
            server.close()
            await server.wait_closed()
        await self._close_store()

    async def _close_store(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()  # what is queued is committed first
        store, self._store = self._store, None
        if store is not None:
            store.close()

    async def __aenter__(self) -> KeeperServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- retention ---------------------------------------------------------------------------

    def _oldest_kept_ms(self) -> int:
        if self.limits.retention is None:
            return 0
        return now_ms() - int(self.limits.retention * 1000)

    async def _sweep(self) -> None:
        if self.limits.retention is not None:
            oldest = self._oldest_kept_ms()
            gone = await self.writer.run(lambda store: store.expire(oldest))
            if gone:
                log.info("keeper: %d expired items purged", gone)

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(min(max(interval, 0.05), 3600.0))
            await self._sweep()

    # --- one connection ----------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the opening handshake once the connection quota is full (HTTP 503) or
        full for the client's address (429)."""
        return refuse_when_full(connection, self._quota, "keeper busy")

    async def _handle(self, conn: ServerConnection) -> None:
        address = peer_address(conn)
        if self._quota.admit(address) is not None:
            await self._hang_up(conn, ErrorCode.BUSY)
            return
        try:
            rules = KeeperRules(
                os.urandom(CHALLENGE_SIZE), self.store.keeper_id, self.limits.connection
            )
            await self._serve(conn, rules)
        except ConnectionClosed:
            pass
        finally:
            self._quota.release(address)

    async def _serve(self, conn: ServerConnection, rules: KeeperRules) -> None:
        await self._send(conn, rules.hello())
        while True:
            try:
                async with asyncio.timeout(self.limits.idle_timeout):
                    raw = await conn.recv()
                if isinstance(raw, str):
                    raise DecodeError("text message")
                self._seen(Flow.RECEIVED, raw)
                answer = rules.receive(_from_client(raw))
            except (DecodeError, TimeoutError) as error:
                idle = isinstance(error, TimeoutError)
                await self._hang_up(conn, ErrorCode.IDLE if idle else ErrorCode.MALFORMED)
                return
            if isinstance(answer, Error):
                await self._hang_up(conn, answer.code)
                return
            if isinstance(answer, Store | Read | Purge):
                await self._perform(conn, answer)
            else:
                await self._send(conn, answer)

    async def _perform(self, conn: ServerConnection, action: Action) -> None:
        match action:
            case Store(request=request, mailbox=mailbox, items=items):
                await self._send(conn, await self._store_items(request, mailbox, items))
            case Read():
                await self._stream(conn, action)
            case Purge(request=request, mailbox=mailbox, items=items):
                count = await self.writer.run(lambda store: store.delete(mailbox, items))
                await self._send(conn, DeletedMessage(request=request, count=count))
            case _:
                assert_never(action)

    async def _store_items(
        self, request: int, mailbox: bytes, items: tuple[SealedItem, ...]
    ) -> KeeperMessage:
        pairs = [(item.id, item.payload) for item in items]
        try:
            stored = await self.writer.put(mailbox, pairs, now_ms())
        except MailboxFull:
            return Refused(request=request, code=Refusal.MAILBOX_FULL)
        except KeeperFull:
            return Refused(request=request, code=Refusal.KEEPER_FULL)
        cursors, duplicates = zip(*stored, strict=True)
        if not all(duplicates):
            self._arrivals.arrived(mailbox)
        return Stored(request=request, cursors=cursors, duplicates=duplicates)

    async def _stream(self, conn: ServerConnection, read: Read) -> None:
        """One page, in ITEMS messages of at most one bucket: each batch read from disk just
        before it is sent. A waiting pull with nothing to send first waits for an arrival."""
        refs = self._page(read)
        if not refs and read.wait and self._server is not None:
            await self._until_arrival(conn, read.mailbox)
            refs = self._page(read)
        for batch in _batches(refs[: read.limit]):
            payloads = self.store.payloads(read.mailbox, [ref.cursor for ref in batch])
            found = [ref for ref in batch if ref.cursor in payloads]  # not deleted meanwhile
            if found:
                cursors = tuple(ref.cursor for ref in found)
                items = tuple(
                    SealedItem(id=ItemId(ref.item), payload=payloads[ref.cursor]) for ref in found
                )
                await self._send(conn, Items(request=read.request, cursors=cursors, items=items))
        await self._send(conn, End(request=read.request, more=len(refs) > read.limit))

    def _page(self, read: Read) -> list[ItemRef]:
        return self.store.page(
            read.mailbox,
            after=read.after,
            before=read.before,
            newest_first=read.newest_first,
            limit=read.limit + 1,
            not_before_ms=self._oldest_kept_ms(),
        )

    async def _until_arrival(self, conn: ServerConnection, mailbox: bytes) -> None:
        """Until an item lands in ``mailbox``, the client goes, the keeper stops, or
        ``live_wait`` passes, whichever is first."""
        with self._arrivals.waiting(mailbox) as arrival:
            waits = [
                asyncio.ensure_future(arrival.wait()),
                asyncio.ensure_future(conn.wait_closed()),
            ]
            try:
                await asyncio.wait(
                    waits, timeout=self.limits.live_wait, return_when=FIRST_COMPLETED
                )
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    async def _send(self, conn: ServerConnection, message: KeeperMessage) -> None:
        raw = encode(message)
        self._seen(Flow.SENT, raw)
        await conn.send(raw)

    def _seen(self, flow: Flow, raw: bytes) -> None:
        if self._tap is not None:
            self._tap(flow, raw)

    async def _hang_up(self, conn: ServerConnection, code: ErrorCode) -> None:
        log.info("keeper client refused: %s", code.name)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(self._send(conn, Error(code=code)), 1.0)
            await asyncio.wait_for(conn.close(1008, code.name.lower()), 2.0)


class _Arrivals:
    """One event per mailbox that someone waits on, set (and forgotten) when an item lands;
    forgotten too when its last waiter leaves, so waiting costs nothing afterwards."""

    def __init__(self) -> None:
        self._events: dict[bytes, tuple[asyncio.Event, int]] = {}

    @contextlib.contextmanager
    def waiting(self, mailbox: bytes) -> Iterator[asyncio.Event]:
        event, count = self._events.get(mailbox, (asyncio.Event(), 0))
        self._events[mailbox] = (event, count + 1)
        try:
            yield event
        finally:
            current = self._events.get(mailbox)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[mailbox]
                else:
                    self._events[mailbox] = (event, current[1] - 1)

    def arrived(self, mailbox: bytes) -> None:
        entry = self._events.pop(mailbox, None)
        if entry is not None:
            entry[0].set()

    def wake_all(self) -> None:
        for event, _ in self._events.values():
            event.set()
        self._events.clear()


def _batches(refs: list[ItemRef]) -> Iterator[list[ItemRef]]:
    """``refs`` cut into runs that fit one ITEMS message."""
    batch: list[ItemRef] = []
    size = 0
    for ref in refs:
        if batch and (len(batch) == MAX_BATCH or size + ref.size + ITEM_ROOM > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(ref)
        size += ref.size + ITEM_ROOM
    if batch:
        yield batch


def _from_client(raw: bytes) -> ClientMessage:
    message = decode(raw, from_client=True)
    if not isinstance(message, Prove | Push | Pull | Delete):  # pragma: no cover (decode)
        raise DecodeError("a keeper message from a client")
    return message


async def run_keeper(
    data: Path,
    host: str,
    port: int,
    *,
    limits: KeeperLimits = KeeperLimits(),
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run a keeper on ``host:port`` with its state in ``data`` until cancelled."""
    async with KeeperServer(data, host, port, limits=limits) as keeper:
        if ready is not None:
            ready(keeper.port)
        await asyncio.Event().wait()
