"""Hostile clients cannot lock members out of the relay (issue 13, item 7): one address gets at
most ``max_clients_per_address`` slots, a client that holds rendezvous ids but never pairs is
closed after ``unpaired_timeout`` (and one with nothing at all after ``idle_timeout``), and no
message it sends moves those clocks. Real WebSockets on 127.0.0.1; after each attack, members
still meet and sync through the relay."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from microsync.net.relay import ErrorCode, RelayLimits, RelayServer
from microsync.net.relay_client import RelayClient
from tests.test_app_group import family_of
from tests.test_net_sync import eventually


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


async def relay_with(stack: AsyncExitStack, limits: RelayLimits) -> RelayServer:
    return await stack.enter_async_context(RelayServer("127.0.0.1", 0, limits=limits))


async def client_of(stack: AsyncExitStack, relay: RelayServer) -> RelayClient:
    client = RelayClient(f"ws://127.0.0.1:{relay.port}")
    stack.push_async_callback(client.close)
    await client.connect()
    return client


async def dropped_with(client: RelayClient, seconds: float) -> ErrorCode | None:
    """Wait until the relay disconnects ``client``; the code it gave (None if it did not)."""
    try:
        await asyncio.wait_for(client.accept(), seconds)
    except ConnectionResetError:
        return client.error
    except TimeoutError:
        return None
    raise AssertionError("nobody should pair with this client")


async def members_sync_through(stack: AsyncExitStack, relay: RelayServer, root: Path) -> None:
    url = f"ws://127.0.0.1:{relay.port}"
    alice, bob = await family_of(stack, root, "Alice", "Bob")
    for member in (alice, bob):
        stack.push_async_callback(member.device.stop)
    post = await alice.post("through the relay, after the attack")
    await alice.device.start(lan=False, port=None, relay=url)
    await bob.device.start(lan=False, port=None, relay=url)
    await eventually(lambda: any(p.id == post.id for p in bob.feed()), timeout=20)


async def test_one_address_gets_at_most_its_share_of_the_slots(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    relay = await relay_with(stack, RelayLimits(max_clients=50, max_clients_per_address=3))
    rush = [RelayClient(f"ws://127.0.0.1:{relay.port}") for _ in range(10)]
    for client in rush:
        stack.push_async_callback(client.close)
    outcomes = await asyncio.gather(*(c.connect() for c in rush), return_exceptions=True)
    await asyncio.sleep(0.2)
    assert relay.stats.clients == 3  # whichever way the rest were turned away:
    connected = [c for c, o in zip(rush, outcomes, strict=True) if o is None]
    refused_late = [c for c in connected if c.error is not None]
    assert all(c.error is ErrorCode.ADDRESS_FULL for c in refused_late)  # past the check...
    refused_early = [o for o in outcomes if isinstance(o, ConnectionRefusedError)]
    assert all("429" in str(o) for o in refused_early)  # ...or at it
    assert len(refused_early) + len(refused_late) == 7
    with pytest.raises(ConnectionRefusedError, match="429"):
        await client_of(stack, relay)
    held = [c for c in connected if c.error is None]
    await held[0].close()
    await asyncio.sleep(0.1)
    await client_of(stack, relay)  # a slot again
    for client in rush:  # on loopback members share the flood's address: it must go first
        await client.close()
    await members_sync_through(stack, relay, tmp_path)


async def test_clients_that_never_pair_are_closed_and_members_then_meet(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    limits = RelayLimits(max_clients=4, max_clients_per_address=4, unpaired_timeout=0.6)
    relay = await relay_with(stack, limits)
    squatters = [await client_of(stack, relay) for _ in range(4)]
    rids = [os.urandom(32) for _ in squatters]
    for client, rid in zip(squatters, rids, strict=True):
        await client.join(rid)
    with pytest.raises(ConnectionRefusedError, match="503"):
        await client_of(stack, relay)  # every slot is held

    async def keep_busy(client: RelayClient, rid: bytes) -> None:
        """Messages do not count as pairing: JOIN again, LEAVE and JOIN, other ids."""
        while True:
            await client.join(rid)
            await client.leave(rid)
            await client.join(os.urandom(32))
            await asyncio.sleep(0.05)

    busy = [asyncio.ensure_future(keep_busy(c, r)) for c, r in zip(squatters, rids, strict=True)]
    start = time.monotonic()
    try:
        codes = await asyncio.gather(*(dropped_with(c, 5.0) for c in squatters))
    finally:
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
    assert codes == [ErrorCode.UNPAIRED] * 4
    assert 0.5 <= time.monotonic() - start < 3.0
    assert relay.stats.clients == 0
    await members_sync_through(stack, relay, tmp_path)


async def test_an_idle_client_sending_leaves_is_still_idle(stack: AsyncExitStack) -> None:
    relay = await relay_with(stack, RelayLimits(idle_timeout=0.4))
    client = await client_of(stack, relay)

    async def chatter() -> None:
        while True:
            await client.leave(os.urandom(32))
            await asyncio.sleep(0.05)

    talking = asyncio.ensure_future(chatter())
    try:
        assert await dropped_with(client, 3.0) is ErrorCode.IDLE
    finally:
        talking.cancel()
        await asyncio.gather(talking, return_exceptions=True)


async def test_a_paired_client_stays_and_the_clock_restarts_when_its_channel_closes(
    stack: AsyncExitStack,
) -> None:
    relay = await relay_with(stack, RelayLimits(unpaired_timeout=0.5))
    a, b = await client_of(stack, relay), await client_of(stack, relay)
    rid = os.urandom(32)
    await a.join(rid)
    await asyncio.sleep(0.3)
    await b.join(rid)
    a_end, b_end = await a.accept(), await b.accept()
    await asyncio.sleep(0.8)  # past the deadline, but paired
    await a_end.write(b"still here")
    assert await asyncio.wait_for(b_end.read(), 2) == b"still here"
    await a_end.close()
    assert await asyncio.wait_for(b_end.read(), 2) == b""
    start = time.monotonic()
    codes = await asyncio.gather(dropped_with(a, 3.0), dropped_with(b, 3.0))
    assert list(codes) == [ErrorCode.UNPAIRED, ErrorCode.UNPAIRED]
    assert 0.3 <= time.monotonic() - start < 2.0
