"""Vault chunk transfer in one matched group, beside entry sync (``docs/vault.md``).

Either side may ask (:meth:`ChunkTransfer.request`, at most ``max_chunks_outstanding`` ids
unanswered per group); the other answers each id once, with ``CHUNK_DATA`` or within a
``CHUNK_MISSING``, and only to a peer ``may_serve`` admits, from a host that is a
:class:`~microsync.protocol.sync.ports.ChunkHost`. An answer to an id not asked closes the
session. Chunks spend no entry credit and are legal in every phase (:data:`CHUNK_TRANSFER`),
so a fetch never waits for entry sync, nor entry sync for a fetch.

A request with ``hops`` to spare may be passed on: for an id the host lacks, a
:class:`~microsync.protocol.sync.ports.ChunkRelayHost` may take it on (``relay_chunk``) and
answer later through :meth:`ChunkTransfer.answer`; such ids are ``owed`` to the peer, at most
``max_chunks_outstanding`` at a time (beyond that, missing at once), and each is answered once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from microsync.errors import LocalProtocolError, RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.protocol.messages import ChunkData, ChunkMissing, ChunkRequest, MsgType
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.ports import ChunkHost, ChunkRelayHost
from microsync.protocol.sync.reconcile import GroupPhase
from microsync.protocol.sync.table import Row

__all__ = ["CHUNK_TRANSFER", "ChunkTransfer"]


class ChunkTransfer:
    """One group's chunk requests, both ways."""

    def __init__(self, link: Link, group: GroupId) -> None:
        self._link, self.group = link, group
        self.asked: set[bytes] = set()  # chunk ids asked of the peer, not answered yet
        self.owed: set[bytes] = set()  # chunk ids the peer asked, passed on, not answered yet

    def request(self, ids: Sequence[bytes], hops: int = 0) -> None:
        """Ask for the ``ids`` not asked already (:class:`LocalProtocolError` beyond the
        window); ``hops``: how many more devices may pass the request on."""
        fresh = [i for i in dict.fromkeys(ids) if i not in self.asked]
        if len(self.asked) + len(fresh) > self._link.options.max_chunks_outstanding:
            raise LocalProtocolError("more chunks asked than the window allows")
        step = self._link.options.limits.max_chunk_ids
        for start in range(0, len(fresh), step):
            batch = tuple(fresh[start : start + step])
            self.asked.update(batch)
            self._link.send(ChunkRequest(group=self.group, ids=batch, hops=hops))

    def on_chunk_request(self, m: ChunkRequest) -> None:
        link = self._link
        host = link.host if isinstance(link.host, ChunkHost) else None
        if host is not None and not link.host.may_serve(m.group, link.peer):
            host = None
        missing = []
        for chunk in m.ids:
            if chunk in self.owed:
                continue  # asked again while passed on: answered once, by answer()
            data = None if host is None else host.chunk(m.group, link.peer, chunk)
            if data is not None and len(data) <= link.options.limits.max_chunk_data:
                self._send_data(chunk, data)
            elif not (m.hops and host is not None and self._relayed(chunk)):
                missing.append(chunk)
        if missing:
            link.send(ChunkMissing(group=m.group, ids=tuple(missing)))

    def _relayed(self, chunk: bytes) -> bool:
        """Has the host taken ``chunk`` on, to answer later (:meth:`answer`)?"""
        host = self._link.host
        if not isinstance(host, ChunkRelayHost):
            return False
        if len(self.owed) >= self._link.options.max_chunks_outstanding:
            return False
        if not host.relay_chunk(self.group, self._link.peer, chunk):
            return False
        self.owed.add(chunk)
        return True

    def answer(self, chunk: bytes, data: bytes | None) -> bool:
        """Answer an owed id: the chunk, or missing (``None``). ``False`` if it is not owed
        (answered already, or never taken on)."""
        if chunk not in self.owed:
            return False
        self.owed.discard(chunk)
        if data is not None and len(data) <= self._link.options.limits.max_chunk_data:
            self._send_data(chunk, data)
        else:
            self._link.send(ChunkMissing(group=self.group, ids=(chunk,)))
        return True

    def _send_data(self, chunk: bytes, data: bytes) -> None:
        self._link.stats.chunks_sent += 1
        self._link.stats.chunk_bytes_sent += len(data)
        self._link.send(ChunkData(group=self.group, id=chunk, data=data))

    def on_chunk_data(self, m: ChunkData) -> None:
        self._take_answers((m.id,))
        self._link.stats.chunks_received += 1
        self._link.stats.chunk_bytes_received += len(m.data)
        if isinstance(self._link.host, ChunkHost):
            self._link.host.chunk_received(m.group, self._link.peer, m.id, m.data)

    def on_chunk_missing(self, m: ChunkMissing) -> None:
        self._take_answers(m.ids)
        if isinstance(self._link.host, ChunkHost):
            self._link.host.chunks_missing(m.group, self._link.peer, m.ids)

    def _take_answers(self, ids: Sequence[bytes]) -> None:
        if not self.asked.issuperset(ids):
            raise RemoteProtocolError("a chunk answer nobody asked for")
        self.asked.difference_update(ids)


CHUNK_TRANSFER: Final[dict[tuple[GroupPhase, MsgType], Row[ChunkTransfer, Any, GroupPhase]]] = {
    **{(p, MsgType.CHUNK_REQUEST): Row(ChunkTransfer.on_chunk_request) for p in GroupPhase},
    **{(p, MsgType.CHUNK_DATA): Row(ChunkTransfer.on_chunk_data) for p in GroupPhase},
    **{(p, MsgType.CHUNK_MISSING): Row(ChunkTransfer.on_chunk_missing) for p in GroupPhase},
}
"""Chunk transfer: legal in every phase of a matched group; the phase stays."""
