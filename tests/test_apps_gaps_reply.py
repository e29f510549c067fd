"""A reply carries typed parts exactly as a post does (issue 18, gap 1): the same encoder,
decoder and bounds, shown in ``thread()``, ``feed()``, ``post_by_id()``, ``events()`` and
``whats_new()``, kept across a restart, purged with the reply; refused from a hostile
member like a post's. Real SQLite profiles, a fake clock."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync import encoding
from microsync.app.ops import APP_TYPE, Kind
from microsync.app.parts import MAX_PARTS, AttachmentPart, LinkPart, PlacePart, TextPart
from microsync.errors import DecodeError
from microsync.node.news import NewReply
from microsync.testing import FakeClock
from microsync.testing.hostile import Hostile
from tests.test_app_group import family_of, share

PARTS = (
    TextPart(text="see you there"),
    LinkPart(url="https://example.org/menu", title="the menu"),
    PlacePart.at("Jericho", 51.7597, -1.2680, "city"),
)


async def test_a_reply_with_parts_reaches_every_member_everywhere_a_post_shows(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000_000)
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        post = await alice.post("dinner friday?")
        share(alice, bob)
        events = alice.events()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0)
        ref = await bob.vault.add(b"menu scan", name="menu.jpg")
        clock.advance(1000)
        reply = await bob.reply(
            post.id, "yes!", [ref], parts=(*PARTS, AttachmentPart(ref=bytes(ref)))
        )
        assert reply.parts[:3] == PARTS and reply.reply_to == post.id
        share(alice, bob)
        event = await asyncio.wait_for(waiting, 5)
        await events.aclose()
        assert getattr(event, "post", None) is not None
        assert event.post.parts[:3] == PARTS  # type: ignore[attr-defined]
        [shown] = alice.thread(post.id)
        assert shown.parts == reply.parts and shown.attachments == (bytes(ref),)
        assert alice.post_by_id(reply.id).parts == reply.parts
        assert [p.parts for p in alice.feed() if p.id == reply.id] == [reply.parts]
        news = [item for item in alice.whats_new().items if isinstance(item, NewReply)]
        assert [item.post.parts for item in news] == [reply.parts]


async def test_a_nested_reply_takes_parts_and_a_deleted_reply_loses_them(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob")
        post = await alice.post("hello")
        share(alice, bob)
        first = await bob.reply(post.id, "hi", parts=PARTS[:1])
        share(alice, bob)
        second = await alice.reply(first.id, "hi back", parts=PARTS[1:])
        share(alice, bob)
        assert [p.parts for p in bob.thread(post.id)] == [PARTS[:1], PARTS[1:]]
        await alice.delete(second.id)
        share(alice, bob)
        assert bob.post_by_id(second.id).parts == ()


async def test_a_reply_s_parts_survive_a_restart(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        post = await alice.post("note to self")
        reply = await alice.reply(post.id, "", parts=PARTS)
        await alice.device.close()
        again = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Alice"))
        assert again.group(alice.id).post_by_id(reply.id).parts == PARTS


@pytest.mark.parametrize(
    "parts",
    [
        (LinkPart(url="javascript:alert(1)"),),
        (TextPart(text="x" * (16 * 1024 + 1)),),
        tuple(TextPart(text=str(i)) for i in range(MAX_PARTS + 1)),
        (PlacePart(label="home", lat=51_752_012, lon=-1_257_734, precision="city"),),
    ],
    ids=["scheme", "long text", "too many", "finer than it says"],
)
async def test_a_bad_part_on_a_reply_is_refused_and_nothing_is_written(
    tmp_path: Path, parts: tuple[microsync.TextPart, ...]
) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        post = await alice.post("hello")
        before = alice.device.frontier(alice.id)
        with pytest.raises(DecodeError):
            await alice.reply(post.id, "bad", parts=parts)
        assert alice.device.frontier(alice.id) == before
        assert alice.thread(post.id) == []


async def test_a_reply_to_nothing_is_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        with pytest.raises(KeyError):
            await alice.reply(b"\x01" * 32, "to nobody", parts=PARTS)


async def test_a_hostile_member_s_reply_with_bad_parts_is_refused_by_every_device(
    tmp_path: Path,
) -> None:
    """Mallory's modified client writes a validly signed reply whose parts break the rules
    (a ``javascript:`` link): the same decoder as a post's refuses it on Alice's device."""
    async with AsyncExitStack() as stack:
        alice, mallory = await family_of(stack, tmp_path, "Alice", "Mallory")
        post = await alice.post("hello")
        share(alice, mallory)
        evil = Hostile.of_group(mallory)
        fields = {"text": "click", "reply_to": bytes(post.id), "parts": [[2, "javascript:x()"]]}
        good = {"text": "fine", "reply_to": bytes(post.id), "parts": [[2, "https://ok.example"]]}
        for body in (fields, good):
            plaintext = encoding.encode([1, int(Kind.POST), body])  # type: ignore[list-item]
            evil.append_content(APP_TYPE, plaintext, hlc=alice.device.clock(), deps=(post.id,))
        share(alice, mallory)
        assert [str(p.text) for p in alice.thread(post.id)] == ["fine"]
        assert alice.thread(post.id)[0].parts == (LinkPart(url="https://ok.example"),)
