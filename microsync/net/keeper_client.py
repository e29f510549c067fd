"""The async keeper client: connect, prove mailboxes, push, pull (either way), delete.

Theory of operation
-------------------
A :class:`KeeperClient` is one WebSocket connection to one keeper, driven by the sans-IO
:class:`~microsync.protocol.keeper_session.ClientMachine`. Every operation names a
:class:`~microsync.group.mailbox.Mailbox` (one epoch of one group); the client proves it on
first use on this connection. Records are sealed here, so the keeper receives only padded
ciphertext under opaque ids.

Resumable both ways, at item granularity:

* **push**: records go in batches (one PUSH, one commit, up to 64 items) with a few batches
  in flight. :meth:`KeeperClient.push` returns (and reports through ``on_stored``) the cursor
  of each record the keeper has committed. A caller that lost the connection pushes again what
  it was not told was stored; the keeper answers a record it already holds with its cursor
  (``duplicate``), so a retry never duplicates anything.
* **pull**: :meth:`KeeperClient.pull` yields items oldest first after a cursor and
  :meth:`KeeperClient.pull_newest` newest first before one. A caller that remembers the last
  cursor it processed (with :attr:`KeeperClient.keeper_id`) resumes exactly there; cursors are
  never reused by one keeper database, and another database has another id.

Memory is bounded whatever a mailbox holds: a pull asks a few pages at a time and yields each
item as it arrives (websockets' ``max_queue`` bounds what is buffered). One operation at a time:
a second one started while a pull is being iterated raises ``LocalProtocolError``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from microsync.crypto.random import Rng, system_rng
from microsync.errors import DecryptionError, LocalProtocolError, RemoteProtocolError
from microsync.group.mailbox import ItemId, Mailbox, MailboxId, SealedItem
from microsync.net.keeper_pages import Pages, Stalls, advance, check_order, expect, refusal
from microsync.protocol.keeper import (
    BATCH_BYTES,
    ITEM_ROOM,
    MAX_BATCH,
    MAX_DELETE,
    MAX_MESSAGE,
    MAX_PAGE,
    ClientMessage,
    Delete,
    Deleted,
    End,
    Items,
    KeeperMessage,
    KeeperRefused,
    Prove,
    Pull,
    Push,
    Refused,
    Stored,
    decode,
    encode,
)
from microsync.protocol.keeper_session import ClientMachine

__all__ = ["KeeperClient", "Pulled", "Record"]

PUSH_WINDOW: Final = 4
"""PUSH messages in flight before the client waits for the first answer."""
PULL_AHEAD: Final = 3
"""Pages an oldest-first pull keeps asked for beyond the one being read (as ranges of cursors,
once a first page came back full)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Something to keep: ``data`` under a stable ``name`` (an entry id, a chunk address)."""

    name: bytes
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Pulled:
    """A record back from the keeper, at ``cursor`` in its mailbox."""

    cursor: int
    item: ItemId
    data: bytes


class KeeperClient:
    """``async with await KeeperClient.connect("ws://host:port") as keeper: ...``"""

    def __init__(self, conn: ClientConnection, machine: ClientMachine, rng: Rng) -> None:
        self._conn, self._machine, self._rng = conn, machine, rng
        self._proved: set[MailboxId] = set()
        self._abandoned: set[int] = set()
        self._busy = False
        self.unreadable = 0
        """Items pulled that did not open (forged by the keeper, or moved): skipped."""

    @classmethod
    async def connect(
        cls, url: str, *, timeout: float = 10.0, rng: Rng = system_rng
    ) -> KeeperClient:
        """Open a connection and wait for the keeper's challenge. (``asyncio.timeout``, not
        ``wait_for``: on Python 3.11 ``wait_for`` can swallow a cancellation that lands as the
        connection opens, and a stopping device would then wait for a watch that never ends.)"""
        async with asyncio.timeout(timeout):
            conn = await connect(
                url, compression=None, max_size=MAX_MESSAGE, max_queue=4, open_timeout=None
            )
        client = cls(conn, ClientMachine(), rng)
        try:
            async with asyncio.timeout(timeout):
                await client._receive()
        except BaseException:
            await conn.close()
            raise
        if client._machine.challenge is None:
            await conn.close()
            raise RemoteProtocolError("the keeper did not open with a challenge")
        return client

    @property
    def keeper_id(self) -> bytes:
        """The keeper database's random id: cursors kept from a connection with another id
        (a keeper whose data was wiped or replaced) must restart from 0."""
        assert self._machine.keeper is not None  # connect() waited for the challenge
        return self._machine.keeper

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> KeeperClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- operations --------------------------------------------------------------------------

    async def prove(self, mailbox: Mailbox) -> None:
        """Prove ``mailbox`` on this connection (:class:`KeeperRefused` if refused)."""
        with self._operation():
            await self._prove(mailbox)

    async def push(
        self,
        mailbox: Mailbox,
        records: Iterable[Record],
        *,
        on_stored: Callable[[Record, int], None] | None = None,
    ) -> list[int]:
        """Seal and push ``records`` (sealed as they are sent, so an iterator of any length
        is fine); their cursors, in order, once each is committed.

        ``on_stored(record, cursor)`` runs as each one is acknowledged, so a caller learns
        what is safe even if a later record is refused (:class:`KeeperRefused`) or the
        connection drops."""
        with self._operation():
            await self._prove(mailbox)
            return await self._push(mailbox, records, on_stored)

    def pull(self, mailbox: Mailbox, *, after: int = 0) -> AsyncGenerator[Pulled, None]:
        """Every item with a cursor above ``after``, oldest first (an async iterator: iterate
        it to the end, or ``aclose()`` it to stop early)."""
        return self._pull_ahead(mailbox, after)

    def watch(self, mailbox: Mailbox, *, after: int = 0) -> AsyncGenerator[Pulled, None]:
        """Every item above ``after``, then each new one as it lands, until the iterator is
        closed: live delivery (the keeper holds each request until something arrives). Use a
        client of its own for it: it is one operation that never ends."""
        return self._pull(mailbox, after=after, newest_first=False, wait=True)

    def pull_newest(
        self, mailbox: Mailbox, *, before: int = 0, limit: int | None = None
    ) -> AsyncGenerator[Pulled, None]:
        """Every item with a cursor below ``before`` (0: all), newest first; with ``limit``,
        the newest ``limit`` of them at most (nothing more is asked of the keeper)."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        return self._pull(mailbox, before=before, newest_first=True, limit=limit)

    async def delete(self, mailbox: Mailbox, names: Iterable[bytes]) -> int:
        """Purge the records named ``names``; how many the keeper held."""
        ids = [mailbox.item_id(name) for name in names]
        with self._operation():
            await self._prove(mailbox)
            gone = 0
            for start in range(0, len(ids), MAX_DELETE):
                batch = tuple(ids[start : start + MAX_DELETE])
                answer = await self._ask(
                    Delete(request=self._machine.next_request(), mailbox=mailbox.id, items=batch)
                )
                gone += expect(answer, Deleted).count
            return gone

    # --- inside ------------------------------------------------------------------------------

    def _operation(self) -> _Busy:
        return _Busy(self)

    async def _prove(self, mailbox: Mailbox) -> None:
        if mailbox.id in self._proved:
            return
        challenge = self._machine.challenge
        assert challenge is not None  # connect() waited for it
        request = self._machine.next_request()
        refusal(await self._ask(Prove(request=request, proof=mailbox.prove(challenge))))
        self._proved.add(mailbox.id)

    async def _push(
        self,
        mailbox: Mailbox,
        records: Iterable[Record],
        on_stored: Callable[[Record, int], None] | None,
    ) -> list[int]:
        cursors: list[int] = []
        in_flight: deque[tuple[int, list[Record]]] = deque()
        refusals: list[KeeperRefused] = []

        async def settle() -> None:
            request, batch = in_flight.popleft()
            answer = await self._answer(request)
            if isinstance(answer, Refused):
                refusals.append(KeeperRefused(answer.code))
                return
            for record, cursor in zip(batch, expect(answer, Stored).cursors, strict=True):
                cursors.append(cursor)
                if on_stored is not None:
                    on_stored(record, cursor)

        for batch, sealed in self._batches(mailbox, records):
            if refusals:
                break
            push = Push(request=self._machine.next_request(), mailbox=mailbox.id, items=sealed)
            await self._send(push)
            in_flight.append((push.request, batch))
            if len(in_flight) >= PUSH_WINDOW:
                await settle()
        while in_flight:
            await settle()
        if refusals:
            raise refusals[0]
        return cursors

    def _batches(
        self, mailbox: Mailbox, records: Iterable[Record]
    ) -> Iterator[tuple[list[Record], tuple[SealedItem, ...]]]:
        """Records sealed and grouped into PUSH messages (at most ``MAX_BATCH`` items, one
        largest bucket), sealed only as they are sent."""
        batch: list[Record] = []
        sealed: list[SealedItem] = []
        size = 0
        for record in records:
            item = mailbox.seal(self._rng, record.name, record.data)
            cost = len(item.payload) + ITEM_ROOM
            if batch and (len(batch) == MAX_BATCH or size + cost > BATCH_BYTES):
                yield batch, tuple(sealed)
                batch, sealed, size = [], [], 0
            batch.append(record)
            sealed.append(item)
            size += cost
        if batch:
            yield batch, tuple(sealed)

    async def _pull(
        self,
        mailbox: Mailbox,
        *,
        after: int = 0,
        before: int = 0,
        newest_first: bool,
        wait: bool = False,
        limit: int | None = None,
    ) -> AsyncGenerator[Pulled, None]:
        """Page after page (at most ``limit`` items in all); the next page is asked for as soon
        as the current one is full (its last item names where the next starts), before its
        items are handed on, so the keeper reads and sends it while the caller works."""
        with self._operation():
            await self._prove(mailbox)
            pages, stalls = Pages(limit), Stalls()
            current = await self._ask_page(mailbox, after, before, newest_first, wait, pages)
            ahead: tuple[int, int] | None = None  # the next page, asked for before this ended
            got = 0  # items of the current page so far
            try:
                while True:
                    answer = await self._answer(current[0])
                    if not isinstance(answer, Items):
                        more = expect(refusal(answer), End).more or wait
                        stalls.answered(1 if wait else got)  # a live wait may end with none
                        if ahead is not None:  # already asked: its own END says what is left
                            current, ahead, got = ahead, None, 0
                        elif more and pages.left():
                            current = await self._ask_page(
                                mailbox, after, before, newest_first, wait, pages
                            )
                            got = 0
                        else:
                            return
                        continue
                    got += len(answer.items)
                    if ahead is None and got >= current[1] and pages.left():
                        last = answer.cursors[-1]  # the page is full: ask for the next now
                        check_order(last, after, before)
                        start, end = advance(last, after, before, newest_first)
                        ahead = await self._ask_page(mailbox, start, end, newest_first, wait, pages)
                    for cursor, item in zip(answer.cursors, answer.items, strict=True):
                        check_order(cursor, after, before)
                        after, before = advance(cursor, after, before, newest_first)
                        if (pulled := self._opened(mailbox, cursor, item)) is not None:
                            yield pulled
            except BaseException:  # stopped early, or failed: drop what is still to come
                self._drop(page[0] for page in (current, ahead) if page is not None)
                raise

    async def _pull_ahead(self, mailbox: Mailbox, after: int) -> AsyncGenerator[Pulled, None]:
        """An oldest-first pull that keeps :data:`PULL_AHEAD` pages asked for ahead.

        The first request is open-ended (a small mailbox costs one round trip). Once a page
        comes back full, the next pages are asked for as *ranges*: ``after < cursor < after +
        MAX_PAGE + 1`` holds at most :data:`MAX_PAGE` cursors, so each range is one whole page
        whatever the keeper holds, and it can be asked for before the one below it arrived.
        While ranges come back full, another is asked for as each one fills. A range short of
        its top (the end when the keeper read it, or items deleted) drops those above it, which
        may have been read after more arrived; then an open-ended request from the last cursor
        says what is left: nothing is skipped, whatever the gaps or the pushes meanwhile."""
        with self._operation():
            await self._prove(mailbox)
            asked: deque[tuple[int, int]] = deque()  # (request, its ``before``; 0: open-ended)
            top, stalls = after, Stalls()  # where the next request starts

            async def ask(ranged: bool) -> None:
                nonlocal top
                before = top + MAX_PAGE + 1 if ranged else 0
                request, _ = await self._ask_page(mailbox, top, before, False, False, Pages(None))
                asked.append((request, before))
                top += MAX_PAGE if ranged else 0

            await ask(False)
            try:
                while asked:
                    request, before = asked[0]
                    got = 0
                    while True:
                        answer = await self._answer(request)
                        if not isinstance(answer, Items):
                            break
                        got += len(answer.items)
                        if got >= MAX_PAGE and before and asked[-1][1]:
                            await ask(True)  # a whole page again: keep as many asked ahead
                        elif got >= MAX_PAGE and not before and len(asked) == 1:
                            top = answer.cursors[-1]  # full: range ahead from its last cursor
                            check_order(top, after, 0)
                            for _ in range(PULL_AHEAD):
                                await ask(True)
                        for cursor, item in zip(answer.cursors, answer.items, strict=True):
                            check_order(cursor, after, before)
                            after = cursor
                            if (pulled := self._opened(mailbox, cursor, item)) is not None:
                                yield pulled
                    more = expect(refusal(answer), End).more
                    asked.popleft()
                    stalls.answered(got)
                    if before and after < before - 1:  # short of its top: perhaps the end
                        self._drop(r for r, _ in asked)  # then; those above read after more came
                        asked.clear()
                    if not asked and (before or more):  # what is left beyond, from one read
                        top = after
                        await ask(False)
            except BaseException:  # stopped early, or failed: drop what is still to come
                self._drop(r for r, _ in asked)
                raise

    def _drop(self, requests: Iterable[int]) -> None:
        """Forget these pulls: their answers still to come are skipped."""
        self._abandoned.update(r for r in requests if r in self._machine.pending)

    def _opened(self, mailbox: Mailbox, cursor: int, item: SealedItem) -> Pulled | None:
        """``item`` opened, or None (counted) if it does not: forged or moved, skipped."""
        try:
            data = mailbox.open(item)
        except DecryptionError:
            self.unreadable += 1
            return None
        return Pulled(cursor=cursor, item=item.id, data=data)

    async def _ask_page(
        self,
        mailbox: Mailbox,
        after: int,
        before: int,
        newest_first: bool,
        wait: bool,
        pages: Pages,
    ) -> tuple[int, int]:
        """Send one PULL of the next page's size; its request number and that size."""
        pull = Pull(
            request=self._machine.next_request(),
            mailbox=mailbox.id,
            after=after,
            before=before,
            newest_first=newest_first,
            limit=pages.take(),
            wait=wait,
        )
        await self._send(pull)
        return pull.request, pull.limit

    async def _ask(self, message: ClientMessage) -> KeeperMessage:
        await self._send(message)
        return await self._answer(message.request)

    async def _send(self, message: ClientMessage) -> None:
        try:
            await self._conn.send(encode(self._machine.send(message)))
        except ConnectionClosed as exc:  # one error type for a lost keeper, as for a peer
            raise ConnectionError(f"the keeper connection closed: {exc}") from None

    async def _answer(self, request: int) -> KeeperMessage:
        """The next keeper message answering ``request`` (those of abandoned pulls dropped)."""
        while True:
            message, done = await self._receive()
            answered = getattr(message, "request", None)
            if answered in self._abandoned:
                if done:
                    self._abandoned.discard(answered)
                continue
            if answered != request:
                raise RemoteProtocolError("the keeper answered out of order")
            return message

    async def _receive(self) -> tuple[KeeperMessage, bool]:
        try:
            raw = await self._conn.recv()
        except ConnectionClosed as exc:
            raise ConnectionError(f"the keeper connection closed: {exc}") from None
        if isinstance(raw, str):
            raise RemoteProtocolError("a text message from the keeper")
        message = decode(raw, from_client=False)
        if isinstance(message, Prove | Push | Pull | Delete):  # pragma: no cover (decode)
            raise RemoteProtocolError("a client message from the keeper")
        return message, self._machine.receive(message)


class _Busy:
    """Marks a client busy for one operation; a second one at once is a caller's bug."""

    def __init__(self, client: KeeperClient) -> None:
        self._client = client

    def __enter__(self) -> None:
        if self._client._busy:
            raise LocalProtocolError("one keeper operation at a time on a client")
        self._client._busy = True

    def __exit__(self, *exc: object) -> None:
        self._client._busy = False
