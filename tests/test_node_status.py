"""``Device.status()`` (issue 17, item 8): two real devices over TCP on 127.0.0.1, before a
sync, after a one-shot sync, with entries pending, on a live connection, and after a restart
(the last syncs are kept in the profile)."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import PeerUnreachable
from microsync.net.relay import RelayServer
from microsync.node import DeviceStatus, GroupStatus, PeerStatus, RelayStatus
from tests.test_app_group import devices_of, family_of
from tests.test_cli_network import free_port
from tests.test_net_sync import eventually


def _only_group(status: DeviceStatus) -> GroupStatus:
    [group] = status.groups
    return group


def _recent(ms: int | None) -> bool:
    return ms is not None and abs(time.time() * 1000 - ms) < 30_000


async def test_status_before_after_and_during_sync(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice_group, bob_group = await family_of(stack, tmp_path, "Alice", "Bob")
        alice, bob = devices_of(alice_group, bob_group)
        before = bob.status()
        assert not before.online and before.listen_addresses == () and before.relay is None
        group = _only_group(before)
        assert (group.name, group.member, group.peers) == ("Family", True, ())
        assert group.last_sync is None and group.pending_outgoing is None

        await alice.start(lan=False, port=0)
        assert alice.status().online
        assert alice.status().listen_addresses == (f"127.0.0.1:{alice.port}",)
        for i in range(3):
            await alice_group.post(f"post {i}")
        assert alice.port is not None
        await bob.sync_with("127.0.0.1", alice.port)

        after = _only_group(bob.status())
        [peer] = after.peers
        assert peer == PeerStatus(
            device_id=alice.id,
            name="Alice",
            address=None,
            connected=False,
            in_sync=False,
            last_sync=peer.last_sync,
            pending_outgoing=0,
        )
        assert _recent(peer.last_sync) and after.last_sync == peer.last_sync
        assert after.pending_outgoing == 0

        await bob_group.post("one")
        await bob_group.post("two")
        waiting = _only_group(bob.status())
        assert waiting.pending_outgoing == 2 and waiting.peers[0].pending_outgoing == 2

        await bob.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.port}",))
        await eventually(lambda: any(p.in_sync for p in _only_group(bob.status()).peers))
        live = _only_group(bob.status())
        [peer] = live.peers
        assert peer.connected and peer.address == f"127.0.0.1:{alice.port}"
        assert peer.name == "Alice" and peer.pending_outgoing == 0 and _recent(peer.last_sync)
        assert live.pending_outgoing == 0
        seen_by_alice = _only_group(alice.status())
        assert [(p.device_id, p.name, p.connected) for p in seen_by_alice.peers] == [
            (bob.id, "Bob", True)
        ]
        await bob.stop()
        await eventually(lambda: not _only_group(alice.status()).peers[0].connected)
        assert _only_group(alice.status()).peers[0].pending_outgoing == 0


async def test_last_sync_survives_a_restart(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice_group, bob_group = await family_of(stack, tmp_path, "Alice", "Bob")
        alice, bob = devices_of(alice_group, bob_group)
        await alice.start(lan=False, port=0)
        assert alice.port is not None
        await bob.sync_with("127.0.0.1", alice.port)
        await bob_group.post("after the sync")
        synced_at = _only_group(bob.status()).last_sync
        await bob.close()
        async with await microsync.Device.open(tmp_path / "Bob") as again:
            group = _only_group(again.status())
            assert group.last_sync == synced_at and group.pending_outgoing == 1
            assert [p.name for p in group.peers] == ["Alice"]


async def test_relay_state_and_a_one_shot_sync_through_the_relay(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            RelayServer("127.0.0.1", 0, tap=lambda flow, message: seen.append(message))
        )
        url = f"ws://127.0.0.1:{relay.port}"
        alice_group, bob_group = await family_of(stack, tmp_path, "Alice", "Bob")
        alice, bob = devices_of(alice_group, bob_group)
        with pytest.raises(PeerUnreachable, match="no member of your groups was at"):
            await bob.sync_via_relay(url, timeout=0.5)
        await alice.start(lan=False, port=None, relay=url)
        await eventually(lambda: alice.status().relay == RelayStatus(url=url, connected=True))
        assert alice.status().listen_addresses == ()
        await alice_group.post("through the relay")
        [result] = await bob.sync_via_relay(url, timeout=20)
        assert result.peer == alice.id and result.groups == (alice_group.id,)
        assert result.entries_received >= 1
        assert [p.text for p in bob_group.feed()] == ["through the relay"]
        [peer] = _only_group(bob.status()).peers
        assert (peer.name, peer.connected, peer.pending_outgoing) == ("Alice", False, 0)
        assert _recent(peer.last_sync) and not bob.status().online
    wire = b"".join(seen)  # the relay saw ciphertext only: no id, name or text
    for secret in (alice_group.id, alice.id, bob.id, b"through the relay", b"Alice"):
        assert bytes(secret) not in wire


async def test_a_relay_nobody_runs_is_one_clear_error(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        _, bob_group = await family_of(stack, tmp_path, "Alice", "Bob")
        [bob] = devices_of(bob_group)
        port = free_port()
        with pytest.raises(PeerUnreachable, match="cannot reach the relay"):
            await bob.sync_via_relay(f"ws://127.0.0.1:{port}", timeout=5)
        with pytest.raises(ValueError, match="not a relay URL"):
            await bob.sync_via_relay("127.0.0.1:7426")
