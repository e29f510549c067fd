"""Groups using a keeper end to end: real devices in this process, a real keeper subprocess
(``microsync keeper``) on 127.0.0.1. Alice and Bob are never online at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import microsync
from tests.keeper_helpers import keeper
from tests.test_app_group import family_of, share


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


def texts(group: microsync.Group) -> set[str]:
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
