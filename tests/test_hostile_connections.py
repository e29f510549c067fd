"""Hostile connections cannot lock members out of a device's listener (issue 13, item 7).

Each attack runs with real sockets on 127.0.0.1 against a started :class:`microsync.Device`
(small limits, so each takes about a second), and then a real member still syncs:

* a peer that never finishes the handshake is closed after ``handshake_timeout``;
* a peer that finishes it and then only pings (never a ``Hello``) is closed once the session
  has not matched a group within ``SyncOptions.match_timeout_ms``: pings do not extend it;
  one that opens an invite exchange and stalls, after ``pairing_timeout``;
* connections over the per-address or total cap are closed at once, before any handshake;
* an ``accept()`` that fails for want of descriptors backs off and logs one line per interval
  (asyncio's own accept loop logged every failure: 557,399 lines in two minutes).

The quota itself (isolation between addresses, the IPv6 /64 key) is tested without sockets:
on loopback every peer has the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import pytest

import microsync
from microsync.errors import RemoteProtocolError
from microsync.identity import LocalIdentity
from microsync.net.connection import SecureStream, handshake, now_ms
from microsync.net.limits import (
    AcceptBackoff,
    ConnectionQuota,
    LogBudget,
    Refusal,
    ServeLimits,
    address_key,
)
from microsync.net.stream import open_tcp
from microsync.protocol.handshake import Purpose
from microsync.protocol.messages import ErrorCode, ErrorMessage, Hello, Ping, decode_message
from microsync.protocol.messages import encode_message as encode
from microsync.protocol.session import SessionState, SyncOptions, SyncSession
from tests.sync_helpers import DeviceHost, close_all, connect, open_devices, pump
from tests.sync_helpers import family as found_family
from tests.test_app_group import family_of

FAST = ServeLimits(handshake_timeout=0.5, max_connections=8, max_per_address=8)
QUICK_MATCH = SyncOptions(match_timeout_ms=1_000)


# ---------------------------------------------------------------------- helpers


class NoGroups:
    """A sync host holding no group: all a session needs to start."""

    def sync_groups(self) -> list[object]:
        return []


def session(options: SyncOptions | None = None) -> SyncSession:
    return SyncSession(
        NoGroups(),  # type: ignore[arg-type]
        our_device=b"a" * 32,  # type: ignore[arg-type]
        peer_device=b"b" * 32,  # type: ignore[arg-type]
        channel_binding=b"\x01" * 32,
        initiator=False,
        rng=os.urandom,
        options=options,
    )


@pytest.fixture
async def family(tmp_path: Path) -> AsyncIterator[list[microsync.Group]]:
    async with AsyncExitStack() as stack:
        groups = await family_of(stack, tmp_path, "Alice", "Bob")
        try:
            yield groups
        finally:
            for group in groups:
                await group.device.stop()


async def serving(
    alice: microsync.Group, limits: ServeLimits, options: SyncOptions | None = None
) -> int:
    await alice.device.start(lan=False, port=0, limits=limits, options=options)
    port = alice.device.port
    assert port
    return port


async def member_syncs(alice: microsync.Group, bob: microsync.Group, port: int) -> None:
    """A real member gets a post written after the attack began."""
    post = await alice.post(f"still serving {time.monotonic()}")
    result = await bob.device.sync_with("127.0.0.1", port, timeout=10)
    assert result.groups == (alice.id,)
    assert any(p.id == post.id for p in bob.feed())


async def eof_within(sock: socket.socket, seconds: float) -> bool:
    """Did the listener close ``sock`` (EOF or reset) within ``seconds``?"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while await asyncio.wait_for(loop.sock_recv(sock, 4096), deadline - loop.time()):
            pass  # the responder's opening bytes
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


@contextmanager
def raw_sockets(count: int) -> Iterator[list[socket.socket]]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


async def connected(sockets: list[socket.socket], port: int) -> None:
    loop = asyncio.get_running_loop()
    for sock in sockets:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))


async def pinger(port: int) -> tuple[SecureStream, list[object]]:
    """A stranger's connection with the handshake done, and a list for what it receives."""
    stranger = LocalIdentity.create("mallory", os.urandom, now_ms())
    stream = await open_tcp("127.0.0.1", port)
    secure = await handshake(stream, stranger, initiator=True, rng=os.urandom)
    return secure, []


async def ping_until_closed(secure: SecureStream, got: list[object], every: float) -> None:
    """Send a ping every ``every`` seconds and never a Hello; note every message received,
    and ``None`` when the connection ends."""

    async def keep_pinging() -> None:
        while True:
            await secure.send(encode(Ping()))
            await asyncio.sleep(every)

    pings = asyncio.ensure_future(keep_pinging())
    try:
        while True:
            try:
                record = await secure.receive()
            except (RemoteProtocolError, ConnectionError):
                record = None
            got.append(None if record is None else decode_message(record))
            if record is None:
                return
    finally:
        pings.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await pings
        await secure.close()


# ---------------------------------------------------------------------- sans-IO: the timer


def test_pings_do_not_keep_an_unopened_session_alive() -> None:
    s = session()
    assert s.options.match_timeout_ms == 10_000
    [hello] = s.start(0)
    assert isinstance(decode_message(hello), Hello)
    for now in range(500, 10_000, 500):  # a ping every half second, and never a Hello
        assert s.receive(encode(Ping()), now) == []
        assert s.next_deadline(now) == 10_000
        assert s.handle_timeout(now) == []
    [error] = s.handle_timeout(10_000)
    message = decode_message(error)
    assert isinstance(message, ErrorMessage) and message.code is ErrorCode.TIMEOUT
    assert s.closed and isinstance(s.error, RemoteProtocolError)


def test_a_peer_whose_hello_matches_nothing_cannot_stall_before_its_match() -> None:
    s = session(SyncOptions(match_timeout_ms=2_000))
    s.start(0)
    stranger = Hello(tags=(os.urandom(16),), credit_batches=1, credit_bytes=1 << 22)
    s.receive(encode(stranger), 100)
    assert s.state is SessionState.AWAIT_MATCH
    for now in range(200, 2_000, 200):
        s.receive(encode(Ping()), now)
    assert s.next_deadline(1_900) == 2_000
    s.handle_timeout(2_000)
    assert s.closed and "no group matched" in str(s.error)


def test_after_the_session_opens_only_idleness_counts(tmp_path: Path) -> None:
    devices = open_devices(tmp_path, "Alice", "Bob")
    found_family(devices)
    link = connect(*map(DeviceHost, devices), options_a=SyncOptions(match_timeout_ms=1_000))
    pump(link)
    assert link.a.state is SessionState.OPEN
    assert link.a.next_deadline(0) == 30_000  # the keepalive, not the match deadline
    assert link.a.handle_timeout(5_000) == [] and not link.a.closed
    close_all(devices)


# ---------------------------------------------------------------------- the listener


async def test_a_peer_that_never_finishes_the_handshake_is_closed_after_the_timeout(
    family: list[microsync.Group],
) -> None:
    alice, bob = family
    port = await serving(alice, FAST)
    with raw_sockets(2) as (silent, partial):
        await connected([silent, partial], port)
        start = time.monotonic()
        await asyncio.get_running_loop().sock_sendall(partial, b"\x00\x20" + bytes(8))
        assert not await eof_within(silent, 0.3)  # it gets its handshake_timeout...
        assert await eof_within(silent, 2.0)  # ...and not much more
        assert await eof_within(partial, 0.5)
        assert 0.4 <= time.monotonic() - start < 2.5
    await member_syncs(alice, bob, port)


async def test_a_stranger_that_only_pings_is_closed_at_the_match_deadline(
    family: list[microsync.Group],
) -> None:
    alice, bob = family
    port = await serving(alice, FAST, QUICK_MATCH)
    strangers = [await pinger(port) for _ in range(FAST.max_connections)]
    start = time.monotonic()
    runs = [ping_until_closed(secure, got, 0.1) for secure, got in strangers]
    await asyncio.wait_for(asyncio.gather(*runs), 5.0)
    elapsed = time.monotonic() - start
    assert 0.7 <= elapsed < 3.0, elapsed
    for _, got in strangers:
        assert isinstance(got[0], Hello)  # alice opened a session, and then...
        error = got[-2]
        assert isinstance(error, ErrorMessage) and error.code is ErrorCode.TIMEOUT
        assert got[-1] is None
    await member_syncs(alice, bob, port)


async def test_a_stranger_that_opens_an_invite_exchange_and_stalls_is_closed(
    family: list[microsync.Group],
) -> None:
    alice, bob = family
    limits = ServeLimits(handshake_timeout=0.5, pairing_timeout=0.8)
    port = await serving(alice, limits)
    stranger = LocalIdentity.create("mallory", os.urandom, now_ms())
    secure = await handshake(
        await open_tcp("127.0.0.1", port),
        stranger,
        initiator=True,
        purpose=Purpose.INVITE,
        rng=os.urandom,
    )
    start = time.monotonic()
    try:
        assert await asyncio.wait_for(secure.receive(), 5.0) is None
    finally:
        await secure.close()
    assert 0.6 <= time.monotonic() - start < 3.0
    await member_syncs(alice, bob, port)


async def test_connections_over_the_per_address_cap_are_closed_at_once(
    family: list[microsync.Group], caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = family
    limits = ServeLimits(handshake_timeout=2.0, max_connections=64, max_per_address=4)
    port = await serving(alice, limits)
    caplog.set_level(logging.INFO, logger="microsync.node")
    with raw_sockets(30) as flood:
        await connected(flood, port)
        closed = await asyncio.gather(*(eof_within(s, 0.5) for s in flood))
        assert closed.count(True) == 26 and closed.count(False) == 4
        held = [s for s, c in zip(flood, closed, strict=True) if not c]
        assert all(await asyncio.gather(*(eof_within(s, 4.0) for s in held)))
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # the first; the other 25 wait for the next interval
    assert "from one address" in refusals[0].getMessage()
    await member_syncs(alice, bob, port)


async def test_connections_over_the_total_cap_are_closed_at_once(
    family: list[microsync.Group],
) -> None:
    alice, bob = family
    limits = ServeLimits(handshake_timeout=3.0, max_connections=3, max_per_address=16)
    port = await serving(alice, limits)
    with raw_sockets(10) as flood:
        await connected(flood, port)
        closed = await asyncio.gather(*(eof_within(s, 0.5) for s in flood))
        assert closed.count(False) == 3
        with pytest.raises(microsync.errors.HandshakeError):
            await bob.device.sync_with("127.0.0.1", port, timeout=5)  # full: refused
    await asyncio.sleep(0.1)  # the listener saw the flood go
    await member_syncs(alice, bob, port)


@contextmanager
def no_new_descriptors() -> Iterator[None]:
    """Make every new descriptor of this process fail with EMFILE, until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_out_of_descriptors_the_listener_backs_off_and_logs_once_per_interval(
    family: list[microsync.Group], caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = family
    limits = ServeLimits(
        handshake_timeout=0.5, accept_backoff_start=0.01, accept_backoff_max=0.2, log_interval=60
    )
    port = await serving(alice, limits)
    caplog.set_level(logging.DEBUG)
    with raw_sockets(5) as waiting:  # made now: connecting needs no new descriptor
        for sock in waiting:
            sock.setblocking(False)
        with no_new_descriptors():
            for sock in waiting:  # the kernel completes these; alice cannot accept them
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
            await asyncio.sleep(1.0)
        # descriptors again: the waiting connections are accepted (then time out)
        assert all(await asyncio.gather(*(eof_within(s, 3.0) for s in waiting)))
    failures = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "Too many open files" in failures[0].getMessage()
    again = [r for r in caplog.records if "accepting connections again" in r.getMessage()]
    assert len(again) == 1
    assert not [r for r in caplog.records if r.name == "asyncio"]
    await member_syncs(alice, bob, port)


# ---------------------------------------------------------------------- the quota, sans IO


def test_the_quota_isolates_addresses_and_keeps_a_total() -> None:
    quota = ConnectionQuota(total=5, per_address=2)
    assert [quota.admit("203.0.113.9") for _ in range(3)] == [None, None, Refusal.ADDRESS]
    assert quota.admit("198.51.100.1") is None and quota.admit("198.51.100.1") is None
    assert quota.admit("192.0.2.7") is None
    assert quota.admit("192.0.2.8") is Refusal.TOTAL and quota.held == 5
    quota.release("203.0.113.9")
    assert quota.held_by("203.0.113.9") == 1 and quota.admit("192.0.2.8") is None


def test_address_keys_are_ips_and_an_ipv6_host_is_its_slash_64() -> None:
    assert address_key("127.0.0.1") == "127.0.0.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::5") != address_key("2001:db8:1:2::5")
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_the_log_budget_and_the_backoff() -> None:
    budget = LogBudget(10.0)
    assert [budget.count(t) for t in (0.0, 1.0, 2.0, 9.9, 10.0, 11.0)] == [
        1,
        None,
        None,
        None,
        4,
        None,
    ]
    assert budget.flush() == 1 and budget.flush() == 0
    backoff = AcceptBackoff(0.05, 0.3)
    assert [backoff.failed() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.succeeded()
    assert backoff.failed() == 0.05


def test_limits_are_checked() -> None:
    for bad in (
        {"max_connections": 0},
        {"max_per_address": 0},
        {"handshake_timeout": 0},
        {"pairing_timeout": -1},
        {"accept_backoff_start": 1.0, "accept_backoff_max": 0.5},
    ):
        with pytest.raises(ValueError):
            ServeLimits(**bad)  # type: ignore[arg-type]
