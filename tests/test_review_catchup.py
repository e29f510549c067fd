"""Adversarial review of the catch-up changes (``group/intake.py`` joined bodies,
``group/keys.py`` content AD fast path, ``app/views.py`` post view): the attacks tried, kept
as regression tests. Each would fail if the change let a wrong or lost body through, gave
other AD bytes than the canonical encoder, or showed a gone post's parts."""

from __future__ import annotations

import itertools

import pytest

from microsync import encoding
from microsync.app.parts import TextPart
from microsync.app.timeline import PostState
from microsync.app.views import post_view
from microsync.errors import DecodeError
from microsync.feed.entry import EntryId, parse_entry
from microsync.group.keys import _content_ad
from microsync.identity import PersonId
from tests.test_catch_up_joined_bodies import _world

_INTS: list[object] = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
_INTS += [2**64, -1, -24, -25, True, False]


def _either(make: object, *fields: object) -> bytes | type[DecodeError]:
    try:
        return make(*fields)  # type: ignore[operator, no-any-return]
    except DecodeError:
        return DecodeError


def test_the_ad_fast_path_matches_the_encoder_on_every_integer_edge() -> None:
    """Every head boundary, bools (ints in Python), negatives and 2**64 for epoch, seq and
    type at once: the same bytes or the same refusal as ``encoding.encode``."""
    group, device, ref = bytes(range(32)), bytes(range(32, 64)), bytes(range(16))
    for epoch, seq, kind in itertools.product(_INTS, repeat=3):
        fields = (group, epoch, device, seq, kind, ref)
        slow = _either(lambda *f: encoding.encode(list(f)), *fields)
        assert _either(_content_ad, *fields) == slow, fields


@pytest.mark.parametrize("size", [(31, 32, 16), (32, 33, 16), (32, 32, 15), (32, 32, 17)])
def test_the_ad_fast_path_falls_back_on_other_lengths(size: tuple[int, int, int]) -> None:
    g, d, r = (b"\x01" * n for n in size)
    assert _content_ad(g, 3, d, 300, 5, r) == encoding.encode([g, 3, d, 300, 5, r])  # type: ignore[arg-type]


def test_a_pending_entry_stored_without_its_body_is_reported_without_one() -> None:
    """Hostile peer: an entry first sent body-less (it waits ahead of a gap), then a valid
    copy with its body (a duplicate: not stored), then the gap filled: the joined entry must
    carry what the store holds (``None``), not the duplicate's body."""
    group, bob, items = _world(posts=3)
    first, second = items[0], items[1]
    batch = [(second[0], None), second, first]
    received = bob.replica(group).receive_batch(batch)
    assert len(received.accepted) == 2
    for s in received.accepted:
        h = s.entry.header
        stored = bob.store.entry_at(group, h.device, h.seq)
        assert stored is not None and s.body == stored.body
    h = parse_entry(second[0]).header
    kept = bob.store.entry_at(group, h.device, h.seq)
    assert kept is not None and kept.body is None


def test_a_pending_body_from_an_earlier_batch_is_not_lost() -> None:
    """The gap filled in a later batch that also carries the waiting entry body-less (a
    duplicate of the pending one): the joined entry is reported with the body stored when it
    started to wait (a post must not vanish from the fold)."""
    group, bob, items = _world(posts=3)
    first, second = items[0], items[1]
    bob.replica(group).receive_batch([second])  # waits, with its body
    received = bob.replica(group).receive_batch([(second[0], None), first])
    bodies = {s.entry.wire: s.body for s in received.accepted}
    assert bodies == {first[0]: first[1], second[0]: second[1]}
    assert second[1] is not None


def _post(**fields: object) -> PostState:
    base: dict[str, object] = {
        "id": EntryId(b"p" * 32),
        "author": PersonId(b"a" * 32),
        "device": b"d" * 32,
        "seq": 1,
        "created_at": 1000,
        "text": "hi",
        "attachments": (),
        "reply_to": None,
        "ttl_ms": None,
    }
    return PostState(**{**base, **fields})  # type: ignore[arg-type]


def test_a_reacted_post_shows_its_reactions_and_a_withdrawn_one_none() -> None:
    who, tag = PersonId(b"b" * 32), EntryId(b"r" * 32)
    shown = post_view(_post(reactions={"+1": {who: {tag}}}, reacted_at={tag: 5}), {})
    assert shown.reactions == {"+1": frozenset({who})}
    assert [(r.person, r.emoji) for r in shown.reaction_records] == [(who, "+1")]
    gone = post_view(_post(reactions={"+1": {who: set()}}), {})
    assert gone.reactions == {} and gone.reaction_records == ()


@pytest.mark.parametrize("flag", ["deleted", "expired"])
def test_a_gone_post_shows_no_parts(flag: str) -> None:
    post = _post(parts=(TextPart(text="secret"),), **{flag: True})
    assert post_view(post, {}).parts == ()
    assert post_view(_post(parts=(TextPart(text="x"),)), {}).parts == (TextPart(text="x"),)
