"""``app.views.post_view``, which skips the reaction summaries of a post nobody reacted to,
against the view written the long way (every summary computed): the same ``Post`` for any
post state, reactions or none, withdrawn reactions (an emoji left with no one holding it),
deleted, expired and edited posts, and times outside what ``datetime`` holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.app.events import Post, Reaction
from microsync.app.timeline import PostState
from microsync.app.views import post_view, when
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId

PEOPLE = [PersonId(bytes([n]) * 32) for n in range(3)]
TAGS = st.sets(st.sampled_from([EntryId(bytes([n]) * 32) for n in range(4)]), max_size=3)
TIMES = st.integers(min_value=-(2**40), max_value=2**63 - 1)


def _long_way(post: PostState, names: dict[PersonId, str]) -> Post:
    """The view as it was written before the shortcut."""
    return Post(
        id=post.id,
        author=post.author,
        author_name=names.get(post.author, "(former member)"),
        text=post.text,
        created_at=when(post.created_at),
        attachments=post.attachments,
        reactions=post.reaction_summary(),
        reply_to=post.reply_to,
        edited=post.edited,
        deleted=post.deleted,
        parts=() if post.gone else post.parts,
        reaction_records=tuple(
            Reaction(person=person, emoji=emoji, at=when(at))
            for emoji, person, at in post.reaction_times()
        ),
    )


@st.composite
def post_states(draw: st.DrawFn) -> PostState:
    reactions = draw(
        st.dictionaries(
            st.sampled_from(["👍", "❤", "x"]),
            st.dictionaries(st.sampled_from(PEOPLE), TAGS, max_size=3),
            max_size=3,
        )
    )
    tags = {t for people in reactions.values() for held in people.values() for t in held}
    return PostState(
        id=EntryId(b"p" * 32),
        author=draw(st.sampled_from(PEOPLE)),
        device=DeviceId(b"d" * 32),
        seq=1,
        created_at=draw(TIMES),
        text=draw(st.one_of(st.none(), st.text(max_size=10))),
        attachments=draw(st.lists(st.binary(max_size=4), max_size=2).map(tuple)),
        reply_to=draw(st.one_of(st.none(), st.just(EntryId(b"r" * 32)))),
        ttl_ms=None,
        last_edit=draw(st.one_of(st.none(), st.just((5, b"e" * 32)))),
        deleted=draw(st.booleans()),
        expired=draw(st.booleans()),
        reactions=reactions,
        reacted_at={t: draw(TIMES) for t in sorted(tags) if draw(st.booleans())},
    )


@settings(max_examples=400, deadline=None)
@given(post_states(), st.dictionaries(st.sampled_from(PEOPLE), st.text(max_size=5)))
def test_the_view_is_the_long_ways(post: PostState, names: dict[PersonId, str]) -> None:
    assert post_view(post, names) == _long_way(post, names)


def test_a_withdrawn_reaction_leaves_both_summaries_empty() -> None:
    post = PostState(
        id=EntryId(b"p" * 32),
        author=PEOPLE[0],
        device=DeviceId(b"d" * 32),
        seq=1,
        created_at=0,
        text="hi",
        attachments=(),
        reply_to=None,
        ttl_ms=None,
        reactions={"x": {PEOPLE[1]: set()}},
    )
    view = post_view(post, {})
    assert view.reactions == {} and view.reaction_records == ()
    assert view == _long_way(post, {})
