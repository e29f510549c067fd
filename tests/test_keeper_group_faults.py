"""A group's keeper failing under its devices: down, killed mid-push and mid-pull, full.
Real devices in this process, a real keeper subprocess on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import socket
import sqlite3
from contextlib import AsyncExitStack
from pathlib import Path

import microsync
from microsync.feed import parse_entry
from microsync.group.mailbox import Mailbox
from microsync.net.keeper_client import KeeperClient
from microsync.node.keeper_state import decode_record
from microsync.testing import replica_of, store_of
from tests.keeper_helpers import Keeper, keeper, start_keeper
from tests.test_app_group import family_of, share
from tests.test_keeper_group import kept_family, online, pushed_all, texts, until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entry_count(device: microsync.Device, group: microsync.Group) -> int:
    store = store_of(device)
    return sum(status.head_seq for status in store.feeds(group.id).values())


def items_held(data: Path) -> int:
    with sqlite3.connect(data / "keeper.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM items").fetchone()[0])


async def test_with_the_keeper_down_devices_sync_peer_to_peer_and_catch_up_later(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    async with AsyncExitStack() as stack:
        alice, bob = await kept_family(stack, tmp_path, url, "alice", "bob")
        await alice.device.start(lan=False, port=0)
        await online(bob)
        await alice.post("nobody keeps this yet")
        await until(lambda: alice.keeper_status()[0].status.startswith("unreachable"))
        assert not alice.keeper_status()[0].connected
        await bob.device.sync_with("127.0.0.1", alice.device.port or 0)
        assert "nobody keeps this yet" in texts(bob)
        with keeper(tmp_path / "keeper", "--port", str(port)):
            await until(lambda: pushed_all(alice) and pushed_all(bob), 60.0)
            await alice.device.stop()
            await bob.device.stop()
            assert items_held(tmp_path / "keeper") == entry_count(alice.device, alice)


async def test_a_keeper_killed_mid_push_and_mid_pull_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = tmp_path / "keeper"
    rng = random.Random(16)
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "alice", "bob")
        running: Keeper = start_keeper(data, "--port", str(port))
        try:
            await alice.add_keeper(running.url)
            share(alice, bob)
            for n in range(600):
                await alice.post(f"post {n} " + "x" * 200)
            await online(alice)
            for _ in range(3):  # killed while pushing, then back on the same port and data
                await asyncio.sleep(rng.uniform(0.05, 0.4))
                running.kill()
                running = start_keeper(data, "--port", str(port))
            await until(lambda: pushed_all(alice), 90.0)
            await alice.device.stop()
            held = entry_count(alice.device, alice)

            await online(bob)
            for _ in range(3):  # killed while Bob pulls
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                running.kill()
                running = start_keeper(data, "--port", str(port))
            await until(lambda: len(bob.feed()) == 600, 90.0)
            await until(lambda: pushed_all(bob), 60.0)
            await bob.device.stop()
        finally:
            running.kill()
        assert entry_count(bob.device, bob) == held
        assert items_held(data) == held  # each entry once, whoever pushed it, however often


async def test_a_full_keeper_is_a_typed_refusal_in_status_and_the_device_retries(
    tmp_path: Path,
) -> None:
    port = free_port()
    data = tmp_path / "keeper"
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "alice", "bob")
        with keeper(data, "--port", str(port), "--quota", "20K") as k:
            await alice.add_keeper(k.url)
            share(alice, bob)
            for n in range(60):
                await alice.post(f"post {n} " + "y" * 500)
            await online(alice)
            await until(lambda: "mailbox full" in alice.keeper_status()[0].status, 30.0)
            assert alice.keeper_status()[0].unpushed > 0
            assert len(alice.feed()) == 60  # nothing lost here
        with keeper(data, "--port", str(port)):  # room again: the device retries by itself
            await until(lambda: pushed_all(alice), 90.0)
            await alice.device.stop()
            await online(bob)
            await until(lambda: len(bob.feed()) == 60, 30.0)
            await bob.device.stop()


async def test_a_restarted_device_pushes_only_what_is_new(tmp_path: Path) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            (alice,) = await family_of(stack, tmp_path, "alice")
            await alice.add_keeper(k.url)
            for n in range(50):
                await alice.post(f"post {n}")
            await online(alice)
            await until(lambda: pushed_all(alice))
            assert alice.keeper_status()[0].pushed >= 50
            await alice.device.stop()
            await online(alice)
            await until(lambda: pushed_all(alice))
            await alice.post("one more")
            await until(lambda: pushed_all(alice))
            assert alice.keeper_status()[0].pushed == 1
            await alice.device.stop()


async def test_a_keeper_that_withholds_the_newest_items_is_made_good_by_another(
    tmp_path: Path,
) -> None:
    """A keeper serving a partial view (it leaves out the newest post) cannot hide it: the
    device takes it from the group's other keeper, and pushes it back to the one that lacked
    it (members push each other's entries). A keeper cannot alter an item either: each is
    sealed to its mailbox and carries a signed entry, checked on the shared receive path."""
    with keeper(tmp_path / "k1") as k1, keeper(tmp_path / "k2") as k2:
        async with AsyncExitStack() as stack:
            alice, bob = await family_of(stack, tmp_path, "alice", "bob")
            await alice.add_keeper(k1.url)
            await alice.add_keeper(k2.url)
            share(alice, bob)
            await online(bob)
            await bob.post("first")
            hidden = await bob.post("the newest, withheld by k1")
            await until(lambda: pushed_all(bob))
            await bob.device.stop()

            key = replica_of(bob).current_epoch_key()
            assert key is not None
            mailbox = Mailbox.derive(key.control.secret_bytes())
            async with await KeeperClient.connect(k1.url) as client:  # k1 turns dishonest
                assert await client.delete(mailbox, [bytes(hidden.id)]) == 1
                assert bytes(hidden.id) not in await names_at(client, mailbox)

            await online(alice)
            await until(lambda: "the newest, withheld by k1" in texts(alice))
            await until(lambda: pushed_all(alice))
            await alice.device.stop()
            async with await KeeperClient.connect(k1.url) as client:
                assert bytes(hidden.id) in await names_at(client, mailbox)


async def names_at(client: KeeperClient, mailbox: Mailbox) -> set[bytes]:
    """The ids of the entries a keeper serves in ``mailbox`` (the client opens each item)."""
    return {parse_entry(decode_record(item.data)[0]).id async for item in client.pull(mailbox)}
