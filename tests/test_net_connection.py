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
from microsync.net.connection import SecureStream, SyncConnection, handshake, now_ms
from microsync.net.stream import TcpStream


class NoGroups:
    """A sync host holding no group (the session only needs to start)."""

    def sync_groups(self) -> list[object]:
        return []


async def test_a_peer_that_never_reads_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_module, "MAX_OUTBOX_BYTES", 1 << 20)
    connection, peer = await connected_pair()
    # every record the peer sends asks for 256 KiB of answers
    monkeypatch.setattr(connection.session, "receive", lambda record, now: [bytes(256 * 1024)])
    connection.start()
    try:
        for _ in range(64):  # the peer keeps asking and never reads
            await peer.send(b"request")
            if connection.closed.is_set():
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(connection.closed.wait(), 10)
        assert isinstance(connection.error, RemoteProtocolError)
        # private: the bytes queued on the connection (backpressure bound)
        assert connection._queued <= (1 << 20) + 256 * 1024
    finally:
        await connection.close()
        await peer.close()


async def connected_pair() -> tuple[SyncConnection, SecureStream]:
    """A SyncConnection for Alice (not started) and the raw secure stream of its peer."""
    left, right = socket.socketpair()
    ours = TcpStream(*await asyncio.open_connection(sock=left))
    theirs = TcpStream(*await asyncio.open_connection(sock=right))
    alice = LocalIdentity.create("alice", os.urandom, now_ms())
    bob = LocalIdentity.create("bob", os.urandom, now_ms())
    mine, peer = await asyncio.gather(
        handshake(ours, alice, initiator=True, rng=os.urandom),
        handshake(theirs, bob, initiator=False, rng=os.urandom),
    )
    connection = SyncConnection(
        mine,
        NoGroups(),
        our_device=alice.device_id,
        initiator=True,
        rng=os.urandom,  # type: ignore[arg-type]
    )
    return connection, peer


async def test_a_bug_in_the_session_reaches_whoever_runs_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection, peer = await connected_pair()

    def broken(record: bytes, now: int) -> list[bytes]:
        raise RuntimeError("a bug, not the peer's doing")

    monkeypatch.setattr(connection.session, "receive", broken)
    try:
        running = asyncio.create_task(connection.run())
        await peer.send(b"anything")
        with pytest.raises(ExceptionGroup) as raised:
            await asyncio.wait_for(running, 10)
        (bug,) = raised.value.exceptions
        assert isinstance(bug, RuntimeError) and str(bug) == "a bug, not the peer's doing"
        assert connection.closed.is_set()
        assert await asyncio.wait_for(peer.receive(), 10) is not None  # the session's hello
        assert await asyncio.wait_for(peer.receive(), 10) is None  # then the stream closed
    finally:
        await connection.close()
        await peer.close()


async def test_a_peer_that_hangs_up_ends_the_run_with_a_typed_error() -> None:
    connection, peer = await connected_pair()
    try:
        running = asyncio.create_task(connection.run())
        await peer.close()
        await asyncio.wait_for(running, 10)  # returns: the error is the peer's doing
        assert isinstance(connection.error, ConnectionError)
        assert connection.closed.is_set()
    finally:
        await connection.close()


async def test_close_says_goodbye_and_stops_both_tasks() -> None:
    connection, peer = await connected_pair()
    before = asyncio.all_tasks()
    try:
        task = connection.start()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(connection.close(), 10)
        assert task.done() and connection.error is None
        assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()  # no orphan
        records = []
        while (record := await asyncio.wait_for(peer.receive(), 10)) is not None:
            records.append(record)
        assert len(records) == 2  # the hello, then the Bye
    finally:
        await peer.close()
