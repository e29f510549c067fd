"""Two members with no listener meet through a real relay on 127.0.0.1 and sync end to end;
the relay sees no group, device or plaintext."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

from microsync.net.relay import RelayServer
from tests.test_app_group import family_of
from tests.test_net_sync import eventually


async def test_members_sync_live_through_the_relay(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            RelayServer("127.0.0.1", 0, tap=lambda flow, message: seen.append(message))
        )
        url = f"ws://127.0.0.1:{relay.port}"
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.post("before the relay")
        await alice._device.start(lan=False, port=None, relay=url)
        await bob._device.start(lan=False, port=None, relay=url)
        await eventually(lambda: any(p.synced for p in bob._device.peers()), timeout=20)
        assert [p.text for p in bob.feed()] == ["before the relay"]
        post = await bob.post("live through the relay")
        await eventually(lambda: any(p.id == post.id for p in alice.feed()), timeout=20)
        await bob._device.stop()
        await alice._device.stop()
    wire = b"".join(seen)
    assert seen
    for secret in (
        bytes(alice.id),
        bytes(alice._device.id),
        bytes(bob._device.id),
        bytes(alice._person()),
        b"before the relay",
        b"live through the relay",
        b"Alice",
    ):
        assert secret not in wire
