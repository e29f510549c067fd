"""The one content fold (:mod:`microsync.group.fold`): open or lock, gate on cut-offs, retry."""

from __future__ import annotations

from microsync.errors import DecodeError
from microsync.feed.entry import Entry
from microsync.group.fold import ContentFold
from tests.group_helpers import found, group_of, item, make_peers, stored_entry, sync

TEXT = 0x10


def _text(data: bytes) -> str:
    if data.startswith(b"\xff"):
        raise DecodeError("garbage")
    return data.decode()


def test_an_entry_opens_once_with_its_author_and_the_body_handed_in() -> None:
    alice, bob = group_of("alice", "bob")
    entry = alice.group.append_content(TEXT, b"hello", now=10)
    sync(alice, bob)
    fold = bob.group.content_fold(_text)
    wire, body = item(bob.store, entry)
    [folded] = fold.fold([entry], {entry.id: body})
    assert (folded.value, folded.person, folded.body) == ("hello", alice.person, body)
    assert folded.entry.wire == wire and not fold.locked
    [again] = fold.fold([entry])  # no body handed in: read from the store
    assert again.value == "hello"


def test_what_no_key_opens_is_locked_and_opens_when_the_key_arrives() -> None:
    alice, bob = group_of("alice", "bob")
    sync(alice, bob)
    entry = alice.group.append_content(TEXT, b"secret", now=10)
    stored = stored_entry(alice.store, entry)
    fold = bob.group.content_fold(_text)
    keys = dict(bob.group._ring.keys)
    bob.group._ring.keys.clear()  # as if the epoch key had not reached bob yet
    assert fold.fold([entry], {entry.id: stored.body}) == []
    assert list(fold.locked) == [entry.id]
    bob.group._ring.keys.update(keys)
    [opened] = fold.retry({entry.id: stored.body})
    assert opened.value == "secret" and not fold.locked


def test_garbage_is_dropped_and_a_purged_body_is_folded_as_none() -> None:
    alice, bob = group_of("alice", "bob")
    bad = alice.group.append_content(TEXT, b"\xffnot text", now=10)
    good = alice.group.append_content(TEXT, b"kept", now=11)
    sync(alice, bob)
    fold = bob.group.content_fold(_text)
    out = fold.fold([bad, good, good], {good.id: None})
    assert [f.value for f in out] == [None, None]  # the purged one, twice; garbage dropped
    assert not fold.locked


def test_entries_past_a_cut_off_are_locked_and_a_moved_line_is_seen() -> None:
    alice, bob = group_of("alice", "bob")
    fold = alice.group.content_fold(_text)
    fold.mark()
    alice.group.remove(bob.person, now=20)
    assert fold.cutoffs_moved()
    late = bob.group.append_content(TEXT, b"after my removal", now=21)  # bob has not seen it
    alice.group.receive([item(bob.store, late)])
    assert fold.fold([late]) == [] and list(fold.locked) == [late.id]
    fold.mark()
    assert not fold.cutoffs_moved()


def test_an_author_folds_its_own_entry_without_decrypting_it() -> None:
    [alice] = make_peers("alice")
    found(alice)
    calls: list[Entry] = []

    def never(entry: Entry, body: bytes) -> str:
        calls.append(entry)
        raise AssertionError("decrypted again")

    fold = ContentFold(never)
    entry = alice.group.append_content(TEXT, b"mine", now=5)
    body = stored_entry(alice.store, entry).body
    assert body is not None
    folded = fold.accept(entry, body, "mine")
    assert folded.value == "mine" and not calls
    assert "locked=0" in repr(fold)


def test_receiving_returns_every_entry_that_joined_a_feed_with_its_body() -> None:
    alice, bob = group_of("alice", "bob")
    first = alice.group.write_content(TEXT, b"one", now=10)
    second = alice.group.write_content(TEXT, b"two", now=11)
    assert stored_entry(alice.store, second.entry).body == second.body
    early = bob.group.receive_batch([item(alice.store, second.entry)])
    assert early.accepted == ()  # it waits, pending, for the entry before it
    late = bob.group.receive_batch([item(alice.store, first.entry)])
    assert [(s.entry.id, s.body) for s in late.accepted] == [
        (first.entry.id, first.body),
        (second.entry.id, second.body),  # unblocked: its body comes along
    ]
    fold = bob.group.content_fold(_text)
    known = {s.entry.id: s.body for s in late.accepted}
    assert [f.value for f in fold.fold([s.entry for s in late.accepted], known)] == ["one", "two"]
