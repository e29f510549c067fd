"""The known-peers memory (``microsync.node.peers``): where a device last finished a sync of
each group, kept in its profile, for ``vault get`` on a device that is not serving."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.cli.main import main
from microsync.feed import GroupId
from microsync.net.relay import RelayServer
from microsync.node.peers import MAX_KNOWN, known_peers, remember_peer, way_back
from microsync.storage.sqlite import SqliteStore
from tests.test_app_group import family_of
from tests.test_device_groups import sync
from tests.test_net_sync import eventually

GROUP = GroupId(b"\1" * 32)


def test_most_recent_first_each_once_and_bounded(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        for n in range(MAX_KNOWN + 3):
            remember_peer(store, GROUP, f"127.0.0.1:{7000 + n}", now_ms=n)
        remember_peer(store, GROUP, "127.0.0.1:7005", now_ms=99)
        found = known_peers(store, GROUP)
        assert len(found) == MAX_KNOWN and found[0].address == "127.0.0.1:7005"
        assert len({p.address for p in found}) == MAX_KNOWN
        assert found[0].last_ms == 99 and known_peers(store, GroupId(b"\2" * 32)) == []
        store.put_meta("peers/" + GROUP.hex(), b"\xff not a list")
        assert known_peers(store, GROUP) == []  # damaged: only a hint, read as none
    finally:
        store.close()


def test_the_way_back_is_a_dialled_address_or_a_relay_never_a_source_port() -> None:
    assert way_back("127.0.0.1:7425", dialled=True) == "127.0.0.1:7425"
    assert way_back("127.0.0.1:53211", dialled=False) is None
    assert way_back("relay:ws://127.0.0.1:7450", dialled=False) == "ws://127.0.0.1:7450"
    assert way_back("::1:7425", dialled=True) == "[::1]:7425"


async def test_a_finished_sync_is_remembered_by_the_dialler_only(tmp_path: Path) -> None:
    async with (
        await microsync.Device.open(tmp_path / "a", name="Alice") as alice,
        await microsync.Device.open(tmp_path / "b", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        address = f"127.0.0.1:{alice.port}"
        joined = await bob.join((await family.invite(addresses=[address])).link)
        await bob.sync_with("127.0.0.1", alice.port or 0, timeout=20)
        assert [p.address for p in joined.known_peers()] == [address]
        relay = next((p for p in joined.known_peers() if p.is_relay), None)
        assert relay is None and family.known_peers() == []  # Bob's source port is no way back


async def test_vault_get_fetches_through_the_relay_it_last_met_members_at(tmp_path: Path) -> None:
    """Bob met Alice through a relay once; offline later, ``vault get`` goes back through it."""
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        data = os.urandom(300_000)
        ref = await alice.vault.add(data, name="clip.mp4")
        bob.vault.policy = "on_demand"  # nothing fetched ahead: `vault get` has to
        await alice.device.start(lan=False, port=None, relay=url)
        await bob.device.start(lan=False, port=None, relay=url)
        await eventually(lambda: any(p.synced for p in bob.device.peers()), timeout=20)
        await bob.device.stop()
        assert [p.address for p in bob.known_peers()] == [url]
        assert bob.vault.missing(bob.vault.get(ref.id.hex()))
        home = str(bob.device.path)
        await bob.device.close()  # the command line opens the profile itself
        dest = tmp_path / "got.mp4"
        argv = ["--home", home, "vault", "get", ref.id.hex()[:8], str(dest), "--quiet"]
        assert await asyncio.to_thread(main, argv) == 0
        assert dest.read_bytes() == data
        await alice.device.stop()


async def test_vault_get_knowing_no_address_says_what_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device that never finished a sync over the network (joined by hand here) knows no
    address: one line, both ways out, and a non-zero exit."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        bob.vault.policy = "on_demand"
        ref = await alice.vault.add(os.urandom(1000), name="note.txt")
        sync(alice.device, bob.device, alice.id)
        assert bob.known_peers() == []
        home = str(bob.device.path)
        await bob.device.close()
        argv = ["--home", home, "vault", "get", ref.id.hex()[:8], str(tmp_path / "x")]
        assert await asyncio.to_thread(main, argv) == 1
        [line] = capsys.readouterr().err.splitlines()
        assert "knows no member's address" in line and "--from HOST:PORT" in line
        assert "microsync serve" in line and not (tmp_path / "x").exists()
