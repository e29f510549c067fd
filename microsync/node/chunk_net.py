"""Vault chunk requests and relayed answers on a device's live connections (the runtime's
``chunk_peers`` and ``chunk_answer``; :mod:`microsync.node.vault_fetch` and
:mod:`microsync.node.chunk_relay` use them). Each call queues records in a session and flushes
them through that connection's one outbox (:meth:`SyncConnection.notify`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.net.connection import SyncConnection

__all__ = ["chunk_answer", "chunk_peers"]


def chunk_peers(
    connections: Iterable[SyncConnection], group: GroupId
) -> dict[DeviceId, Callable[[Sequence[bytes], int], None]]:
    """Live connections sharing ``group``: peer device -> ``request(chunk ids, hops)``."""
    found: dict[DeviceId, Callable[[Sequence[bytes], int], None]] = {}
    for connection in connections:
        session = connection.session
        if session.closed or group not in session.groups:
            continue

        def request(
            ids: Sequence[bytes], hops: int, connection: SyncConnection = connection
        ) -> None:
            connection.session.request_chunks(group, ids, hops)
            connection.notify(group)  # sends what the session queued, through its outbox

        found[connection.peer.device] = request
    return found


def chunk_answer(
    connections: Iterable[SyncConnection],
    group: GroupId,
    peer: DeviceId,
    chunk: bytes,
    data: bytes | None,
) -> None:
    """Answer ``peer``'s relayed ask for ``chunk`` (its bytes, or missing: ``None``) on the
    connections that owe it: each session sends its answer once."""
    for connection in connections:
        owed = connection.peer.device == peer and not connection.session.closed
        if owed and connection.session.answer_chunk(group, chunk, data):
            connection.notify(group)
