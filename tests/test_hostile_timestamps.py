"""Issue 13, item 4: no signed value can break a receiver.

A member (Mallory, with the hostile kit) signs entries dated anywhere in ``[0, 2**63 - 1]``
and app operations with any field values; the victim (Bob) receives them over TCP on
127.0.0.1 (or by hand, for the fuzz), and must still list its feed, post, sync, and open its
profile again. Its own clock (the ``hlc`` it signs) never moves more than ``MAX_DRIFT_MS``
ahead of the wall clock, and a disappearing post disappears at the latest its time-to-live
after it arrived (``docs/security.md``, "Timestamps").
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import microsync
from microsync import encoding
from microsync.app import arrivals
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.app.timeline import AppEntry, Timeline
from microsync.errors import LocalProtocolError, MicrosyncError
from microsync.feed.entry import MAX_HLC, EntryId
from microsync.identity import DeviceId, PersonId
from microsync.state import RegisterSet, Timestamp, encode_op
from microsync.state.clock import HLC, MAX_DRIFT_MS, MAX_TICK
from microsync.state.ids import MAX_COUNTER, OpId
from microsync.storage.memory import MemoryStore
from microsync.testing import app_state, replica_of, store_of
from microsync.testing.hostile import Hostile
from tests.test_app_group import family_of, share
from tests.test_net_sync import eventually

YEAR_MS = 365 * 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def extremes() -> list[int]:
    now = now_ms()
    return [0, 1, now - 10 * YEAR_MS, now + 10 * YEAR_MS, 2**62, MAX_HLC]


def evil_op(evil: Hostile, op: AppOp, hlc: int, deps: tuple[EntryId, ...] = ()) -> EntryId:
    return evil.append_content(APP_TYPE, op.to_bytes(), hlc=hlc, deps=deps).id


def stored_hlc(group: microsync.Group, entry_id: bytes) -> int | None:
    """The ``hlc`` of an entry this device stores (for its own: what its clock said)."""
    store = store_of(group.device)
    for device in store.feeds(replica_of(group).id):
        for stored in store.entries(replica_of(group).id, device):
            if stored.entry.id == entry_id:
                return stored.entry.header.hlc
    return None


def signed_hlc(group: microsync.Group, entry_id: bytes) -> int:
    found = stored_hlc(group, entry_id)
    assert found is not None
    return found


def assert_clock_kept(group: microsync.Group, post: microsync.Post) -> None:
    """The victim dated its own write at its clock, at most ``MAX_DRIFT_MS`` ahead."""
    assert signed_hlc(group, post.id) <= now_ms() + MAX_DRIFT_MS
    assert post.created_at.timestamp() * 1000 <= now_ms() + MAX_DRIFT_MS


async def attack(mallory: microsync.Group, bob: microsync.Group, hlc: int) -> list[EntryId]:
    """Mallory answers Bob's post with entries dated ``hlc``: a post, a reply, a reaction, an
    edit of her post, a disappearing post and a location."""
    honest = await bob.post("hello from Bob")
    share(mallory, bob)
    evil = Hostile.of_group(mallory)
    heads = tuple(sorted(app_state(mallory).timeline(mallory.device.clock()).heads))
    post = evil_op(evil, AppOp(Kind.POST, text="from the future"), hlc, heads)
    reply = AppOp(Kind.POST, text="re", reply_to=honest.id)
    evil_op(evil, reply, hlc, (EntryId(honest.id), post))
    evil_op(evil, AppOp(Kind.REACT, post=honest.id, emoji="!"), hlc, (EntryId(honest.id),))
    evil_op(evil, AppOp(Kind.EDIT, post=post, text="edited"), hlc, (post,))
    evil_op(evil, AppOp(Kind.POST, text="gone soon", ttl_ms=1000), hlc, heads)
    evil_op(evil, AppOp(Kind.LOCATION, lat=1, lon=2, precision="city"), hlc)
    return [post]


def assert_usable(bob: microsync.Group) -> list[microsync.Post]:
    """Everything that reads times works, and nothing is shown past the tolerance."""
    posts = bob.feed()
    horizon = now_ms() + MAX_DRIFT_MS
    assert all(p.created_at.timestamp() * 1000 <= horizon for p in posts)
    bob.presence()
    bob.locations()
    bob.unread_count()
    return posts


@pytest.mark.parametrize("which", range(6), ids=["0", "1", "-10y", "+10y", "2^62", "2^63-1"])
async def test_an_extreme_hlc_sent_over_tcp_breaks_nothing(tmp_path: Path, which: int) -> None:
    hlc = extremes()[which]
    async with AsyncExitStack() as stack:
        mallory, bob = await family_of(stack, tmp_path, "Mallory", "Bob")
        await mallory.device.start(lan=False, port=0)
        port = mallory.device.port
        assert port
        stream = bob.events()  # as `serve` has: events are built for every entry
        waiting = asyncio.ensure_future(anext(stream))
        [evil_post] = await attack(mallory, bob, hlc)
        result = await bob.device.sync_with("127.0.0.1", port)
        assert result.entries_received >= 6
        await asyncio.wait_for(waiting, 5)
        await stream.aclose()
        texts = [p.text for p in assert_usable(bob)]
        assert "from the future" in texts or "edited" in texts
        reply = await bob.reply(evil_post, "a reply to the future")
        assert_clock_kept(bob, reply)
        assert_clock_kept(bob, await bob.post("and a post"))
        await bob.device.sync_with("127.0.0.1", port)
        await eventually(lambda: stored_hlc(mallory, reply.id) is not None)
        path = bob.device.path
        await bob.device.close()
        async with await microsync.Device.open(path) as again:
            [group] = again.groups()
            texts = [p.text for p in assert_usable(group)]
            assert "a reply to the future" in texts and "and a post" in texts
            assert_clock_kept(group, await group.post("after reopening"))
            assert (await again.sync_with("127.0.0.1", port)).entries_sent >= 1


async def test_a_far_future_entry_is_shown_at_its_arrival(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        mallory, bob = await family_of(stack, tmp_path, "Mallory", "Bob")
        evil = Hostile.of_group(mallory)
        evil_op(evil, AppOp(Kind.POST, text="pinned on top until 2036"), now_ms() + 10 * YEAR_MS)
        share(mallory, bob)
        arrived = now_ms()
        later = await bob.post("written after it arrived")
        [evil_post] = [p for p in bob.feed() if p.text == "pinned on top until 2036"]
        shown = evil_post.created_at.timestamp() * 1000
        assert arrived - 1000 <= shown <= arrived + MAX_DRIFT_MS + 1000
        assert later.created_at.timestamp() * 1000 <= now_ms() + MAX_DRIFT_MS
        path = bob.device.path
        await bob.device.close()
        for _ in range(2):  # from the entries, then from the snapshot saved at close
            async with await microsync.Device.open(path) as again:
                [group] = again.groups()
                assert group.post_by_id(evil_post.id).created_at == evil_post.created_at


@pytest.mark.parametrize("hlc", [60_000, 10 * YEAR_MS, MAX_HLC], ids=["+1min", "+10y", "2^63-1"])
async def test_a_far_future_disappearing_post_expires_after_its_ttl(
    tmp_path: Path, hlc: int
) -> None:
    async with AsyncExitStack() as stack:
        mallory, bob = await family_of(stack, tmp_path, "Mallory", "Bob")
        evil = Hostile.of_group(mallory)
        dated = hlc if hlc == MAX_HLC else now_ms() + hlc
        evil_op(evil, AppOp(Kind.POST, text="disappearing", ttl_ms=1000), dated)
        share(mallory, bob)
        assert [p.text for p in bob.feed()] == ["disappearing"]
        await eventually(lambda: bob.feed() == [], timeout=5)  # ttl 1 s after it arrived
        path = bob.device.path
        await bob.device.close()
        async with await microsync.Device.open(path) as again:
            [group] = again.groups()
            assert group.feed() == []


async def test_live_push_of_an_extreme_hlc_keeps_the_sync_task_alive(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        mallory, bob = await family_of(stack, tmp_path, "Mallory", "Bob")
        stream = bob.events()

        async def far_post() -> None:
            async for event in stream:
                if event.post is not None and event.post.text == "far":
                    return

        waiting = asyncio.ensure_future(far_post())
        await mallory.device.start(lan=False, port=0)
        peers = (f"127.0.0.1:{mallory.device.port}",)
        await bob.device.start(lan=False, port=None, peers=peers)
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        evil_op(Hostile.of_group(mallory), AppOp(Kind.POST, text="far"), 2**62)
        await asyncio.wait_for(waiting, 10)
        after = await mallory.post("still connected?")
        await eventually(lambda: any(p.id == after.id for p in bob.feed()))
        await stream.aclose()


# ---------------------------------------------------------------------- fuzz: any signed field

ANY_INT = st.one_of(
    st.sampled_from([0, 1, -1, 2**31, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
)


def raw_op(kind: int, fields: dict[str, encoding.Value]) -> bytes:
    """An app op as Mallory's client encodes it: any kind, any field value (no checks)."""
    return encoding.encode([1, kind, fields])  # type: ignore[dict-item]


@st.composite
def hostile_ops(draw: st.DrawFn, target: bytes, device: bytes) -> bytes:
    """App ops whose numeric fields take any value."""
    n = draw(ANY_INT)
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return raw_op(1, {"text": "t", "ttl_ms": n})
    if choice == 1:
        return raw_op(6, {"cursor": [[target, n], [device, draw(ANY_INT)]]})
    if choice == 2:
        return raw_op(7, {"lat": n, "lon": draw(ANY_INT), "precision": "exact"})
    if choice == 3:
        counter = max(1, min(n, MAX_COUNTER // 2))  # the counter space itself: see the report
        wall, tick = max(0, min(draw(ANY_INT), MAX_HLC)), max(0, min(n, MAX_TICK))
        ts = Timestamp(wall, tick, device)
        op = RegisterSet(id=OpId(counter, device), key="k", ts=ts, value=n)
        return raw_op(8, {"doc": "d", "payload": encode_op(op)})
    if choice == 4:
        doc = [1, 1, device, n, "k", [draw(ANY_INT), draw(ANY_INT)], 0]
        return raw_op(8, {"doc": "d", "payload": encoding.encode(doc)})  # type: ignore[arg-type]
    return raw_op(n if -(2**63) <= n < 2**64 else 1, {"post": target})


def test_no_signed_value_breaks_the_victim(tmp_path: Path) -> None:
    """Hypothesis writes app ops with any numeric field, dated anywhere, into Mallory's feed;
    after each Bob (a real device on SQLite) lists, posts, writes its document, and his clock
    stays within the tolerance; at the end his profile opens again and still works."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        mallory, bob = loop.run_until_complete(family_of(stack, tmp_path, "Mallory", "Bob"))
        honest = loop.run_until_complete(bob.post("target"))
        share(mallory, bob)
        evil = Hostile.of_group(mallory)
        target, device = bytes(honest.id), bytes(mallory.device.id)

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def one(data: st.DataObject) -> None:
            plaintext = data.draw(hostile_ops(target, device))
            hlc = data.draw(st.integers(0, MAX_HLC) | st.sampled_from(extremes()))
            deps = data.draw(st.sampled_from([(), (EntryId(target),)]))
            evil.append_content(APP_TYPE, plaintext, hlc=hlc, deps=deps)
            share(mallory, bob)
            assert_usable(bob)
            post = loop.run_until_complete(bob.reply(target, "still here"))
            assert_clock_kept(bob, post)
            doc = bob.doc("d")
            # private: the document's Lamport counter and registers, to check an extreme timestamp
            if doc._doc.clock >= MAX_COUNTER:  # a peer used up the counters (see the report)
                with pytest.raises(LocalProtocolError):
                    loop.run_until_complete(doc.set("k", 1))
                return
            loop.run_until_complete(doc.set("k", 1))
            if doc._doc.registers.entries["k"].ts.wall < MAX_HLC:
                assert doc.get("k") == 1  # a far-future register does not pin the key

        one()
        path = bob.device.path
        loop.run_until_complete(stack.aclose())

        async def reopen() -> None:
            async with await microsync.Device.open(path) as again:
                [group] = again.groups()
                assert_usable(group)
                assert_clock_kept(group, await group.post("after the fuzz"))
                doc = group.doc("d")
                if doc._doc.clock < MAX_COUNTER:
                    await doc.set("k", 2)

        loop.run_until_complete(reopen())
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


def test_a_doc_timestamp_at_the_largest_counter_gives_a_decodable_successor() -> None:
    clock = HLC(b"b" * 32)
    top = Timestamp(now_ms(), MAX_TICK, b"a" * 32)
    assert clock.receive(top, now_ms()) > top
    assert clock.last.counter <= MAX_TICK
    assert top.successor(b"b" * 32) > top and top.successor(b"b" * 32).counter == 0


@pytest.mark.parametrize("wall", [None, MAX_HLC], ids=["+1min", "2^63-1"])
async def test_an_overwrite_of_a_register_at_the_largest_tick_reaches_every_member(
    tmp_path: Path, wall: int | None
) -> None:
    async with AsyncExitStack() as stack:
        mallory, bob, carol = await family_of(stack, tmp_path, "Mallory", "Bob", "Carol")
        actor = bytes(mallory.device.id)
        ts = Timestamp(now_ms() + 60_000 if wall is None else wall, MAX_TICK, actor)
        op = RegisterSet(id=OpId(1, actor), key="k", ts=ts, value="Mallory's")
        evil = Hostile.of_group(mallory)
        evil_op(evil, AppOp(Kind.DOC, doc="d", payload=encode_op(op)), now_ms())
        share(mallory, bob, carol)
        assert bob.doc("d").get("k") == "Mallory's"
        await bob.doc("d").set("k", "Bob's")
        share(mallory, bob, carol)
        # the same value on both: Bob's overwrite decodes at Carol's (at the very top the tie
        # goes to node and id, alike everywhere)
        assert carol.doc("d").get("k") == bob.doc("d").get("k")
        if wall is None:
            assert carol.doc("d").get("k") == "Bob's"


def test_entries_past_the_largest_hlc_are_refused_with_a_typed_error(tmp_path: Path) -> None:
    async def run() -> None:
        async with AsyncExitStack() as stack:
            mallory, bob = await family_of(stack, tmp_path, "Mallory", "Bob")
            evil = Hostile.of_group(mallory)
            body = evil.seal_content(APP_TYPE, AppOp(Kind.POST, text="x").to_bytes())[1]
            entry = evil.craft(type=APP_TYPE, body=body, epoch=mallory.epoch, hlc=2**63)
            before = store_of(bob.device).dump()
            bob.device.receive(mallory.id, [(entry.wire, body)])  # refused, typed, inside
            assert store_of(bob.device).dump() == before
            with pytest.raises(MicrosyncError):
                microsync.feed.parse_entry(entry.wire)
            assert_usable(bob)

    asyncio.run(run())


def test_the_arrival_log_appends_batches_keeps_the_first_and_compacts() -> None:
    store = MemoryStore()
    ids = [EntryId(bytes([i]) * 32) for i in range(arrivals.MAX_CHUNKS + 8)]
    for n, entry_id in enumerate(ids):
        arrivals.append(store, "a", {entry_id: 1000 + n})
        arrivals.append(store, "a", {entry_id: 5000 + n})  # a later arrival never counts
    expected = {entry_id: 1000 + n for n, entry_id in enumerate(ids)}
    assert arrivals.load(store, "a") == expected  # compacts: more than MAX_CHUNKS chunks
    assert store.get_meta("a/n") == encoding.encode(0)
    assert arrivals.load(store, "a") == expected


@settings(max_examples=200, deadline=None)
@given(
    hlc=st.integers(0, MAX_HLC),
    arrival=st.integers(0, 2**45),
    ttl=st.none() | st.integers(1000, 10 * YEAR_MS),
)
def test_the_timeline_shows_and_expires_by_the_arrival(
    hlc: int, arrival: int, ttl: int | None
) -> None:
    """Whatever the signed time: shown at most MAX_DRIFT_MS after arrival, gone at the latest
    ttl after it (by the receiver's clock), and exactly as signed when it was not ahead."""
    entry_id = EntryId(b"\x01" * 32)
    timeline = Timeline({entry_id: arrival} if hlc > arrival else {})
    op = AppOp(Kind.POST, text="t", ttl_ms=ttl)
    entry = AppEntry(entry_id, DeviceId(b"d" * 32), PersonId(b"p" * 32), 1, hlc, (), op)
    timeline.add([entry])
    post = timeline.posts[entry_id]
    assert post.created_at == min(hlc, arrival + MAX_DRIFT_MS)
    assert timeline.active[entry.person] == post.created_at
    if ttl is not None:
        assert [c.kind for c in timeline.expire(arrival + ttl)] == ["expire"]
        assert post.expired
    else:
        assert timeline.expire(MAX_HLC) == []
