"""Quiet really is quiet (issue 18, point 4): a started quiet device keeps no standing work (no
redials, no LAN discovery, no relay link, no keeper links), still accepts a dial, and going back
starts it all again; quiet mode is kept in the profile. Real profiles, a real relay and a real
keeper subprocess on 127.0.0.1; outgoing work is counted where it starts, not slept out."""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync.net.keeper_client import KeeperClient
from microsync.net.relay import RelayServer
from microsync.net.stream import open_tcp
from microsync.node import keeper_link, runtime, standing
from microsync.node.profile import QUIET_KEY
from microsync.storage.sqlite import SqliteStore
from tests.keeper_helpers import keeper
from tests.test_keeper_group import kept_family
from tests.test_net_sync import eventually

STANDING = ("keep ", "relay ", "keeper ", "dial ")
"""How the standing work's tasks are named (``Runtime.spawn``)."""


class FakeDiscovery:
    """Stands in for :class:`LanDiscovery` (no multicast in a test): counts starts and stops
    and says whether it is announcing now."""

    started: ClassVar[Counter[str]] = Counter()
    running: ClassVar[set[int]] = set()

    def __init__(self, *, port: int, tags: Callable[[int], Collection[bytes]], **_: Any) -> None:
        self.port, self._tags = port, tags

    async def start(self) -> None:
        FakeDiscovery.started["start"] += 1
        assert self._tags(0)  # what it would announce: the group's tag
        FakeDiscovery.running.add(id(self))

    async def stop(self) -> None:
        FakeDiscovery.started["stop"] += 1
        FakeDiscovery.running.discard(id(self))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Every outgoing TCP dial, keeper connection and discovery start, counted."""
    seen: Counter[str] = Counter()

    async def dialling(host: str, port: int, *, timeout: float) -> Any:
        seen["dial"] += 1
        return await open_tcp(host, port, timeout=timeout)

    class CountingKeeperClient(KeeperClient):
        @classmethod
        async def connect(cls, url: str, **options: Any) -> KeeperClient:
            seen["keeper"] += 1
            return await KeeperClient.connect(url, **options)

    FakeDiscovery.started = seen
    FakeDiscovery.running = set()
    monkeypatch.setattr(runtime, "open_tcp", dialling)
    monkeypatch.setattr(keeper_link, "KeeperClient", CountingKeeperClient)
    monkeypatch.setattr(standing, "LanDiscovery", FakeDiscovery)
    yield seen


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stored(path: Path) -> bytes | None:
    """The profile's raw quiet value, read with the store closed to the device."""
    store = SqliteStore.open(path)
    try:
        return store.get_meta(QUIET_KEY)
    finally:
        store.close()


def relay_up(device: microsync.Device) -> bool:
    relay = device.status().relay
    return relay is not None and relay.connected


def standing_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(STANDING))


async def quiet_then_loud(
    stack: AsyncExitStack, tmp_path: Path, relay_seen: list[bytes], keeper_url: str
) -> tuple[microsync.Group, microsync.Group, str]:
    """Alice (quiet, started with LAN, a relay and a dead kept peer) and Bob in a kept group."""
    relay = await stack.enter_async_context(
        RelayServer("127.0.0.1", 0, tap=lambda flow, message: relay_seen.append(message))
    )
    alice, bob = await kept_family(stack, tmp_path, keeper_url, "Alice", "Bob")
    alice.device.set_quiet(True)
    url = f"ws://127.0.0.1:{relay.port}"
    peers = (f"127.0.0.1:{closed_port()}",)
    await alice.device.start(lan=True, port=0, relay=url, interfaces=["127.0.0.1"], peers=peers)
    return alice, bob, url


async def test_a_started_quiet_device_dials_nothing_and_announces_nothing(
    tmp_path: Path, counted: Counter[str]
) -> None:
    relay_seen: list[bytes] = []
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob, url = await quiet_then_loud(stack, tmp_path, relay_seen, k.url)
            await asyncio.sleep(1.5)  # three redial periods, a relay and keeper backoff
            assert counted == Counter() and relay_seen == []
            assert standing_tasks() == []
            assert alice.device.relay == url and not relay_up(alice.device)
            assert [s.status for s in alice.keeper_status()] == ["offline"]
            # the listener stays: an incoming dial is answered and synced
            post = await alice.post("written while quiet")
            result = await bob.device.sync_with("127.0.0.1", alice.device.port or 0, timeout=20)
            assert result.entries_received >= 1 and post.id in {p.id for p in bob.feed()}
            assert counted["dial"] == 1  # Bob's, not Alice's
            await alice.device.stop()


async def test_going_loud_and_quiet_again_starts_and_stops_every_loop(
    tmp_path: Path, counted: Counter[str]
) -> None:
    relay_seen: list[bytes] = []
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, _, url = await quiet_then_loud(stack, tmp_path, relay_seen, k.url)
            before = {t.get_name() for t in asyncio.all_tasks()}
            alice.device.set_quiet(False)
            await eventually(lambda: counted["dial"] >= 2, timeout=20)  # the redial loop
            await eventually(lambda: bool(relay_seen) and counted["keeper"] >= 1, timeout=20)
            await eventually(lambda: relay_up(alice.device), timeout=20)
            await eventually(lambda: [s.connected for s in alice.keeper_status()] == [True])
            assert counted["start"] == 1 and FakeDiscovery.running
            tasks = standing_tasks()
            assert any(t.startswith("keep ") for t in tasks)
            assert f"relay {url}" in tasks and any(t.startswith("keeper ") for t in tasks)

            alice.device.set_quiet(True)
            await eventually(lambda: standing_tasks() == [])
            await eventually(lambda: not relay_up(alice.device))
            assert counted["stop"] == 1 and not FakeDiscovery.running
            assert alice.device.peers() == []
            await eventually(lambda: {t.get_name() for t in asyncio.all_tasks()} <= before)
            dials, keepers, relayed = counted["dial"], counted["keeper"], len(relay_seen)
            await asyncio.sleep(1.5)
            assert (counted["dial"], counted["keeper"], len(relay_seen)) == (
                dials,
                keepers,
                relayed,
            )

            for _ in range(3):  # in quick succession: it ends as the last call said
                alice.device.set_quiet(False)
                alice.device.set_quiet(True)
            alice.device.set_quiet(False)
            await eventually(lambda: counted["start"] == 2 and len(FakeDiscovery.running) == 1)
            await eventually(lambda: any(t.startswith("keep ") for t in standing_tasks()))
            await alice.device.stop()
            assert standing_tasks() == [] and not FakeDiscovery.running


async def test_going_quiet_closes_what_it_dialled_and_keeps_what_others_dialled(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        from tests.test_app_group import family_of

        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await bob.device.start(lan=False, port=0)
        await alice.device.start(lan=False, port=0, peers=(f"127.0.0.1:{bob.device.port}",))
        await carol.device.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.device.port}",))

        def names() -> list[str]:
            return sorted(p.name for p in alice.device.peers() if p.synced)

        await eventually(lambda: names() == ["Bob", "Carol"], timeout=20)
        alice.device.set_quiet(True)
        await eventually(lambda: names() == ["Carol"])  # Carol dialled Alice: it stays
        post = await carol.post("still live from Carol")
        await eventually(lambda: post.id in {p.id for p in alice.feed()})
        await asyncio.sleep(1.0)  # Alice's redial loop to Bob would be back by now
        assert names() == ["Carol"] and bob.device.peers() == []
        alice.device.set_quiet(False)
        await eventually(lambda: names() == ["Bob", "Carol"], timeout=20)
        for device in (carol.device, alice.device, bob.device):
            await device.stop()


async def test_quiet_mode_is_kept_across_close_and_open(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    async with await microsync.Device.open(path, name="Alice") as alice:
        assert not alice.quiet  # a profile that never said: not quiet
        alice.set_quiet(False)  # what it is already: nothing written
    assert stored(path) is None  # as a profile from before quiet mode was kept
    async with await microsync.Device.open(path) as alice:
        alice.set_quiet(True)
    async with await microsync.Device.open(path) as again:
        assert again.quiet
    async with await microsync.Device.open(path, quiet=False) as again:
        assert not again.quiet
    async with await microsync.Device.open(path) as again:
        assert not again.quiet
    async with await microsync.Device.open(tmp_path / "bob", name="Bob", quiet=True) as bob:
        assert bob.quiet
        await bob.start(lan=False, port=None)  # started quiet: no heartbeat, no links
        assert standing_tasks() == []
        assert not any(t.get_name() == "presence" for t in asyncio.all_tasks())
    async with await microsync.Device.open(tmp_path / "bob") as bob:
        assert bob.quiet


@pytest.mark.parametrize("damaged", [b"", b"yes", b"\x01", b"1" * 100])
async def test_a_damaged_quiet_value_opens_as_not_quiet_and_is_repaired(
    tmp_path: Path, damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alice"
    async with await microsync.Device.open(path, name="Alice") as alice:
        await alice.create_group("Family")
    store = SqliteStore.open(path)
    store.put_meta(QUIET_KEY, damaged)
    store.close()
    with caplog.at_level(logging.WARNING, logger="microsync.node"):
        async with await microsync.Device.open(path) as again:
            assert not again.quiet and len(again.groups()) == 1  # nothing else is lost
            again.set_quiet(True)
    assert "quiet mode is damaged" in caplog.text
    async with await microsync.Device.open(path) as again:
        assert again.quiet


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modes=st.lists(st.tuples(st.booleans(), st.sampled_from([0, 1, 3])), min_size=1, max_size=8))
def test_any_run_of_toggles_ends_as_the_last_one_said(modes: list[tuple[bool, int]]) -> None:
    """Whatever the order and spacing of ``set_quiet`` calls on a started device (each followed
    by 0-3 turns of the event loop), its standing work ends up as the last call said, with
    no task left over from the calls before."""
    asyncio.run(_toggled(modes))


async def _toggled(modes: list[tuple[bool, int]]) -> None:
    seen: Counter[str] = Counter()
    FakeDiscovery.started, FakeDiscovery.running = seen, set()
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as root:
        patch.setattr(standing, "LanDiscovery", FakeDiscovery)
        async with await microsync.Device.open(Path(root), name="A", quiet=True) as device:
            await device.create_group("G")
            dead = f"127.0.0.1:{closed_port()}"
            await device.start(lan=True, port=0, bind="127.0.0.1", peers=(dead,))
            for quiet, turns in modes:
                device.set_quiet(quiet)
                for _ in range(turns):
                    await asyncio.sleep(0)
            last = modes[-1][0]
            await eventually(lambda: len(FakeDiscovery.running) == (0 if last else 1))
            await eventually(lambda: standing_tasks() == ([] if last else [f"keep {dead}"]))
            assert seen["start"] - seen["stop"] == (0 if last else 1)
            await device.stop()
            assert standing_tasks() == [] and not FakeDiscovery.running
