"""Groups using a keeper end to end: real devices in this process, a real keeper subprocess
(``microsync keeper``) on 127.0.0.1. Alice and Bob are never online at the same time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

import microsync
from microsync.group.mailbox import Mailbox
from microsync.node import keeper_pull
from microsync.testing import replica_of
from tests.keeper_helpers import keeper
from tests.test_app_group import family_of, share
from tests.test_device_groups import introduce, pair


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    """Wait until ``check()`` is true (polling), or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def pushed_all(group: microsync.Group) -> bool:
    found = group.keeper_status()
    return bool(found) and all(s.connected and s.unpushed == 0 for s in found)


async def online(group: microsync.Group) -> None:
    """Start ``group``'s device with no listener and no LAN: the keeper is its only way out."""
    await group.device.start(lan=False, port=None)


async def kept_family(
    stack: AsyncExitStack, root: Path, url: str, *names: str
) -> list[microsync.Group]:
    """Devices named ``names`` in one group founded by the first (:func:`family_of`), which
    adds the keeper at ``url``; the setting reaches everyone through the group's state."""
    groups = await family_of(stack, root, *names)
    await groups[0].add_keeper(url)
    share(*groups)
    return groups


def texts(group: microsync.Group) -> set[str | None]:
    return {p.text for p in group.feed()}


async def test_alice_and_bob_never_online_together_talk_through_a_keeper(tmp_path: Path) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await family_of(stack, tmp_path, "alice", "bob")
            assert await alice.add_keeper(k.url + "/") == k.url
            share(alice, bob)  # the setting travels in the group's state
            assert bob.keepers() == [k.url]

            await online(alice)
            post = await alice.post("made it to Oxford")
            await until(lambda: pushed_all(alice))
            await alice.device.stop()

            await online(bob)
            await until(lambda: "made it to Oxford" in texts(bob))
            await bob.reply(post.id, "call when you can")
            await bob.react(post.id, "❤️")
            await bob.doc("plans").set("dinner", "sunday")
            await until(lambda: pushed_all(bob))
            await bob.device.stop()

            await online(alice)
            await until(lambda: "call when you can" in texts(alice))
            await until(lambda: alice.post_by_id(post.id).reactions.get("❤️"))
            await until(lambda: alice.doc("plans").get("dinner") == "sunday")
            await alice.doc("plans").set("dinner", "saturday")
            await until(lambda: pushed_all(alice))
            await alice.device.stop()

            await online(bob)
            await until(lambda: bob.doc("plans").get("dinner") == "saturday")
            await bob.device.stop()


async def test_carol_joins_while_alice_is_offline_and_catches_up_from_the_keeper(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "alice", "bob")
            await online(bob)
            await bob.post("before carol")
            await until(lambda: pushed_all(bob))
            await bob.device.stop()

            carol_device = await stack.enter_async_context(
                await microsync.Device.open(tmp_path / "carol", name="carol")
            )
            introduce(alice.device, carol_device)
            invite = await alice.invite(ttl=3600)
            await online(alice)  # Alice admits Carol, pushes the add, and goes away
            response = pair(
                alice.device.invite_host().session(), carol_device.join_guest(invite.link)
            )
            await until(lambda: pushed_all(alice))
            await alice.device.stop()

            carol = await carol_device.finish_join(response)
            await online(carol)
            await until(lambda: carol.is_member() and "before carol" in texts(carol))
            assert carol.keepers() == [k.url]
            await carol.post("hello all")
            await until(lambda: pushed_all(carol))
            await carol.device.stop()

            await online(bob)
            await until(lambda: "hello all" in texts(bob))
            await bob.device.stop()


async def test_a_first_pull_takes_the_newest_items_first_then_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeper_pull, "NEWEST_FIRST", 10)
    pages: list[tuple[bool, list[int]]] = []
    take_in = keeper_pull.KeeperPull.take_in

    def recorded(self: keeper_pull.KeeperPull, *args: Any, advance: bool = True) -> None:
        if self.link.runtime.device.name == "alice":
            pages.append((advance, [p.cursor for p in args[2]]))
        take_in(self, *args, advance=advance)

    monkeypatch.setattr(keeper_pull.KeeperPull, "take_in", recorded)
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "alice", "bob")
            await online(bob)
            for n in range(40):
                await bob.post(f"post {n}")
            await until(lambda: pushed_all(bob))
            await bob.device.stop()

            await online(alice)  # lacks all 40: her first pull of the mailbox
            await until(lambda: {f"post {n}" for n in range(40)} <= texts(alice))
            await alice.device.stop()
    pulled = [c for advance, cursors in pages if advance for c in cursors]
    assert pages[0][0] is False, "the first page is the newest-first window"
    newest = pages[0][1]
    assert len(newest) == 10 and newest == sorted(newest)  # taken in oldest of them first
    assert min(newest) > min(pulled) and max(newest) == max(pulled)  # the newest, not the first
    assert sorted(set(pulled)) == list(range(min(pulled), max(pulled) + 1))  # then everything


async def test_two_members_linked_only_by_the_keeper_get_each_others_posts_live(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob = await kept_family(stack, tmp_path, k.url, "alice", "bob")
            await online(alice)
            await online(bob)
            await until(lambda: pushed_all(alice) and pushed_all(bob))
            await asyncio.sleep(0.5)  # both watching now
            loop = asyncio.get_running_loop()
            delays: list[float] = []
            for n, (writer, reader) in enumerate([(alice, bob), (bob, alice)] * 3):
                started = loop.time()
                await writer.post(f"live {n}")
                text = f"live {n}"
                await until(lambda: text in texts(reader), 5.0)  # noqa: B023 (awaited here)
                delays.append(loop.time() - started)
            assert max(delays) < 1.5, delays
            await alice.device.stop()
            await bob.device.stop()


async def test_a_removed_member_cannot_read_or_write_anything_new_at_the_keeper(
    tmp_path: Path,
) -> None:
    with keeper(tmp_path / "keeper") as k:
        async with AsyncExitStack() as stack:
            alice, bob, carol = await kept_family(stack, tmp_path, k.url, "alice", "bob", "carol")
            bobs_keys = set(replica_of(bob).epoch_keys())
            await alice.remove(bob.device.person_id)
            await online(alice)
            await alice.post("after bob left")
            await until(lambda: pushed_all(alice))
            await alice.device.stop()
            new = replica_of(alice).current_epoch_key()
            assert new is not None and (new.number, new.commitment) not in bobs_keys

            await online(bob)  # finds the removal (sealed in the epoch it had), nothing after
            await until(lambda: not bob.is_member())
            assert (new.number, new.commitment) not in replica_of(bob).epoch_keys()
            assert "after bob left" not in texts(bob)
            new_mailbox = Mailbox.derive(new.control.secret_bytes()).id
            held = {
                Mailbox.derive(k.control.secret_bytes()).id
                for k in replica_of(bob).epoch_keys().values()
            }
            assert new_mailbox not in held  # it cannot even name the new mailbox
            with contextlib.suppress(microsync.NotAMember):
                await bob.post("still here?")
            await asyncio.sleep(1.0)
            await bob.device.stop()

            await online(carol)
            await until(lambda: "after bob left" in texts(carol))
            assert "still here?" not in texts(carol)
            await carol.device.stop()
