"""The connection runner against a peer that asks and asks but never reads the answers: it is
dropped with a typed error once a bounded amount waits for it, instead of growing memory."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from microsync.errors import RemoteProtocolError
from microsync.identity import LocalIdentity
from microsync.net import connection as connection_module
from microsync.net.connection import SyncConnection, handshake, now_ms
from microsync.net.stream import TcpStream


class NoGroups:
    """A sync host holding no group (the session only needs to start)."""

    def sync_groups(self) -> list[object]:
        return []


async def test_a_peer_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "MAX_OUTBOX_BYTES", 1 << 20)
    left, right = socket.socketpair()
    ours = TcpStream(*await asyncio.open_connection(sock=left))
    theirs = TcpStream(*await asyncio.open_connection(sock=right))
    alice = LocalIdentity.create("alice", os.urandom, now_ms())
    mallory = LocalIdentity.create("mallory", os.urandom, now_ms())
    mine, peer = await asyncio.gather(
        handshake(ours, alice, initiator=True, rng=os.urandom),
        handshake(theirs, mallory, initiator=False, rng=os.urandom),
    )
    connection = SyncConnection(
        mine,
        NoGroups(),
        our_device=alice.device_id,
        initiator=True,
        rng=os.urandom,  # type: ignore[arg-type]
    )
    # every record the peer sends asks for 256 KiB of answers
    monkeypatch.setattr(connection.session, "receive", lambda record, now: [bytes(256 * 1024)])
    connection.start()
    try:
        for _ in range(64):  # mallory keeps asking and never reads
            await peer.send(b"request")
            if connection.closed.is_set():
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(connection.closed.wait(), 10)
        assert isinstance(connection.error, RemoteProtocolError)
        assert connection._queued <= (1 << 20) + 256 * 1024
    finally:
        await connection.close()
        await peer.close()
