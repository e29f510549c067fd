"""The app timeline (microsync.app.timeline): a pure fold of app operations in causal order.

Random histories across 3-5 replicas (devices; the first two belong to one person) that write
posts, replies, edits, deletes, reactions, unreactions and cursors, sometimes on behalf of
someone else (which every replica must refuse), while replicas sync in random pairs. Then every
replica receives every entry in a random order with duplicates: all must hold equal state,
equal to a fresh replica that got everything in one batch.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.app.ops import AppOp, Kind
from microsync.app.timeline import AppEntry, Timeline, deps_for
from microsync.errors import DecodeError
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId


class Writer:
    def __init__(self, index: int) -> None:
        self.device = DeviceId(bytes([index]) * 32)
        self.person = PersonId(bytes([100 + index]) * 32)
        self.timeline = Timeline()
        self.seq = 0
        self.mine: list[AppEntry] = []

    def write(self, op: AppOp, hlc: int, *, person: PersonId | None = None) -> AppEntry:
        self.seq += 1
        entry_id = EntryId(random.Random(f"{self.device.hex()}{self.seq}").randbytes(32))
        entry = AppEntry(
            id=entry_id,
            device=self.device,
            person=person or self.person,
            seq=self.seq,
            hlc=hlc,
            deps=deps_for(op, self.timeline.heads),
            op=AppOp.from_bytes(op.to_bytes()),  # everything goes through the codec
        )
        self.mine.append(entry)
        self.timeline.add([entry])
        return entry


def _all(writers: list[Writer]) -> list[AppEntry]:
    return [e for w in writers for e in w.mine]


actions = st.lists(
    st.tuples(
        st.integers(0, 4),  # writer
        st.sampled_from(["post", "reply", "edit", "delete", "react", "unreact", "cursor", "sync"]),
        st.integers(0, 10**6),  # choice among targets
        st.integers(0, 4),  # other writer (sync partner / forged author)
        st.booleans(),  # forge: act on someone else's post
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(count=st.integers(3, 5), steps=actions, seed=st.integers(0, 2**32))
def test_replicas_that_hold_the_same_entries_hold_the_same_state(
    count: int, steps: list[tuple[int, str, int, int, bool]], seed: int
) -> None:
    writers = [Writer(i) for i in range(count)]
    writers[1].person = writers[0].person  # two devices of one person: concurrent edits
    clock = 0
    for who, action, choice, other, forge in steps:
        w, partner = writers[who % count], writers[other % count]
        clock += 1
        posts = list(w.timeline.posts.values())
        if action == "sync":
            w.timeline.add(partner.mine)
            continue
        if action == "post" or (action == "reply" and not posts):
            w.write(AppOp(Kind.POST, text=f"p{clock}"), clock)
        elif action == "reply":
            target = posts[choice % len(posts)]
            w.write(AppOp(Kind.POST, text=f"r{clock}", reply_to=target.id), clock)
        elif action == "cursor":
            w.write(AppOp(Kind.CURSOR, cursor=tuple(sorted(w.timeline.frontier.items()))), clock)
        elif posts:
            own = [p for p in posts if p.author == w.person]
            pool = posts if forge or not own else own
            target = pool[choice % len(pool)]
            if action == "edit":
                w.write(AppOp(Kind.EDIT, post=target.id, text=f"e{clock}"), clock)
            elif action == "delete":
                w.write(AppOp(Kind.DELETE, post=target.id), clock)
            elif action == "react":
                w.write(AppOp(Kind.REACT, post=target.id, emoji="❤️"), clock)
            else:
                tags = [t for t in target.reactions.get("❤️", {}).get(w.person, set())]
                if forge:  # withdraw someone else's reaction: refused everywhere
                    tags = [
                        t for p, ts in target.reactions.get("❤️", {}).items() for t in ts
                    ] or tags
                if tags:
                    w.write(
                        AppOp(Kind.UNREACT, post=target.id, emoji="❤️", removes=tuple(tags)), clock
                    )
    everything = _all(writers)
    rng = random.Random(seed)
    for w in writers:
        batch = everything + rng.sample(everything, len(everything) // 3)  # duplicates
        rng.shuffle(batch)
        for start in range(0, len(batch), 7):
            w.timeline.add(batch[start : start + 7])
    fresh = Timeline()
    fresh.add(everything)
    assert fresh.waiting == 0
    for w in writers:
        assert w.timeline.waiting == 0
        assert w.timeline.summary() == fresh.summary()


def test_only_the_author_edits_or_deletes_and_only_the_reactor_unreacts() -> None:
    alice, bob = Writer(1), Writer(2)
    post = alice.write(AppOp(Kind.POST, text="mine"), 1)
    bob.timeline.add(alice.mine)
    heart = alice.write(AppOp(Kind.REACT, post=post.id, emoji="❤️"), 2)
    bob.timeline.add(alice.mine)
    edit = bob.write(AppOp(Kind.EDIT, post=post.id, text="hijacked"), 3)
    delete = bob.write(AppOp(Kind.DELETE, post=post.id), 4)
    unreact = bob.write(AppOp(Kind.UNREACT, post=post.id, emoji="❤️", removes=(heart.id,)), 5)
    for timeline in (alice.timeline, bob.timeline):
        timeline.add(alice.mine + bob.mine)
        state = timeline.posts[post.id]
        assert state.text == "mine" and not state.deleted and not state.edited
        assert state.reaction_summary() == {"❤️": frozenset({alice.person})}
        assert {edit.id, delete.id, unreact.id} <= timeline.rejected


def test_delete_wins_over_a_concurrent_edit_and_reports_every_body_to_purge() -> None:
    alice = Writer(1)
    post = alice.write(AppOp(Kind.POST, text="oops"), 1)
    phone = Writer(3)
    phone.person = alice.person  # another device of Alice
    phone.timeline.add(alice.mine)
    edit = phone.write(AppOp(Kind.EDIT, post=post.id, text="fixed"), 5)
    delete = alice.write(AppOp(Kind.DELETE, post=post.id), 2)
    purged: set[EntryId] = set()
    for order in ([edit, delete], [delete, edit]):
        timeline = Timeline()
        changes = timeline.add([post]) + timeline.add(order[:1]) + timeline.add(order[1:])
        state = timeline.posts[post.id]
        assert state.deleted and state.text is None
        purged = {i for c in changes for i in c.purge}
        assert purged == {post.id, edit.id}


def test_disappearing_posts_expire_by_the_clock_given() -> None:
    alice = Writer(1)
    post = alice.write(AppOp(Kind.POST, text="soon gone", ttl_ms=60_000), 1_000)
    assert alice.timeline.expire(60_999) == []
    [change] = alice.timeline.expire(61_000)
    assert change.purge == (post.id,)
    assert alice.timeline.posts[post.id].text is None
    assert alice.timeline.visible() == []
    assert alice.timeline.expire(10**9) == []  # once


def test_threads_come_out_in_order_and_replies_need_their_parent() -> None:
    alice = Writer(1)
    root = alice.write(AppOp(Kind.POST, text="root"), 1)
    first = alice.write(AppOp(Kind.POST, text="first", reply_to=root.id), 2)
    nested = alice.write(AppOp(Kind.POST, text="nested", reply_to=first.id), 4)
    second = alice.write(AppOp(Kind.POST, text="second", reply_to=root.id), 3)
    assert [p.id for p in alice.timeline.thread(root.id)] == [first.id, nested.id, second.id]
    orphan = AppEntry(
        EntryId(b"\x09" * 32), alice.device, alice.person, 99, 9, (),
        AppOp(Kind.POST, text="x", reply_to=b"\x77" * 32),
    )  # fmt: skip
    alice.timeline.add([orphan])
    assert orphan.id in alice.timeline.rejected
    # a reply must name its post in deps, even when the replica happens to hold the post
    stray = AppEntry(
        EntryId(b"\x0a" * 32), alice.device, alice.person, 100, 10, (),
        AppOp(Kind.POST, text="y", reply_to=root.id),
    )  # fmt: skip
    alice.timeline.add([stray])
    assert stray.id in alice.timeline.rejected


def test_an_entry_waits_for_its_causal_past() -> None:
    alice, bob = Writer(1), Writer(2)
    post = alice.write(AppOp(Kind.POST, text="hello"), 1)
    bob.timeline.add([post])
    reply = bob.write(AppOp(Kind.POST, text="hi", reply_to=post.id), 2)
    late = Timeline()
    assert late.add([reply]) == [] and late.waiting == 1
    changes = late.add([post])
    assert [c.kind for c in changes] == ["post", "reply"] and late.waiting == 0


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x80",
        bytes.fromhex("83010201"),  # fields not a map
        bytes.fromhex("830201a0"),  # version 2
        bytes.fromhex("830163a0"),  # kind not an int... (text)
    ],
)
def test_malformed_app_ops_are_refused(value: bytes) -> None:
    with pytest.raises(DecodeError):
        AppOp.from_bytes(value)


@given(
    st.dictionaries(
        st.sampled_from(["post", "emoji", "text", "x"]) | st.text(max_size=8),
        st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary() | st.just(b"\x01" * 32),
        max_size=4,
    )
)
def test_app_op_codec_rejects_unknown_or_mistyped_fields(fields: dict[str, object]) -> None:
    from microsync import encoding

    data = encoding.encode([1, int(Kind.REACT), fields])  # type: ignore[list-item]
    ok = set(fields) == {"post", "emoji"}
    try:
        op = AppOp.from_bytes(data)
    except DecodeError:
        return
    assert ok and op.kind is Kind.REACT
    assert AppOp.from_bytes(op.to_bytes()) == op


def test_app_op_round_trip_for_every_kind() -> None:
    ids = (b"\x01" * 32, b"\x02" * 32)
    samples = [
        AppOp(Kind.POST, text="hi", reply_to=ids[0], attachments=(b"ref",), ttl_ms=5000),
        AppOp(Kind.EDIT, post=ids[0], text="edited"),
        AppOp(Kind.DELETE, post=ids[0]),
        AppOp(Kind.REACT, post=ids[0], emoji="👍"),
        AppOp(Kind.UNREACT, post=ids[0], emoji="👍", removes=ids),
        AppOp(Kind.CURSOR, cursor=((ids[0], 4), (ids[1], 9))),
        AppOp(Kind.LOCATION, lat=51_750_000, lon=-1_260_000, precision="city"),
        AppOp(Kind.DOC, doc="shopping", payload=b"\x80"),
    ]
    for op in samples:
        assert AppOp.from_bytes(op.to_bytes()) == op
    with pytest.raises(DecodeError):
        AppOp(Kind.POST, text="x" * (64 * 1024 + 1)).to_bytes()
    with pytest.raises(DecodeError):
        AppOp(Kind.LOCATION, lat=91_000_000, lon=0, precision="city").to_bytes()


@settings(max_examples=100, deadline=None)
@given(
    stamps=st.lists(st.integers(1, 50), min_size=2, max_size=6),
    order=st.randoms(use_true_random=False),
)
def test_concurrent_edits_from_a_persons_devices_converge_to_the_latest(
    stamps: list[int], order: random.Random
) -> None:
    devices = [Writer(i) for i in range(len(stamps))]
    for device in devices:
        device.person = devices[0].person
    post = devices[0].write(AppOp(Kind.POST, text="draft"), 0)
    edits = []
    for device, stamp in zip(devices, stamps, strict=True):
        device.timeline.add([post])
        edits.append(device.write(AppOp(Kind.EDIT, post=post.id, text=f"v{stamp}"), stamp))
    winner = max(edits, key=lambda e: (e.hlc, bytes(e.id)))
    for device in devices:
        shuffled = edits[:]
        order.shuffle(shuffled)
        device.timeline.add(shuffled)
        assert device.timeline.posts[post.id].text == winner.op.text
