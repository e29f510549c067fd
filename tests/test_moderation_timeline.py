"""Moderation in the pure timeline fold (microsync.app.timeline with microsync.app.moderation):
random histories where an admin device and plain devices post, delete anyone's posts, and hide
devices' posts, delivered to fresh replicas in random orders with duplicates: every replica
holds the same state, a non-admin's moderation never counts, an admin's always does."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.app.ops import AppOp, DeleteOp, HideOp, PostOp
from microsync.app.timeline import AppEntry, Timeline, deps_for
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId

ADMIN = DeviceId(bytes([1]) * 32)  # device 1 is an admin's from its first entry on
DEMOTED_AFTER = 3  # device 2 was an admin's up to its third entry


def moderates(device: DeviceId, seq: int) -> bool:
    return device == ADMIN or (device == DeviceId(bytes([2]) * 32) and seq <= DEMOTED_AFTER)


class Writer:
    def __init__(self, index: int) -> None:
        self.device = DeviceId(bytes([index]) * 32)
        self.person = PersonId(bytes([100 + index]) * 32)
        self.timeline = Timeline(moderates=moderates)
        self.seq = 0
        self.mine: list[AppEntry] = []

    def write(self, op: AppOp, hlc: int) -> AppEntry:
        self.seq += 1
        entry = AppEntry(
            id=EntryId(random.Random(f"{self.device.hex()}{self.seq}").randbytes(32)),
            device=self.device,
            person=self.person,
            seq=self.seq,
            hlc=hlc,
            deps=deps_for(op, self.timeline.heads),
            op=AppOp.from_bytes(op.to_bytes()),
        )
        self.mine.append(entry)
        self.timeline.add([entry])
        return entry


actions = st.lists(
    st.tuples(
        st.integers(0, 3),  # writer
        st.sampled_from(["post", "post", "delete", "hide", "sync"]),
        st.integers(0, 10**6),  # which target
        st.integers(0, 3),  # sync partner / hidden device
    ),
    max_size=40,
)


def play(steps: list[tuple[int, str, int, int]]) -> list[Writer]:
    writers = [Writer(i) for i in range(4)]
    for hlc, (w, action, pick, other) in enumerate(steps, start=1):
        writer = writers[w]
        posts = sorted(writer.timeline.posts)
        if action == "post":
            writer.write(PostOp(text=f"{w}-{hlc}"), hlc)
        elif action == "delete" and posts:
            writer.write(DeleteOp(post=posts[pick % len(posts)]), hlc)
        elif action == "hide":
            writer.write(HideOp(upto=((bytes([other]) * 32, 1 + pick % 5),)), hlc)
        elif action == "sync" and other != w:
            writer.timeline.add(writers[other].mine)
    return writers


@settings(max_examples=150, deadline=None)
@given(actions, st.randoms(use_true_random=False))
def test_moderation_converges_and_only_admins_moderate(
    steps: list[tuple[int, str, int, int]], rnd: random.Random
) -> None:
    writers = play(steps)
    everything = [e for w in writers for e in w.mine]
    reference = Timeline(moderates=moderates)
    reference.add(everything)
    for _ in range(3):
        shuffled = everything + rnd.sample(everything, len(everything) // 3)
        rnd.shuffle(shuffled)
        replica = Timeline(moderates=moderates)
        for entry in shuffled:
            replica.add([entry])
        assert replica.summary() == reference.summary()
    for writer in writers:
        writer.timeline.add(everything)
        assert writer.timeline.summary() == reference.summary()
    for entry in everything:
        op = entry.op
        if isinstance(op, DeleteOp) and reference.posts[EntryId(op.post)].author != entry.person:
            counted = entry.id not in reference.rejected
            assert counted == moderates(entry.device, entry.seq)
            if counted:
                assert reference.posts[EntryId(op.post)].deleted
        if isinstance(op, HideOp):
            assert (entry.id not in reference.rejected) == moderates(entry.device, entry.seq)
    for post in reference.posts.values():  # a hide that counted covers what it names
        if reference.hidden.get(post.device, 0) >= post.seq:
            assert post.deleted and post.text is None
