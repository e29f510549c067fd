"""What arrived while the app state was not loaded (``app.unfolded``): loading from it must give
exactly what reading everything back from the store gives (``saved.app_entries_after``),
whatever was handed in, in whatever runs, with bodies missing, forks and frontiers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.app import saved
from microsync.app.ops import APP_TYPE
from microsync.app.unfolded import Unfolded
from microsync.feed import Entry, GroupId, append
from microsync.feed.store import ForkEvidence, StoredEntry
from microsync.feed.trust import add_certificate
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity

GROUP = GroupId(b"U" * 32)
AUTHORS = [make_identity(name) for name in ("ann", "ben", "cat")]
LENGTH = 12


@dataclass
class _Replica:
    """What ``entries_after`` uses of a replica: its store and its group id."""

    store: MemoryStore
    id: GroupId


def _feeds(kinds: list[list[int]]) -> tuple[MemoryStore, list[list[tuple[Entry, bytes]]]]:
    store = MemoryStore()
    feeds = []
    for author, types in zip(AUTHORS, kinds, strict=True):
        add_certificate(store, author.certificate)
        feed = []
        for i, kind in enumerate(types):
            body = f"{author.name} {i}".encode()
            key = author.device_key
            entry = append(store, key, group=GROUP, type=kind, body=body, epoch=0, hlc=i)
            feed.append((entry, body))
        feeds.append(feed)
    return store, feeds


def _pairs(found: list[StoredEntry]) -> list[tuple[bytes, bytes | None]]:
    return [(s.entry.wire, s.body) for s in found]


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(
        st.lists(st.sampled_from([1, APP_TYPE, APP_TYPE]), max_size=LENGTH), min_size=3, max_size=3
    ),
    handed=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, LENGTH), st.integers(0, LENGTH), st.booleans()),
        max_size=6,
    ),
    frontier=st.lists(st.integers(0, LENGTH), min_size=3, max_size=3),
    fork=st.none() | st.tuples(st.integers(0, 2), st.integers(1, LENGTH)),
)
def test_entries_after_is_what_reading_the_store_back_gives(
    kinds: list[list[int]],
    handed: list[tuple[int, int, int, bool]],
    frontier: list[int],
    fork: tuple[int, int] | None,
) -> None:
    store, feeds = _feeds(kinds)
    unfolded = Unfolded()
    for who, start, count, with_bodies in handed:  # runs of one feed, handed in in order
        run = feeds[who][start : start + count]
        known = {e.id: b for e, b in run} if with_bodies else {e.id: b for e, b in run[1:]}
        unfolded.note([e for e, _ in run], known)
    if fork is not None:
        who, seq = fork
        device = DeviceId(AUTHORS[who].device_id)
        store.record_fork(ForkEvidence(group=GROUP, device=device, seq=seq, first=b"", second=b""))
    replica = cast(GroupReplica, _Replica(store, GROUP))
    after = {DeviceId(a.device_id): seq for a, seq in zip(AUTHORS, frontier, strict=True)}
    for wanted in ({}, after):
        expected = saved.app_entries_after(replica, wanted)
        assert _pairs(unfolded.entries_after(replica, wanted)) == _pairs(expected)


def test_past_its_bound_nothing_is_kept_and_the_store_answers() -> None:
    store, feeds = _feeds([[APP_TYPE] * 4, [], []])
    unfolded = Unfolded()
    replica = cast(GroupReplica, _Replica(store, GROUP))
    entries = [e for e, _ in feeds[0]]
    big = b"x" * (33 * 1024 * 1024)  # two of these pass the bound
    unfolded.note(entries, {e.id: big for e in entries})
    assert "full=True" in repr(unfolded)
    assert _pairs(unfolded.entries_after(replica, {})) == [(e.wire, b) for e, b in feeds[0]]
    unfolded.clear()
    assert "full=False" in repr(unfolded)
