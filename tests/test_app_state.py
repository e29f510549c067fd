"""The app state a Group composes, used directly: synchronous, every call takes ``now`` and
returns the events it produced (nothing is delivered behind the caller's back)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from microsync.app.events import Expired, Posted, Reacted
from microsync.app.ops import EditOp, PostOp, ReactOp
from microsync.errors import NotAMember
from microsync.testing import app_state
from tests.test_app_group import family_of, share


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_writes_return_the_entry_and_the_events_they_made(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        state = app_state(alice)
        state.listening = True  # post events carry views: built only when someone takes them
        start = now_ms()
        entry, events = state.write(PostOp(text="short-lived", ttl_ms=5_000), start)
        assert [type(e) for e in events] == [Posted]
        (posted,) = events
        assert posted.post is not None and posted.post.id == entry.id
        assert posted.post.text == "short-lived" and posted.person == alice._person()
        assert state.post(entry.id, start).text == "short-lived"

        _, events = state.write(ReactOp(post=bytes(entry.id), emoji="👍"), start + 1)
        assert [type(e) for e in events] == [Reacted]
        assert events[0].post is not None and events[0].post.reactions == {
            "👍": frozenset({alice._person()})
        }

        share(alice, bob)
        assert app_state(bob).post(entry.id, start + 2).text == "short-lived"
        assert state.expire(start + 4_000) == []  # not yet
        (gone,) = state.expire(start + 6_000)  # the clock is the caller's: no waiting
        assert isinstance(gone, Expired) and gone.post is not None and gone.post.text is None
        assert state.expire(start + 7_000) == []  # once
        assert [p.text for p in state.feed(None, start + 7_000)[0]] == []

        theirs = app_state(bob)
        assert [p.text for p in theirs.feed(None, start + 4_000)[0]] == ["short-lived"]
        assert theirs.feed(None, start + 6_000)[0] == []  # bob's clock, as the caller says


async def test_events_reach_listeners_only_through_the_group(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        stream = alice.events()
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        app_state(alice).write(PostOp(text="direct"), now_ms())  # returned, not delivered
        post = await alice.post("through the group")
        event = await asyncio.wait_for(waiting, 5)
        assert isinstance(event, Posted) and event.post is not None
        assert event.post.id == post.id
        await stream.aclose()


async def test_a_refused_write_raises_after_it_is_folded(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        post = await alice.post("mine")
        share(alice, bob)
        with pytest.raises(NotAMember):
            app_state(bob).write(EditOp(post=bytes(post.id), text="not yours"), now_ms())
        assert app_state(bob).post(post.id, now_ms()).text == "mine"
