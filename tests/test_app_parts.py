"""Structured posts (issue 18 point 7): typed parts on a post, bounded against a hostile
author, and reactions that carry their time. Codec laws with Hypothesis; the group path on
real SQLite profiles with a fake clock."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

import microsync
from microsync import encoding
from microsync.app.ops import AppOp, PostOp
from microsync.app.parts import (
    MAX_LABEL,
    MAX_PART_TEXT,
    MAX_PARTS,
    MAX_URL,
    AttachmentPart,
    LinkPart,
    Part,
    PlacePart,
    TextPart,
)
from microsync.clock import system_clock
from microsync.errors import DecodeError
from microsync.testing import FakeClock
from tests.test_app_group import family_of, share

labels = st.text(min_size=1, max_size=40).filter(
    lambda t: not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in t)
)
hosts = st.from_regex(r"[a-z0-9]{1,20}\.[a-z]{2,6}", fullmatch=True)
part_strategy: st.SearchStrategy[Part] = st.one_of(
    st.builds(TextPart, text=st.text(max_size=200)),
    st.builds(
        LinkPart,
        url=st.builds(
            lambda h, p: f"https://{h}/{p}",
            hosts,
            st.from_regex(r"[a-z0-9/]{0,30}", fullmatch=True),
        ),
        title=st.none() | labels,
    ),
    st.builds(
        PlacePart.at,
        labels,
        st.floats(-90, 90),
        st.floats(-180, 180),
        st.sampled_from(["street", "city", "region"]),
    ),
    st.builds(AttachmentPart, ref=st.binary(min_size=1, max_size=64)),
)


def post_bytes(parts: list[object]) -> bytes:
    """The plaintext of a post carrying ``parts`` as a hostile author could write it."""
    return encoding.encode([1, 1, {"text": "", "parts": parts}])  # type: ignore[dict-item]


@given(st.lists(part_strategy, min_size=1, max_size=MAX_PARTS), st.text(max_size=100))
def test_parts_round_trip_and_re_encode_to_the_same_bytes(parts: list[Part], text: str) -> None:
    op = PostOp(text=text, parts=tuple(parts))
    data = op.to_bytes()
    assert AppOp.from_bytes(data) == op
    assert AppOp.from_bytes(data).to_bytes() == data


def test_a_post_without_parts_encodes_as_before() -> None:
    """Additive: no ``parts`` key on the wire unless there are parts (the old vectors in
    tests/test_app_ops_vectors.py pin the rest)."""
    data = PostOp(text="hi").to_bytes()
    assert b"parts" not in data
    assert data.hex() == "830101a16474657874626869"


@pytest.mark.parametrize(
    "part",
    [
        [2, "javascript:alert(1)"],
        [2, "data:text/html,<b>x</b>"],
        [2, "file:///etc/passwd"],
        [2, "https://exa mple.org/"],
        [2, "https://example.org/\x1b[2J"],
        [2, "https:///path-only"],
        [2, "https:"],
        [2, "mailto:"],
        [2, "ftp://example.org/"],
        [2, "https://" + "a" * MAX_URL],
        [2, "https://example.org/", ""],
        [2, "https://example.org/", "title\u202ewith\x07bell"],
        [2, "https://example.org/", "x" * (MAX_LABEL + 1)],
        [2, "https://example.org/", "t", "extra"],
        [1, "x" * (MAX_PART_TEXT + 1)],
        [1, b"bytes, not text"],
        [1],
        [3, "Oxford", 51_750_000, -1_250_000, "exact"],  # a place is never exact
        [3, "Oxford", 51_752_000, -1_257_700, "city"],  # finer than it says
        [3, "Oxford", 91_000_000, 0, "region"],
        [3, "Oxford", True, 0, "region"],
        [3, "", 51_750_000, -1_250_000, "city"],
        [3, "Oxford", 51_750_000, -1_250_000],
        [4, b""],
        [4, b"x" * 1025],
        [4, "not bytes"],
        [9, "an unknown kind of part"],
        [],
        "not a list",
        [True, "x"],
    ],
)
def test_a_hostile_part_is_refused_with_a_decode_error(part: object) -> None:
    with pytest.raises(DecodeError):
        AppOp.from_bytes(post_bytes([part]))


def test_too_many_parts_or_none_are_refused() -> None:
    with pytest.raises(DecodeError):
        AppOp.from_bytes(post_bytes([[1, "x"]] * (MAX_PARTS + 1)))
    with pytest.raises(DecodeError):
        AppOp.from_bytes(post_bytes([]))
    full = AppOp.from_bytes(post_bytes([[1, "x"]] * MAX_PARTS))
    assert isinstance(full, PostOp) and len(full.parts) == MAX_PARTS


def test_an_oversize_post_is_refused_by_its_author_too() -> None:
    """Sixteen maximal text parts and a maximal text would be refused by every receiver: the
    author's encoder says so instead of writing it."""
    big = tuple(TextPart(text="x" * MAX_PART_TEXT) for _ in range(MAX_PARTS))
    with pytest.raises(DecodeError, match="over"):
        PostOp(text="y" * 60_000, parts=big).to_bytes()


def test_a_place_is_snapped_before_it_is_encoded() -> None:
    place = PlacePart.at("Radcliffe Camera", 51.753_41, -1.254_01, "street")
    assert (place.lat, place.lon) == (51_753_500, -1_254_500)
    assert PlacePart.at("x", 51.7534, -1.2541, "street") == PlacePart.at(
        "x", 51.7531, -1.2549, "street"
    )
    with pytest.raises(ValueError):
        PlacePart.at("x", 1.0, 1.0, "exact")
    data = PostOp(text="", parts=(place,)).to_bytes()
    assert cbor2.loads(data)[2]["parts"] == [
        [3, "Radcliffe Camera", 51_753_500, -1_254_500, "street"]
    ]


async def test_parts_and_timed_reactions_reach_every_member(tmp_path: Path) -> None:
    clock = FakeClock(system_clock())
    async with AsyncExitStack() as stack:
        alice, bob = await family_of(stack, tmp_path, "Alice", "Bob", clock=clock)
        ref = await alice.vault.add(b"a photo", name="photo.jpg")
        parts = (
            TextPart(text="We made it"),
            LinkPart(url="https://example.org/flight/BA123", title="BA123 landed"),
            PlacePart.at("Heathrow T5", 51.4723, -0.4878, "city"),
            AttachmentPart(ref=bytes(ref)),
        )
        post = await alice.post("", parts=parts)
        assert post.parts == parts
        share(alice, bob)
        clock.advance(60_000)
        await bob.react(post.id, "❤️")
        share(alice, bob)
        for group in (alice, bob):
            seen = group.post_by_id(post.id)
            assert seen.parts == parts
            [reaction] = seen.reaction_records
            assert reaction.person == bob.device.person_id and reaction.emoji == "❤️"
            assert reaction.at == datetime.fromtimestamp((clock.now) / 1000).astimezone()
        assert bob.vault.get(bob.post_by_id(post.id).parts[3].ref).name == "photo.jpg"  # type: ignore[union-attr]
        await alice.delete(post.id)
        share(alice, bob)
        assert bob.post_by_id(post.id).parts == ()


async def test_parts_survive_a_restart_and_a_snapshot(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        (alice,) = await family_of(stack, tmp_path, "Alice")
        parts = (LinkPart(url="mailto:ana@example.org"),)
        post = await alice.post("write to Ana", parts=parts)
        await alice.device.close()
        again = await stack.enter_async_context(await microsync.Device.open(tmp_path / "Alice"))
        assert again.group(alice.id).post_by_id(post.id).parts == parts


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from(["https://a.example/", "city", "street", "exact"]),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


@given(st.lists(cbor_values, max_size=4) | cbor_values)
def test_any_parts_value_decodes_or_is_a_decode_error(value: object) -> None:
    """Fuzz: whatever a member puts in ``parts``, decoding gives a post or a DecodeError,
    and what decodes re-encodes to the same bytes."""
    try:
        data = encoding.encode([1, 1, {"text": "", "parts": value}])  # type: ignore[dict-item]
    except DecodeError:
        return  # outside the data model (a 65-bit integer ...): it cannot arrive either
    try:
        op = AppOp.from_bytes(data)
    except DecodeError:
        return
    assert op.to_bytes() == data
