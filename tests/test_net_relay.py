"""Two members with no listener meet through a real relay on 127.0.0.1 and sync end to end;
the relay sees no group, device or plaintext."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import microsync
from microsync.group.keys import rendezvous_id
from microsync.net.relay import RelayServer
from microsync.testing import replica_of
from tests.test_app_group import family_of, share
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
        await alice.device.start(lan=False, port=None, relay=url)
        await bob.device.start(lan=False, port=None, relay=url)
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=20)
        assert [p.text for p in bob.feed()] == ["before the relay"]
        post = await bob.post("live through the relay")
        await eventually(lambda: any(p.id == post.id for p in alice.feed()), timeout=20)
        await bob.device.stop()
        await alice.device.stop()
    wire = b"".join(seen)
    assert seen
    for secret in (
        bytes(alice.id),
        bytes(alice.device.id),
        bytes(bob.device.id),
        bytes(alice.device.person_id),
        b"before the relay",
        b"live through the relay",
        b"Alice",
    ):
        assert secret not in wire


async def test_an_invite_redeemed_through_the_relay(tmp_path: Path) -> None:
    """The link names only the relay: the guest meets the inviter under the invite's
    rendezvous id, joins, and receives the group on the same connection."""
    seen: list[bytes] = []
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            RelayServer("127.0.0.1", 0, tap=lambda flow, message: seen.append(message))
        )
        url = f"ws://127.0.0.1:{relay.port}"
        alice = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "alice", name="Alice Canary")
        )
        bob = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "bob", name="Bob Canary")
        )
        family = await alice.create_group("Canary Family")
        await family.post("canary post text")
        await alice.start(lan=False, port=None, relay=url)
        invite = await family.invite(ttl=600, addresses=(), relay=url)
        assert "at=" not in invite.link
        group = await bob.join(invite.link)
        assert group.id == family.id
        assert [p.text for p in group.feed()] == ["canary post text"]
        assert {m.name for m in group.members()} == {"Alice Canary", "Bob Canary"}
        await alice.stop()
    wire = b"".join(seen)
    # private: the transport key the relay must never see (a canary)
    for canary in (
        b"canary post text",
        b"Canary Family",
        b"Alice Canary",
        b"Bob Canary",
        bytes(family.id),
        bytes(alice.id),
        bytes(bob.id),
        bytes(alice.person_id),
        bytes(alice._identity.transport_key.public),
    ):
        assert canary not in wire


async def test_a_removed_member_cannot_compute_the_next_rendezvous_id(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await alice.remove(carol.device.person_id)
        share(alice, bob, carol)
        bucket = 12345
        current = replica_of(alice).current_epoch_key()
        assert current is not None
        new_id = rendezvous_id(current, bucket)
        bob_key = replica_of(bob).current_epoch_key()
        assert bob_key is not None and rendezvous_id(bob_key, bucket) == new_id
        held = replica_of(carol).epoch_keys().values()
        assert held
        assert all(rendezvous_id(k, bucket) != new_id for k in held)
