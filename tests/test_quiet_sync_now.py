"""Sync on demand (issue 18, point 4): ``Device.sync_now`` does one round with every known peer,
relay and keeper, returns a typed summary within its timeout, and leaves nothing running.
Real profiles, real TCP on 127.0.0.1, a real relay and a real keeper subprocess."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import pytest

import microsync
from microsync.net.relay import RelayServer
from microsync.net.stream import Stream, open_tcp
from microsync.node import SyncSummary, Via, runtime
from tests.keeper_helpers import keeper
from tests.test_app_group import family_of
from tests.test_keeper_group import kept_family, texts
from tests.test_net_sync import eventually


def tasks_now() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks()}


@contextmanager
def silent_listener() -> Iterator[str]:
    """A port that accepts TCP and then never says a word (a handshake there hangs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def closed_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def only(summary: SyncSummary, via: Via) -> list[microsync.node.SyncAttempt]:
    return [a for a in summary.attempts if a.via is via]


async def test_two_quiet_devices_never_online_together_talk_through_a_keeper(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "Alice", "Bob")
            alice.device.set_quiet(True)
            bob.device.set_quiet(True)
            before = tasks_now()

            post = await alice.post("landed, phone on 3%")  # Alice: never started
            sent = await alice.device.sync_now(timeout=20)
            [via_keeper] = only(sent, Via.KEEPER)
            assert via_keeper.synced and via_keeper.address == k.url, sent.line()
            assert via_keeper.entries_sent >= 1 and via_keeper.groups == (alice.id,)
            assert tasks_now() == before  # nothing outlives the round

            await bob.device.start(lan=False, port=None)  # Bob: started, quiet
            got = await bob.device.sync_now(timeout=20)
            assert got.synced and got.new_entries >= 1 and "landed, phone on 3%" in texts(bob)
            await bob.reply(post.id, "charge it!")
            await bob.device.sync_now(timeout=20)
            await bob.device.stop()
            assert tasks_now() == before

            back = await alice.device.sync_now(timeout=20)
            assert "charge it!" in texts(alice) and back.new_entries >= 1
            assert "Synced 1 of 1" in back.line() and k.url in back.line()


async def test_an_unreachable_peer_fails_within_the_timeout_with_its_reason(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bob.device.start(lan=False, port=0)
        await bob.post("from a device that answers")
        live = f"127.0.0.1:{bob.device.port}"
        refused = closed_address()
        with silent_listener() as silent:
            loop = asyncio.get_running_loop()
            started = loop.time()
            summary = await alice.device.sync_now(
                timeout=2.0, peers=(live, silent, refused), relay=f"ws://{closed_address()}"
            )
            took = loop.time() - started
        assert took < 3.0, took  # the deadline, plus closing what was open
        by_address = {a.address: a for a in summary.attempts}
        assert by_address[live].synced and by_address[live].peers == (bob.device.id,)
        assert by_address[live].entries_received >= 1
        assert not by_address[silent].synced and by_address[silent].error == "no answer in time"
        assert "nothing is listening there" in (by_address[refused].error or "")
        [relay] = only(summary, Via.RELAY)
        assert not relay.synced and "cannot reach the relay" in (relay.error or "")
        assert "from a device that answers" in texts(alice)
        assert summary.failed == tuple(a for a in summary.attempts if a is not by_address[live])
        line = summary.line()
        assert "\n" not in line and line.startswith("Synced 1 of 4") and "failed: " in line
        await bob.device.stop()


async def test_known_peers_and_a_quiet_devices_kept_addresses_are_dialled(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        await bob.device.start(lan=False, port=0)
        await carol.device.start(lan=False, port=0)
        await alice.device.sync_with("127.0.0.1", bob.device.port or 0)  # now a known peer
        alice.device.set_quiet(True)
        await alice.device.start(lan=False, port=None, peers=(f"127.0.0.1:{carol.device.port}",))
        assert alice.device.peers() == []  # quiet: the kept address is not dialled
        await bob.post("Bob's")
        await carol.post("Carol's")
        summary = await alice.device.sync_now(timeout=20)
        assert {a.address for a in summary.synced} == {
            f"127.0.0.1:{bob.device.port}",
            f"127.0.0.1:{carol.device.port}",
        }
        assert {"Bob's", "Carol's"} <= texts(alice) and summary.new_entries >= 2
        assert alice.device.peers() == []  # each closed after its sync
        for device in (alice.device, bob.device, carol.device):
            await device.stop()


async def test_a_round_meets_the_members_at_a_relay(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bob.device.start(lan=False, port=None, relay=url)
        await bob.post("through the relay")
        summary = await alice.device.sync_now(timeout=20, relay=url)
        [met] = only(summary, Via.RELAY)
        assert met.synced and met.peers == (bob.device.id,) and met.entries_received >= 1
        assert "through the relay" in texts(alice)
        await bob.device.stop()
        # nobody there now: the round leaves the relay soon, saying so
        alone = await alice.device.sync_now(timeout=20, relay=url)
        [empty] = only(alone, Via.RELAY)
        assert not empty.synced and empty.error == "no member of your groups was there"


async def test_nothing_to_sync_with_is_an_empty_round(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="Alone") as alone:
        await alone.create_group("Just me")
        summary = await alone.sync_now(timeout=5)
        assert summary.attempts == () and summary.new_entries == 0
        assert summary.line() == "Nothing to sync with: no known peer, relay or keeper"


async def test_a_loud_devices_round_leaves_its_live_connections_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bob.device.start(lan=False, port=0)
        address = f"127.0.0.1:{bob.device.port}"
        await alice.device.start(lan=False, port=None, peers=(address,))
        await eventually(lambda: [p.synced for p in alice.device.peers()] == [True])
        [before] = alice.device.peers()
        dials: list[str] = []

        async def dialling(host: str, port: int, *, timeout: float) -> Stream:
            dials.append(f"{host}:{port}")
            return await open_tcp(host, port, timeout=timeout)

        monkeypatch.setattr(runtime, "open_tcp", dialling)
        summary = await alice.device.sync_now(timeout=10)
        assert dials == []  # in sync over the live one: nothing to dial
        [attempt] = summary.attempts
        assert attempt.address == address and attempt.synced
        assert attempt.peers == (bob.device.id,)
        assert alice.device.peers() == [before] and len(bob.device.peers()) == 1  # no churn
        await alice.device.stop()
        await bob.device.stop()


@pytest.mark.parametrize(
    "arguments",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"peers": ("no-port-here",)},
        {"peers": ("127.0.0.1:99999",)},
        {"relay": "http://127.0.0.1:1"},
    ],
)
async def test_bad_arguments_are_a_value_error_before_anything_is_dialled(
    tmp_path: Path, arguments: dict[str, object]
) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="A") as device:
        before = tasks_now()
        with pytest.raises(ValueError):
            await device.sync_now(**arguments)  # type: ignore[arg-type]
        assert tasks_now() == before and not device.status().online
