"""``events()`` never misses (issue 18 point 8): on a device that never read its vault or its
timeline in this process, the first batch of adds still appears, and a stream hears what
arrives between ``events()`` and its first iteration. Real SQLite profiles."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from pathlib import Path

import microsync
from microsync.app.events import Posted
from microsync.node.events import Event, VaultAdded
from microsync.testing import app_state
from tests.test_app_group import family_of
from tests.test_device_groups import sync


async def next_events(stream: object, count: int) -> list[Event]:
    events = []
    for _ in range(count):
        events.append(await asyncio.wait_for(anext(stream), 5))  # type: ignore[call-overload]
    return events


async def test_the_first_vault_adds_after_a_restart_are_events(tmp_path: Path) -> None:
    """The issue's case: Bob restarts, listens, and Alice's first two files of the session
    arrive in one batch: both are events (they used to be folded silently with the history)."""
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await alice.vault.add(b"old", name="before.jpg")  # history: no event for it
        sync(alice.device, bob.device, alice.id)
        await bob.device.close()
        device = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Bob"))
        group = device.group(alice.id)
        seen: list[Event] = []

        async def collect() -> None:
            async for event in group.events():
                seen.append(event)

        listener = asyncio.create_task(collect())
        await asyncio.sleep(0)  # the app is now iterating
        first = await alice.vault.add(b"one", name="one.jpg")
        second = await alice.vault.add(b"two", name="two.jpg")
        sync(alice.device, device, alice.id)
        await asyncio.sleep(0)
        listener.cancel()
        added = [e.ref.name for e in seen if isinstance(e, VaultAdded)]
        assert sorted(added) == ["one.jpg", "two.jpg"]
        assert {e.ref.id for e in seen if isinstance(e, VaultAdded)} == {first.id, second.id}


async def test_what_arrives_before_the_first_iteration_is_heard(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        await bob.device.close()
        device = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Bob"))
        stream = device.group(alice.id).events()  # not iterated yet
        await alice.post("hello")
        await alice.vault.add(b"pic", name="pic.jpg")
        sync(alice.device, device, alice.id)
        events = await next_events(stream, 2)
        assert {type(e) for e in events} == {Posted, VaultAdded}
        await stream.aclose()


async def test_my_own_first_vault_add_is_an_event(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        stream = alice.events()
        ref = await alice.vault.add(b"mine", name="mine.jpg")
        [event] = await next_events(stream, 1)
        assert isinstance(event, VaultAdded) and event.ref.id == ref.id
        await stream.aclose()


async def test_a_stream_dropped_unread_stops_listening(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        stream = alice.events()
        assert app_state(alice).listening
        del stream
        gc.collect()
        assert not app_state(alice).listening
        closed = alice.events()
        await closed.aclose()  # closed before it ever ran: nothing is left listening either
        del closed
        gc.collect()
        assert not app_state(alice).listening


async def drain(stream: AsyncGenerator[Event, None]) -> list[Event]:
    """Every event queued on ``stream`` now (the stream is closed after)."""
    out: list[Event] = []
    while True:
        try:
            out.append(await asyncio.wait_for(anext(stream), 0.2))
        except TimeoutError:
            return out


async def test_a_batch_that_moves_a_cut_off_back_is_still_news(tmp_path: Path) -> None:
    """A removal whose cut-off reaches back over what Bob had folded makes him fold the group
    again; the posts that came in the same batch are still events."""
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        late = await carol.post("late")
        sync(carol.device, bob.device, alice.id)  # Alice never sees it
        assert late.id in {p.id for p in bob.feed()}
        stream = bob.events()
        await alice.remove(carol.device.person_id)
        news = await alice.post("news")
        sync(alice.device, bob.device, alice.id)
        events = await drain(stream)
        posted = [e.post.id for e in events if isinstance(e, Posted) and e.post is not None]
        assert posted == [news.id]
        assert late.id not in {p.id for p in bob.feed()}  # past the cut-off: gone
