"""Presence under the user's control (issue 18 point 4): off by default, opted in per group and
kept in the profile, and a quiet mode with no heartbeat and a long keepalive. Real profiles,
real TCP on 127.0.0.1; ephemeral messages are counted where they go onto the wire
(``SyncConnection.send_ephemeral``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.feed import GroupId
from microsync.identity import DeviceId
from microsync.net.connection import SyncConnection
from microsync.protocol.session import SyncOptions
from microsync.protocol.sync.keepalive import QUIET_KEEPALIVE_MS, session_options
from tests.test_app_group import family_of
from tests.test_app_presence import gossip
from tests.test_net_sync import eventually


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[DeviceId]]:
    """Every ephemeral message any connection sends, counted by the device it goes to."""
    sent: Counter[DeviceId] = Counter()
    original = SyncConnection.send_ephemeral

    def counting(self: SyncConnection, group: GroupId, data: bytes) -> None:
        sent[self.peer.device] += 1
        original(self, group, data)

    monkeypatch.setattr(SyncConnection, "send_ephemeral", counting)
    yield sent


async def _connected(alice: microsync.Group, bob: microsync.Group) -> None:
    await alice.device.start(lan=False, port=0)
    address = f"127.0.0.1:{alice.device.port}"
    await bob.device.start(lan=False, port=None, peers=(address,))
    await eventually(lambda: any(p.synced for p in bob.device.peers()))
    await eventually(lambda: any(p.synced for p in alice.device.peers()))
    await asyncio.sleep(0.2)  # what a sync's end sends has gone by now


async def test_presence_is_off_by_default_and_nothing_is_announced(
    tmp_path: Path, wire: Counter[DeviceId]
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        assert not alice.presence_sharing() and not bob.presence_sharing()
        await _connected(alice, bob)
        assert sum(wire.values()) == 0  # a heartbeat would have gone out on start
        assert alice.announcements() == [] and bob.announcements() == []
        assert not bob.presence()[alice.device.person_id].online
        assert not alice.presence()[bob.device.person_id].online  # never announced: offline
        alice.set_presence_sharing(True)  # opting in on a started device announces at once
        await eventually(lambda: bob.presence()[alice.device.person_id].online)
        assert wire[bob.device.id] >= 1 and wire[alice.device.id] == 0  # Bob never opted in
        await alice.device.stop()
        await bob.device.stop()


async def test_the_opt_in_survives_a_restart_and_opting_out_says_offline(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        alice.set_presence_sharing(True)
        await alice.announce_presence()
        gossip(alice, bob)
        assert bob.presence()[alice.device.person_id].online
        path = alice.device.path
        await alice.device.close()
        async with await microsync.Device.open(path) as again:
            group = again.groups()[0]
            assert group.presence_sharing()
            group.set_presence_sharing(False)
            assert not group.presence_sharing()
            gossip(group, bob)  # the "offline" it sent on opting out
            assert not bob.presence()[alice.device.person_id].online
        async with await microsync.Device.open(path) as again:
            assert not again.groups()[0].presence_sharing()


async def test_a_quiet_device_sends_no_heartbeat_even_where_opted_in(
    tmp_path: Path, wire: Counter[DeviceId]
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        alice.set_presence_sharing(True)
        alice.device.set_quiet(True)
        await _connected(alice, bob)
        assert wire[bob.device.id] == 0 and not bob.presence()[alice.device.person_id].online
        alice.device.set_quiet(False)  # the heartbeat starts again at once
        await eventually(lambda: bob.presence()[alice.device.person_id].online)
        sent = wire[bob.device.id]
        assert sent >= 1
        alice.device.set_quiet(True)
        await asyncio.sleep(0.2)
        assert wire[bob.device.id] == sent
        await alice.device.stop()
        await bob.device.stop()


async def test_a_quiet_device_still_syncs_what_it_writes(
    tmp_path: Path, wire: Counter[DeviceId]
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        alice.set_presence_sharing(True)
        path = alice.device.path
        await alice.device.close()
        quiet = await stack.enter_async_context(await microsync.Device.open(path))
        quiet.set_quiet()  # before start: the heartbeat never runs
        [group] = quiet.groups()
        await _connected(group, bob)
        assert wire[bob.device.id] == 0
        post = await group.post("sync on demand still syncs")
        await eventually(lambda: any(p.id == post.id for p in bob.feed()))
        await quiet.stop()
        await bob.device.stop()


def test_a_quiet_session_pings_rarely_and_keeps_quiet_peers() -> None:
    assert session_options(None, quiet=False) is None
    given = SyncOptions(keepalive_ms=1000)
    assert session_options(given, quiet=False) is given
    quiet = session_options(given, quiet=True)
    assert quiet is not None and quiet.keepalive_ms == QUIET_KEEPALIVE_MS == 15 * 60 * 1000
    assert quiet.idle_timeout_ms >= 3 * quiet.keepalive_ms
    default = session_options(None, quiet=True)
    assert default is not None and default.keepalive_ms == QUIET_KEEPALIVE_MS
