"""A device's clock, randomness and background tasks: ``Device.open(clock=, rng=)`` reaches the
identity, the groups and the network; every background task is a child of one task group, so
a task that fails for a reason nobody handles stops the others and reaches ``stop()``."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.clock import system_clock
from microsync.node.tasks import TaskTree
from microsync.testing import FakeClock
from tests.conftest import make_rng
from tests.test_app_group import family_of

START = 1_800_000_000_000


async def test_the_clock_dates_the_identity_the_groups_and_their_posts(tmp_path: Path) -> None:
    clock = FakeClock(START)
    async with await microsync.Device.open(tmp_path / "a", name="Alice", clock=clock) as alice:
        assert alice.clock is clock
        family = await alice.create_group("Family")
        clock.advance(5_000)
        post = await family.post("hello")
        assert post.created_at.timestamp() * 1000 == START + 5_000
        invite = await family.invite(ttl=60)
        assert invite.expires_at == START + 5_000 + 60_000


async def test_the_same_clock_and_rng_make_the_same_device(tmp_path: Path) -> None:
    ids = []
    for name in ("one", "two"):
        clock, rng = FakeClock(START), make_rng("same seed")
        async with await microsync.Device.open(
            tmp_path / name, name="Alice", clock=clock, rng=rng
        ) as device:
            ids.append((device.id, device.person_id))
    assert ids[0] == ids[1]
    async with await microsync.Device.open(tmp_path / "other", name="Alice") as device:
        assert (device.id, device.person_id) != ids[0]  # the system rng otherwise


async def test_restore_takes_a_clock_and_rng_too(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="Alice") as alice:
        words = alice.export_recovery_words()
        person = alice.person_id
    clock = FakeClock(START)
    async with await microsync.Device.restore(
        tmp_path / "b", words, name="Alice", clock=clock, rng=make_rng("restored")
    ) as again:
        assert again.person_id == person and again.clock is clock


async def test_a_shared_fake_clock_expires_announcements_on_every_device(tmp_path: Path) -> None:
    clock = FakeClock(system_clock())
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        await alice.announce_presence("online", ttl=30)
        for sealed in alice.announcements():
            bob.receive_announcement(sealed)
        assert bob.presence()[alice.device.person_id].online
        clock.advance(31_000)
        assert not bob.presence()[alice.device.person_id].online


# ----------------------------------------------------------------------------- task group


async def test_a_failing_child_cancels_its_siblings_and_close_raises_it() -> None:
    tree = TaskTree("test")
    await tree.open()
    sibling_cancelled = asyncio.Event()

    async def sibling() -> None:
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    async def bug() -> None:
        raise ZeroDivisionError("a bug")

    assert tree.spawn(sibling(), "sibling") is not None
    await asyncio.sleep(0)
    tree.spawn(bug(), "bug")
    await asyncio.wait_for(sibling_cancelled.wait(), 5)
    assert not tree.running
    with pytest.raises(ZeroDivisionError, match="a bug"):
        await tree.close()


async def test_close_cancels_and_awaits_every_child_and_refuses_new_ones() -> None:
    tree = TaskTree("test")
    await tree.open()
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Future()
        finally:
            ended.append(name)

    tasks = [tree.spawn(forever(n), n) for n in ("a", "b", "c")]
    await asyncio.sleep(0)
    await tree.close()
    assert sorted(ended) == ["a", "b", "c"]
    assert all(t is not None and t.done() for t in tasks)
    late = forever("late")
    assert tree.spawn(late, "late") is None
    assert late.cr_frame is None  # closed, never run (no "never awaited" warning)
    await tree.close()  # idempotent
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == []


async def test_a_bug_in_a_background_task_reaches_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    called = asyncio.Event()

    async def broken(self: microsync.Group, status: str = "online", **_: object) -> None:
        called.set()
        raise RuntimeError("presence is broken")

    monkeypatch.setattr(microsync.Group, "announce_presence", broken)
    async with AsyncExitStack() as stack:
        [alice] = await family_of(stack, tmp_path, "Alice")
        alice.set_presence_sharing(True)  # the heartbeat announces only where opted in
        device = alice.device
        await device.start(lan=False, port=0)
        await asyncio.wait_for(called.wait(), 5)  # the heartbeat's first round
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="presence is broken"):
            await device.stop()
        assert device.port is None  # offline all the same
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == []


async def test_a_one_shot_sync_leaves_no_task_behind(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.device.start(lan=False, port=0)
        port = alice.device.port
        assert port
        await alice.post("hi")
        await bob.device.sync_with("127.0.0.1", port)
        await alice.device.stop()
        await asyncio.sleep(0.05)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert left == [], left


async def test_a_malformed_address_is_refused_by_connect_not_by_a_task(tmp_path: Path) -> None:
    async with await microsync.Device.open(tmp_path / "a", name="Alice") as alice:
        await alice.start(lan=False, port=None)
        with pytest.raises(ValueError, match="host:port"):
            alice.connect("no port here")
        await alice.stop()  # nothing failed in the background
