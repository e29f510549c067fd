"""What's new (issue 18 point 3): ``group.whats_new()`` reads everything after a cursor from
stored state (posts, replies, reactions to my content, vault adds, kept locations, member
changes, document changes) without marking anything; ``group.mark_read()`` marks, and the
mark is shared with the person's other devices. Real SQLite profiles, entries carried by hand."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import microsync
from microsync.app.ops import DocOp
from microsync.clock import system_clock
from microsync.errors import DecodeError
from microsync.identity import DeviceId
from microsync.node.news import (
    Cursor,
    DocEdited,
    Joined,
    Left,
    Moved,
    NewFile,
    NewPost,
    NewReaction,
    NewReply,
    News,
)
from microsync.state import Document, encode_op
from microsync.testing import FakeClock, app_state
from tests.test_app_group import family_of, linked_device, share
from tests.test_device_groups import sync


def told(items: tuple[News, ...]) -> list[tuple[str, str]]:
    """What each item says, in a comparable form."""
    out = []
    for item in items:
        match item:
            case NewPost(post=post) | NewReply(post=post):
                out.append((type(item).__name__, post.text or ""))
            case NewReaction(post=post, emoji=emoji):
                out.append(("NewReaction", f"{emoji} on {post.text}"))
            case NewFile(ref=ref):
                out.append(("NewFile", ref.name))
            case DocEdited(doc=doc, changes=changes):
                out.append(("DocEdited", f"{doc} x{changes}"))
            case Moved(precision=precision):
                out.append(("Moved", precision))
            case Joined() | Left():
                out.append((type(item).__name__, ""))
    return out


async def test_everything_since_the_last_read_without_marking(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        me, mum = await family_of(stack, tmp_path, "Me", "Mum")
        photo = await me.post("my photo")
        other = await mum.post("mum's own")
        share(me, mum)
        me.mark_read()
        assert me.whats_new().items == ()
        await mum.react(photo.id, "❤️")
        await mum.react(other.id, "👍")  # a reaction to her own post: not my news
        await mum.reply(photo.id, "lovely")
        await mum.vault.add(b"jpeg", name="beach.jpg")
        await mum.share_location(51.752, -1.2577, precision="city", keep_history=True)
        shopping = mum.doc("shopping")
        await shopping.set("milk", 1)
        await shopping.set("eggs", 2)
        await mum.post("dinner at 7")
        share(me, mum)
        news = me.whats_new()
        assert told(news.items) == [
            ("NewReaction", "❤️ on my photo"),
            ("NewReply", "lovely"),
            ("NewFile", "beach.jpg"),
            ("Moved", "city"),
            ("DocEdited", "shopping x2"),
            ("NewPost", "dinner at 7"),
        ]
        assert all(i.person == mum.device.person_id for i in news.items)
        assert not news.more
        assert [loc.person_id for loc in news.locations] == [mum.device.person_id]
        again = me.whats_new()  # reading marks nothing
        assert again.items == news.items and again.cursor.positions == news.cursor.positions
        assert me.unread_count() == 2
        me.mark_read(up_to=news.cursor)
        assert me.whats_new().items == () and me.unread_count() == 0


async def test_mum_loved_your_photo_while_you_were_away(tmp_path: Path) -> None:
    """After a restart, from stored state only: no event was ever listened to."""
    async with AsyncExitStack() as stack:
        me, mum = await family_of(stack, tmp_path, "Me", "Mum")
        photo = await me.post("my photo")
        share(me, mum)
        me.mark_read()
        await me.device.close()
        await mum.react(photo.id, "❤️")
        device = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Me"))
        sync(mum.device, device, mum.id)
        assert told(device.group(mum.id).whats_new().items) == [("NewReaction", "❤️ on my photo")]
        await device.close()  # and once more: the app state now comes from its snapshot
        device = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Me"))
        [item] = device.group(mum.id).whats_new().items
        assert isinstance(item, NewReaction) and item.post.id == photo.id
        assert item.person == mum.device.person_id and item.emoji == "❤️"
        assert item.at == item.post.reaction_records[0].at


async def test_member_changes_are_news(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        share(alice, bob, carol)
        joined = [i for i in bob.whats_new(since=None).items if isinstance(i, Joined)]
        assert {i.person for i in joined} == {bob.device.person_id, carol.device.person_id}
        assert {i.by for i in joined} == {alice.device.person_id}  # the founder added them
        bob.mark_read()
        await alice.remove(carol.device.person_id)
        share(alice, bob)
        [left] = bob.whats_new().items
        assert isinstance(left, Left)
        assert left.person == carol.device.person_id and left.by == alice.device.person_id


async def test_pages_cover_everything_once_and_the_cursor_is_exact(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        share(alice, bob, carol)
        alice.mark_read()
        for i in range(7):
            await bob.post(f"bob {i}")
            await carol.post(f"carol {i}")
        share(alice, bob, carol)
        whole = alice.whats_new(limit=100)
        assert len(whole.items) == 14
        for limit in (1, 2, 3, 5, 13, 14, 15):
            pages: list[News] = []
            page = alice.whats_new(limit=limit)
            pages.extend(page.items)
            while page.more:
                assert len(page.items) == limit
                page = alice.whats_new(since=page.cursor, limit=limit)
                pages.extend(page.items)
            assert pages == list(whole.items)  # every item once, in the same order
        # marking a page marks exactly that page
        first = alice.whats_new(limit=4)
        alice.mark_read(up_to=first.cursor)
        assert alice.whats_new(limit=100).items == whole.items[4:]
        with pytest.raises(ValueError):
            alice.whats_new(limit=0)


async def test_feed_since_last_opened_still_marks(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        alice.mark_read()
        await bob.post("one")
        share(alice, bob)
        assert told(alice.whats_new().items) == [("NewPost", "one")]
        assert [p.text for p in alice.feed(since="last_opened")] == ["one"]
        assert alice.whats_new().items == ()


async def test_the_read_position_is_shared_with_my_other_devices(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        phone = alice.device
        laptop = await linked_device(stack, tmp_path, alice, bob)
        laptop_device = laptop.device
        alice.mark_read()
        sync(phone, laptop_device, alice.id)
        await bob.post("one")
        await bob.vault.add(b"pdf", name="tickets.pdf")
        share(alice, bob)
        sync(phone, laptop_device, alice.id)
        assert told(laptop.whats_new().items) == told(alice.whats_new().items)
        assert told(laptop.whats_new().items) == [("NewPost", "one"), ("NewFile", "tickets.pdf")]
        alice.mark_read()  # read on the phone
        sync(phone, laptop_device, alice.id)
        assert laptop.whats_new().items == ()  # read on the laptop too
        assert laptop.unread_count() == 0
        # and my own writes on the laptop are never my news on the phone
        await laptop.post("from the laptop")
        sync(phone, laptop_device, alice.id)
        assert alice.whats_new().items == ()


@given(
    st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(1, 2**63 - 1)), max_size=8),
    st.integers(0, 2**63 - 1),
)
def test_a_cursor_round_trips(pairs: list[tuple[bytes, int]], at: int) -> None:
    cursor = Cursor.of({DeviceId(d): s for d, s in pairs}, at)
    assert Cursor.from_bytes(cursor.to_bytes()) == cursor


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        bytes.fromhex("80"),  # []
        bytes.fromhex("8200" + "81" + "82" + "41" + "00" + "01"),  # a 1-byte device id
        bytes.fromhex("8200" + "81" + "82" + "5820" + "00" * 32 + "00"),  # seq 0
        bytes.fromhex("8220" + "80"),  # a negative time
        bytes.fromhex("9f0080ff"),  # indefinite length
    ],
)
def test_a_bad_cursor_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Cursor.from_bytes(data)


async def test_live_locations_since_the_last_read_and_marking_them(tmp_path: Path) -> None:
    """A live location is in no feed: it is news while it is newer than the last read."""
    clock = FakeClock(system_clock())
    async with AsyncExitStack() as stack:
        me, mum = await family_of(stack, tmp_path, "Me", "Mum", clock=clock)
        me.mark_read()
        clock.advance(1000)
        await mum.share_location(51.752, -1.2577, precision="city")
        for sealed in mum.announcements():
            me.receive_announcement(sealed)
        news = me.whats_new()
        assert news.items == ()
        [where] = news.locations
        assert where.person_id == mum.device.person_id and where.precision == "city"
        clock.advance(1000)
        me.mark_read()  # no feed position moves, but the location is read now
        assert me.whats_new().locations == ()
        clock.advance(1000)
        await mum.share_location(48.85, 2.35, precision="region")
        for sealed in mum.announcements():
            me.receive_announcement(sealed)
        [moved] = me.whats_new().locations
        assert moved.precision == "region"


async def test_withdrawn_reactions_and_others_content_are_not_my_news(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        me, mum, dad = await family_of(stack, tmp_path, "Me", "Mum", "Dad")
        photo = await me.post("my photo")
        dads = await dad.post("dad's photo")
        share(me, mum, dad)
        me.mark_read()
        read = me.whats_new().cursor.seq(mum.device.id)
        await mum.react(photo.id, "😮")
        await mum.unreact(photo.id, "😮")  # withdrawn before I looked
        await mum.react(dads.id, "❤️")  # not my content
        await me.react(dads.id, "❤️")  # my own doing
        share(me, mum, dad)
        news = me.whats_new()
        assert news.items == ()
        assert news.cursor.seq(mum.device.id) == read + 3  # walked past them all the same


KINDS = ("post", "reply", "react", "doc", "file")


async def act(group: microsync.Group, kind: str, i: int, target: bytes) -> None:
    if kind == "post":
        await group.post(f"post {i}")
    elif kind == "reply":
        await group.reply(target, f"reply {i}")
    elif kind == "react":
        await group.react(target, "❤️👍😮"[i % 3])
    elif kind == "doc":
        await group.doc("plans").set("when", i)
    else:
        await group.vault.add(bytes([i]), name=f"file {i}")


async def paging_scenario(root: Path, actions: list[tuple[int, str]], limit: int) -> None:
    async with AsyncExitStack() as stack:
        groups = await family_of(stack, root, "Me", "Mum", "Dad")
        me = groups[0]
        mine = await me.post("mine")
        share(*groups)
        me.mark_read()
        for i, (actor, kind) in enumerate(actions):
            await act(groups[actor], kind, i, mine.id)
        share(*groups)
        whole = me.whats_new(limit=1000)
        assert not whole.more
        expected = {k: sum(1 for a, kk in actions if a != 0 and kk == k) for k in KINDS}
        kinds = {
            "post": NewPost, "reply": NewReply, "react": NewReaction, "file": NewFile,
        }  # fmt: skip
        for kind, cls in kinds.items():
            assert sum(isinstance(i, cls) for i in whole.items) == expected[kind]
        docs = [i for i in whole.items if isinstance(i, DocEdited)]
        assert sum(d.changes for d in docs) == expected["doc"] and len(docs) <= 1
        pages: list[News] = []
        page = me.whats_new(limit=limit)
        pages += page.items
        while page.more:
            assert len(page.items) == limit
            page = me.whats_new(since=page.cursor, limit=limit)
            pages += page.items
        # the pages partition the news: the same items in the same order, a document's
        # changes split between the pages that hold them
        assert [i for i in pages if not isinstance(i, DocEdited)] == [
            i for i in whole.items if not isinstance(i, DocEdited)
        ]
        assert sum(i.changes for i in pages if isinstance(i, DocEdited)) == expected["doc"]
        me.mark_read(up_to=page.cursor)
        assert me.whats_new().items == ()


@settings(max_examples=8, deadline=None)
@given(
    actions=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(KINDS)), max_size=10),
    limit=st.integers(1, 4),
)
def test_pages_partition_the_news_under_random_histories(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[int, str]], limit: int
) -> None:
    asyncio.run(paging_scenario(tmp_path_factory.mktemp("history"), actions, limit))


async def test_a_document_change_written_as_someone_else_is_not_news(tmp_path: Path) -> None:
    """Carol's validly signed entry carries an operation under Bob's device id: every replica
    refuses it, and it is nobody's news either."""
    async with AsyncExitStack() as stack:
        alice, bob, carol = await family_of(stack, tmp_path, "Alice", "Bob", "Carol")
        share(alice, bob, carol)
        alice.mark_read()
        impostor = Document(bytes(bob.device.id))
        now = time.time_ns() // 1_000_000
        op = impostor.set("owner", "carol", now=now)
        app_state(carol).write(DocOp(doc="d", payload=encode_op(op)), now)
        await carol.doc("d").set("fine", 1)  # a real change, for contrast
        share(alice, bob, carol)
        [item] = alice.whats_new().items
        assert isinstance(item, DocEdited) and item.changes == 1
        assert item.people == {carol.device.person_id}
