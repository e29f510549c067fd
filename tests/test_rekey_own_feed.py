"""This device's next position in its feed answered from memory (``group.own_feed``, issue
19) against what reading the head entry back from the store gives: the ``seq`` one past the
head, the least ``hlc`` one past the head entry's, with two writers on one store, a clock that
stands still or steps back, rolled-back writes, and a hint that names the wrong entry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.errors import NotAMember
from microsync.feed import Entry, EntryId
from microsync.group.own_feed import OwnFeed
from microsync.group.replica import GroupReplica
from microsync.identity import PersonId
from tests.group_helpers import Peer, group_of

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["content", "rotate", "refused", "reload"]),
        st.integers(0, 1),  # which of the two replicas on alice's store writes
        st.integers(0, 50),  # its clock: may stand still or step back
    ),
    min_size=1,
    max_size=12,
)


def expected_next(peer: Peer) -> tuple[int, int]:
    """The general path: the head as the store holds it, its entry read back."""
    group = peer.group.id
    head = peer.store.feed_status(group, peer.device).head_seq
    stored = peer.store.entry_at(group, peer.device, head) if head else None
    return head + 1, 0 if stored is None else stored.entry.header.hlc + 1


def check_written(entry: Entry, expected: tuple[int, int], now: int) -> None:
    seq, least = expected
    assert entry.header.seq == seq
    assert entry.header.hlc == max(now, least)


@settings(max_examples=30, deadline=None)
@given(STEPS)
def test_every_entry_goes_where_reading_the_head_back_puts_it(
    steps: list[tuple[str, int, int]],
) -> None:
    _, bob, carol = group_of("alice", "bob", "carol", admins="bob")  # carol: a member
    group = carol.group.id
    writers = [carol.group, GroupReplica.load(carol.store, carol.member, group)]
    for action, which, now in steps:
        writer = writers[which]
        expected = expected_next(carol)
        if action == "content":
            check_written(writer.append_content(7, b"post", now=now), expected, now)
        elif action == "rotate":
            check_written(writer.rotate(now=now), expected, now)
        elif action == "refused":  # appended, then rolled back: a member may not remove
            with pytest.raises(NotAMember):
                writer.remove(PersonId(bob.person), now=now)
            assert expected_next(carol) == expected
        else:
            writers[which] = GroupReplica.load(carol.store, carol.member, group)
    entries = list(carol.store.entries(group, carol.device))
    assert [s.entry.header.seq for s in entries] == list(range(1, len(entries) + 1))
    hlcs = [s.entry.header.hlc for s in entries]
    assert hlcs == sorted(set(hlcs)), "timestamps of one feed strictly increase"


def test_a_hint_that_names_another_entry_is_not_believed() -> None:
    alice, *_ = group_of("alice", "bob")
    group = alice.group.id
    first = alice.group.append_content(7, b"one", now=10)
    head = alice.group.append_content(7, b"two", now=20)
    feed = OwnFeed(group, alice.device)
    assert feed.next(alice.store, lambda _: None) == (head.header.seq + 1, 21)
    # the entry the hint names is not the head: an older one, or one under a forged id
    feed.last = first
    assert feed.next(alice.store, lambda _: first) == (head.header.seq + 1, 21)
    forged = Entry(
        header=first.header, header_bytes=first.header_bytes, signature=first.signature, id=head.id
    )
    assert feed.next(alice.store, lambda _: forged) == (head.header.seq + 1, 21)
    # the right entry, held in memory: the store's entry is not read
    feed.last = head
    reads: list[EntryId] = []
    assert feed.next(alice.store, lambda i: reads.append(i) or None) == (head.header.seq + 1, 21)
    assert reads == []


def test_an_empty_feed_starts_at_one() -> None:
    alice, bob = group_of("alice", "bob")
    feed = OwnFeed(alice.group.id, bob.device)
    assert feed.next(alice.store, lambda _: None) == (1, 0)  # bob's feed is empty at alice
