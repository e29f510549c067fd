"""The sync session between real Devices on SQLite profiles (through ``tests.sync_helpers``):
group matching, digest/frontier/stream, newest-first, resumption after cuts, live push, key
requests, ephemeral messages, flow control, and what bad input and non-members get."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.errors import LocalProtocolError, RemoteProtocolError, StorageError
from microsync.feed import GroupId, parse_entry
from microsync.feed.entry import MAX_BODY_SIZE
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.protocol.messages import (
    Credit,
    Digest,
    Done,
    Entries,
    Ephemeral,
    ErrorCode,
    ErrorMessage,
    Frontier,
    Hello,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Match,
    Message,
    Ping,
    decode_message,
    encode_message,
)
from microsync.protocol.session import (
    MAX_ITEM_SIZE,
    OUR_DONE,
    TRANSITIONS,
    GroupPhase,
    SessionState,
    SyncOptions,
    SyncSession,
    frontier_digest,
    group_tag,
)
from microsync.testing import forget_key
from tests.sync_helpers import (
    DeviceHost,
    Link,
    close_all,
    connect,
    counter_rng,
    deliver,
    family,
    join,
    open_devices,
    pump,
    run,
    step,
    sync_pair,
)
from tests.test_sync_messages import messages


@pytest.fixture
def pair_in_group(tmp_path: Path) -> Iterator[tuple[DeviceHost, DeviceHost, GroupId]]:
    devices = open_devices(tmp_path, "Alice", "Bob")
    group = family(devices)
    yield DeviceHost(devices[0]), DeviceHost(devices[1]), group
    close_all(devices)


def post(host: DeviceHost, group: GroupId, *texts: str) -> None:
    for text in texts:
        run(host.device.group(group).post(text))


def texts(host: DeviceHost, group: GroupId) -> set[str | None]:
    return {p.text for p in host.device.group(group).feed()}


def kinds(messages: list[Message]) -> list[str]:
    return [type(m).__name__ for m in messages]


def dump(host: DeviceHost) -> bytes:
    return host.device._store.dump()


# ---------------------------------------------------------------------- compare and stream


def test_devices_in_sync_exchange_one_digest_each_way_and_no_entries(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    link = sync_pair(alice, bob)
    assert kinds(link.sent_by("a")) == kinds(link.sent_by("b")) == ["Hello", "Match", "Digest"]
    assert link.a.synced and link.b.synced
    assert link.a.groups == link.b.groups == {group: GroupPhase.LIVE}
    assert link.a.stats.entries_sent == link.b.stats.entries_sent == 0


def test_the_side_behind_catches_up_and_reads_the_posts(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, "Landed in Oxford", "Rain")
    post(bob, group, "Welcome back")
    link = sync_pair(alice, bob)
    assert alice.frontier(group) == bob.frontier(group)
    assert texts(alice, group) == texts(bob, group) == {"Landed in Oxford", "Rain", "Welcome back"}
    assert link.a.stats.entries_sent == 2 and link.b.stats.entries_sent == 1
    assert link.b.stats.entries_accepted == 2 and link.a.stats.entries_accepted == 1
    assert link.a.synced and link.b.synced
    # a second session finds them equal at once
    again = sync_pair(bob, alice)
    assert kinds(again.sent_by("a")) == ["Hello", "Match", "Digest"]


def test_newest_first_sends_the_latest_posts_first_and_converges(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, *(f"post {i}" for i in range(30)))
    held = {d: seq for d, (seq, _) in bob.frontier(group).items()}
    wanted = alice.entries_after(group, held, newest_first=True, limit=99)
    options = SyncOptions(newest_first=True, newest_first_window=16, batch_entries=8)
    link = connect(alice, bob, options_a=SyncOptions(batch_entries=8), options_b=options)
    pump(link)
    batches = [m for m in link.sent_by("a") if isinstance(m, Entries)]
    hlcs = [parse_entry(w).header.hlc for w, _ in batches[0].items]
    newest = sorted((parse_entry(w).header.hlc for w, _ in wanted), reverse=True)
    assert hlcs == newest[:8]  # the first batch: the 8 newest, newest first
    assert [p.text for p in bob.device.group(group).feed()[:3]] == ["post 29", "post 28", "post 27"]
    assert alice.frontier(group) == bob.frontier(group)
    assert link.a.stats.entries_sent == len(wanted)  # nothing sent twice


def test_newest_first_cut_midway_then_resumed_converges(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, *(f"post {i}" for i in range(20)))
    options = SyncOptions(newest_first=True, batch_entries=4)
    first = connect(alice, bob, options_a=SyncOptions(batch_entries=4), options_b=options)
    pump(first, limit=11)  # a cut in the middle of the stream
    assert first.b.stats.entries_received > 0 and alice.frontier(group) != bob.frontier(group)
    sync_pair(alice, bob, options_b=options)
    assert alice.frontier(group) == bob.frontier(group)
    assert len(texts(bob, group)) == 20


def test_a_cut_session_resumes_without_resending_what_arrived(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, *(f"post {i}" for i in range(24)))
    small = SyncOptions(batch_entries=4)
    first = connect(alice, bob, options_a=small, options_b=small)
    pump(first, limit=12)
    kept = first.b.stats.entries_accepted
    assert 0 < kept < 24
    second = sync_pair(alice, bob, options_a=small, options_b=small)
    assert second.a.stats.entries_sent == 24 - kept
    assert alice.frontier(group) == bob.frontier(group)


# ---------------------------------------------------------------------- live push


def test_live_push_after_the_initial_sync_sends_each_entry_once(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    link = sync_pair(alice, bob)
    post(alice, group, "one", "two")
    link.update(group)
    pump(link)
    assert texts(bob, group) == {"one", "two"}
    post(bob, group, "three")
    link.update(group)  # bob pushes "three"; alice has nothing new for bob
    pump(link)
    link.update(group)  # after receiving, each side's host tells its session: nothing to push
    pump(link)
    assert texts(alice, group) == texts(bob, group) == {"one", "two", "three"}
    assert link.a.stats.entries_sent == 2 and link.b.stats.entries_sent == 1
    assert link.a.stats.entries_accepted == 1 and link.b.stats.entries_accepted == 2
    ids = [parse_entry(w).id for _, m in link.log if isinstance(m, Entries) for w, _ in m.items]
    assert len(ids) == len(set(ids)) == 3


def test_live_push_waits_for_credit(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    tight = SyncOptions(window_batches=1, window_bytes=MAX_ITEM_SIZE, batch_entries=2)
    link = connect(alice, bob, options_b=tight)
    pump(link)
    post(alice, group, "a", "b", "c", "d", "e")
    records = link.a.local_update(group)
    assert kinds([decode_message(r) for r in records]) == ["Certificates", "Entries"]
    link.queue("a", records)
    pump(link)
    assert len(texts(bob, group)) == 5


# ---------------------------------------------------------------------- several devices


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.integers(3, 5),
    st.lists(
        st.tuples(
            st.integers(0, 4),  # who posts
            st.integers(0, 3),  # posts this many
            st.integers(0, 4),
            st.integers(0, 4),  # a pair of devices that syncs
            st.none() | st.integers(0, 14),  # cut after this many records
            st.booleans(),  # newest first
            st.booleans(),  # the author rotates the group key first (at most 4 times in all)
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_random_pairwise_sessions_with_cuts_converge(
    size: int, schedule: list[tuple[int, int, int, int, int | None, bool, bool]]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        devices = open_devices(Path(root), *"ABCDE"[:size])
        try:
            group = family(devices)
            hosts = [DeviceHost(d) for d in devices]
            written = rotations = 0
            for author, count, i, j, cut, newest, rotate in schedule:
                writer = hosts[author % size]
                if rotate and rotations < 4:  # devices left behind are matched by confirmation
                    run(writer.device.group(group).rotate_keys())
                    rotations += 1
                post(writer, group, *(f"{written + n}" for n in range(count)))
                written += count
                a, b = hosts[i % size], hosts[j % size]
                if a is b:
                    continue
                options = SyncOptions(newest_first=newest, batch_entries=2)
                link = connect(a, b, options_a=options, options_b=options)
                before = len(b.frontier(group)), sum(s for s, _ in b.frontier(group).values())
                pump(link, limit=cut)
                after = len(b.frontier(group)), sum(s for s, _ in b.frontier(group).values())
                assert after >= before  # partial progress is kept
            for _ in range(2):  # then, without cuts, everyone meets everyone
                for a in hosts:
                    for b in hosts:
                        if a is not b:
                            sync_pair(a, b)
            frontiers = [h.frontier(group) for h in hosts]
            assert all(f == frontiers[0] for f in frontiers)
            contents = [texts(h, group) for h in hosts]
            assert all(c == contents[0] for c in contents)
            assert len(contents[0]) == written
        finally:
            close_all(devices)


# ---------------------------------------------------------------------- who gets what


def test_a_non_member_learns_no_group_and_nothing_changes(tmp_path: Path) -> None:
    alice_device, bob_device, mallory_device = open_devices(tmp_path, "Alice", "Bob", "Mallory")
    try:
        group = family([alice_device, bob_device])
        run(mallory_device.create_group("Mallory's own"))
        alice, mallory = DeviceHost(alice_device), DeviceHost(mallory_device)
        post(alice, group, "private")
        before = dump(alice), dump(mallory)
        link = sync_pair(mallory, alice)
        for session in (link.a, link.b):
            assert session.closed and session.error is None and session.groups == {}
        assert kinds(link.sent_by("a")) == kinds(link.sent_by("b")) == ["Hello", "Match", "Bye"]
        assert all(m.confirms == () for _, m in link.log if isinstance(m, Match))
        hellos = [m for m in (link.sent_by("a")[0], link.sent_by("b")[0])]
        assert all(isinstance(h, Hello) and len(h.tags) == 8 for h in hellos)  # padded alike
        assert (dump(alice), dump(mallory)) == before
        assert mallory.received == [] and alice.received == []
    finally:
        close_all([alice_device, bob_device, mallory_device])


def test_a_device_with_no_group_sends_only_padding(tmp_path: Path) -> None:
    alice_device, stranger_device = open_devices(tmp_path, "Alice", "Stranger")
    try:
        family([alice_device])
        link = sync_pair(DeviceHost(stranger_device), DeviceHost(alice_device))
        [hello, _match, _bye] = link.sent_by("a")
        assert isinstance(hello, Hello) and len(hello.tags) == 8
        assert link.b.groups == {} and link.b.closed
    finally:
        close_all([alice_device, stranger_device])


def test_tags_replayed_from_another_connection_or_reflected_do_not_match(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, _group = pair_in_group
    seen = connect(bob, alice, binding=b"\x01" * 64)
    [bob_hello] = [decode_message(r) for r in seen.to_b]
    alice_hello = seen.to_a[0]
    for binding, record in ((b"\x02" * 64, encode_message(bob_hello)), (b"\x01" * 64, None)):
        session = SyncSession(
            alice,
            our_device=alice.device.id,
            peer_device=bob.device.id,
            channel_binding=binding,
            initiator=False,
            rng=counter_rng("replay"),
        )
        [own_hello] = session.start(now=0)
        # another binding: bob's old tags; same binding: alice's own tags reflected back
        reply = session.receive(record if record is not None else own_hello, now=0)
        assert [decode_message(r) for r in reply] == [Match(confirms=())]
        assert session.groups == {}
        [bye] = session.receive(encode_message(Match(confirms=())), now=0)
        assert kinds([decode_message(bye)]) == ["Bye"] and session.closed
    assert alice_hello != own_hello
    key = alice.sync_groups()[0].keys[0]
    assert group_tag(key, b"\x01" * 64, b"I") != group_tag(key, b"\x02" * 64, b"I")
    assert group_tag(key, b"\x01" * 64, b"I") != group_tag(key, b"\x01" * 64, b"R")


def test_a_removed_member_learns_only_its_removal_and_is_refused_keys(tmp_path: Path) -> None:
    devices = open_devices(tmp_path, "Alice", "Bob", "Carol")
    try:
        group = family(devices)
        alice, _bob, carol = (DeviceHost(d) for d in devices)
        post(alice, group, "before")
        sync_pair(alice, carol)
        assert "before" in texts(carol, group)
        run(alice.device.group(group).remove(carol.device.person_id))
        post(alice, group, "after")
        removal = alice.frontier(group)[alice.device.id][0] - 1  # "after" came after it
        link = sync_pair(carol, alice)  # carol still holds an epoch alice sent a tag for
        assert link.b.groups == {group: GroupPhase.LIVE}
        # alice serves carol exactly the causal past of the removal: carol learns she is out,
        # and gets nothing written after it
        assert link.b.stats.entries_sent == 1
        assert not carol.device.group(group).is_member()
        assert carol.frontier(group)[alice.device.id][0] == removal
        [frontier] = [m for m in link.sent_by("b") if isinstance(m, Frontier)]
        assert all(h.seq <= removal for h in frontier.heads if h.device == alice.device.id)
        link.update(group)
        pump(link)
        assert link.b.stats.entries_sent == 1
        assert not [m for m in link.sent_by("b") if isinstance(m, Ephemeral)]
        assert link.b.send_ephemeral(group, b"here") == []
        # then it asks alice for the new epoch's key: refused
        assert carol.missing_keys(group)
        keys_before = set(carol.device.group(group)._replica.epoch_keys())
        asked = sync_pair(carol, alice)
        assert [m for m in asked.sent_by("a") if isinstance(m, KeyRequest)]
        assert [m for m in asked.sent_by("b") if isinstance(m, KeyRefused)]
        assert asked.a.stats.key_refusals == 1 and not asked.a.closed
        assert set(carol.device.group(group)._replica.epoch_keys()) == keys_before
        assert "after" not in texts(carol, group)
    finally:
        close_all(devices)


def test_a_member_missing_a_key_asks_and_gets_it(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    run(alice.device.group(group).rotate_keys())
    sync_pair(alice, bob)
    replica = bob.device.group(group)._replica
    slot = forget_key(replica)  # as if it had never reached this device
    assert slot[0] == 1
    assert slot in bob.missing_keys(group)
    link = sync_pair(bob, alice)
    assert [m for m in link.sent_by("a") if isinstance(m, KeyRequest)]
    assert [m for m in link.sent_by("b") if isinstance(m, KeyResponse)]
    assert link.a.stats.keys_gained == 1 and slot in replica.epoch_keys()
    assert link.a.synced and link.b.synced


def test_ephemeral_messages_reach_the_peer_host(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    link = sync_pair(alice, bob)
    link.queue("a", link.a.send_ephemeral(group, b"presence: online"))
    pump(link)
    assert bob.ephemerals == [(group, alice.device.id, b"presence: online")]
    with pytest.raises(LocalProtocolError):
        link.a.send_ephemeral(group, b"x" * 5000)
    assert link.a.send_ephemeral(GroupId(b"\0" * 32), b"unknown group") == []


# ---------------------------------------------------------------------- flow control


def test_the_sender_never_exceeds_the_granted_credit(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, *(f"post {i}" for i in range(40)))
    tight = SyncOptions(window_batches=2, window_bytes=MAX_ITEM_SIZE)
    link = connect(alice, bob, options_a=SyncOptions(batch_entries=3), options_b=tight)
    granted = [0, 0]  # what bob granted alice, as far as alice has received
    spent = [0, 0]
    while link.to_a or link.to_b:
        if link.to_a:  # deliver to alice first: credit arrives before she may send more
            record = link.to_a.popleft()
            message = decode_message(record)
            if isinstance(message, Hello):
                granted = [message.credit_batches, message.credit_bytes]
            elif isinstance(message, Credit):
                granted = [granted[0] + message.batches, granted[1] + message.bytes]
            for out in link.a.receive(record, now=0):
                sent = decode_message(out)
                if isinstance(sent, Entries):
                    spent = [spent[0] + 1, spent[1] + sent.size]
                    assert spent[0] <= granted[0] and spent[1] <= granted[1]
                link.to_b.append(out)
        elif link.to_b:
            link.queue("b", link.b.receive(link.to_b.popleft(), now=0))
    assert spent[0] >= 14 and alice.frontier(group) == bob.frontier(group)


# ---------------------------------------------------------------------- bad input


def opened(
    pair: tuple[DeviceHost, DeviceHost, GroupId], options_a: SyncOptions | None = None
) -> Link:
    """A session between alice (a) and bob (b) that has matched the group and compared."""
    alice, bob, _group = pair
    link = connect(alice, bob, options_a=options_a)
    pump(link)
    return link


FOREIGN = GroupId(b"\x09" * 32)


BAD_RECORDS: dict[str, bytes] = {
    "empty": b"",
    "garbage": b"\xff\x00garbage",
    "truncated": encode_message(Credit(batches=1, bytes=1))[:-1],
    "oversized": b"\x00" * (2 * 1024 * 1024),
    "second-hello": encode_message(Hello(tags=(), credit_batches=1, credit_bytes=1)),
    "unmatched-group": encode_message(Digest(group=FOREIGN, digest=b"d" * 32, serving=True)),
    "unmatched-done": encode_message(Done(group=FOREIGN)),
}


@pytest.mark.parametrize(
    "bad",
    [
        *BAD_RECORDS,
        "digest-again",
        "frontier-when-live",
        "unasked-key-response",
        "done-when-live",
    ],
)
def test_bad_or_out_of_state_records_close_the_session_and_change_nothing(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId], bad: str
) -> None:
    alice, _bob, group = pair_in_group
    link = opened(pair_in_group)
    in_state = {
        "digest-again": encode_message(Digest(group=group, digest=b"d" * 32, serving=True)),
        "frontier-when-live": encode_message(Frontier(group=group, heads=(), newest_first=False)),
        "unasked-key-response": encode_message(KeyResponse(group=group, response=b"r")),
        "done-when-live": encode_message(Done(group=group)),
    }
    record = BAD_RECORDS[bad] if bad in BAD_RECORDS else in_state[bad]
    before = dump(alice)
    [reply] = link.a.receive(record, now=0)
    answer = decode_message(reply)
    assert isinstance(answer, ErrorMessage) and answer.code is ErrorCode.PROTOCOL
    assert link.a.closed and isinstance(link.a.error, RemoteProtocolError)
    assert dump(alice) == before
    assert link.a.receive(encode_message(Ping()), now=0) == []  # closed: input ignored
    # the peer closes on the error message without answering
    assert link.b.receive(reply, now=0) == [] and link.b.closed
    assert isinstance(link.b.error, RemoteProtocolError)


def test_entries_before_the_frontier_exchange_are_out_of_state(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(bob, group, "hello")
    link = connect(alice, bob)
    hello = link.to_a.popleft()
    link.a.receive(hello, now=0)  # alice matched and waits for bob's digest
    assert link.a.groups == {group: GroupPhase.AWAIT_DIGEST}
    item = bob.entries_after(group, {}, newest_first=False, limit=1)[0]
    before = dump(alice)
    [reply] = link.a.receive(encode_message(Entries(group=group, items=(item,))), now=0)
    assert isinstance(decode_message(reply), ErrorMessage) and link.a.closed
    assert dump(alice) == before


def test_entries_beyond_the_credit_are_refused(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(bob, group, "hello")
    tight = SyncOptions(window_batches=1, window_bytes=MAX_ITEM_SIZE)
    link = opened(pair_in_group, options_a=tight)
    bogus = encode_message(Entries(group=group, items=((b"not an entry", None),)))
    before = dump(alice)
    first = link.a.receive(bogus, now=0)  # within credit: rejected by the host, not an error
    assert not link.a.closed and kinds([decode_message(r) for r in first]) == ["Credit"]
    body = b"x" * MAX_BODY_SIZE  # a peer that ignores the window: a batch over the bytes granted
    over = Entries(group=group, items=((b"not an entry", body), (b"nor this", body)))
    assert over.size > MAX_ITEM_SIZE
    [reply] = link.a.receive(encode_message(over), now=0)
    assert isinstance(decode_message(reply), ErrorMessage) and link.a.closed
    assert dump(alice) == before


def test_a_forged_key_response_closes_the_session_without_changing_keys(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    run(alice.device.group(group).rotate_keys())
    sync_pair(alice, bob)
    replica = bob.device.group(group)._replica
    forget_key(replica)
    link = connect(bob, alice)
    forged = encode_message(KeyResponse(group=group, response=b"\x83\x03\x00\x40"))
    while link.to_b or link.to_a:  # run until alice's answer is in flight, then swap it
        if link.to_a and isinstance(decode_message(link.to_a[0]), KeyResponse):
            link.to_a[0] = forged
            break
        step(link)
    keys = set(replica.epoch_keys())
    before = dump(bob)
    [reply] = link.a.receive(link.to_a.popleft(), now=0)
    assert isinstance(decode_message(reply), ErrorMessage) and link.a.closed
    assert set(replica.epoch_keys()) == keys and dump(bob) == before


# ---------------------------------------------------------------------- timers and table


def test_idle_sessions_ping_then_time_out(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    link = opened(pair_in_group)
    session = link.a
    assert session.next_deadline(0) == 30_000
    [ping] = session.handle_timeout(30_000)
    assert isinstance(decode_message(ping), Ping)
    assert session.next_deadline(30_000) == 60_000
    assert session.handle_timeout(45_000) == []
    [error] = session.handle_timeout(90_000)
    message = decode_message(error)
    assert isinstance(message, ErrorMessage) and message.code is ErrorCode.TIMEOUT
    assert session.closed and session.next_deadline(90_000) is None
    assert session.state is SessionState.CLOSED


def test_the_transition_table_names_only_real_handlers() -> None:
    for (state, kind), row in TRANSITIONS.items():
        assert isinstance(state, SessionState | GroupPhase)
        assert row.handler.__name__.endswith(f"on_{kind.name.lower()}")
        assert all(type(after) is type(state) for after in row.next)
    group_rows = [row for (state, _), row in TRANSITIONS.items() if isinstance(state, GroupPhase)]
    movers = {row.name for row in group_rows if row.next}  # only reconciliation moves a phase
    assert movers == {"Reconcile.on_digest", "Reconcile.on_frontier", "Reconcile.on_done"}
    assert frontier_digest({}) != frontier_digest({b"d" * 32: (1, b"h" * 32)})  # type: ignore[dict-item]


def test_a_peer_shown_a_member_by_what_it_sends_is_then_served(tmp_path: Path) -> None:
    from tests.test_device_groups import introduce, pair, sync

    devices = open_devices(tmp_path, "Alice", "Carol", "Bob")
    try:
        group = family(devices[:2])
        alice, carol, bob = (DeviceHost(d) for d in devices)
        introduce(*devices)
        invite = run(alice.device.group(group).invite(ttl=3600))
        response = pair(alice.device.invite_host().session(), bob.device.join_guest(invite.link))
        run(bob.device.finish_join(response))
        sync(alice.device, bob.device, group)  # carol has not heard of bob yet
        post(carol, group, "from carol")
        assert not carol.may_serve(group, bob.device.id)
        link = sync_pair(carol, bob)
        [digest] = [m for m in link.sent_by("a") if isinstance(m, Digest)]
        assert not digest.serving  # carol did not know bob at first ...
        assert carol.may_serve(group, bob.device.id)  # ... bob's entries showed he is in
        assert carol.frontier(group) == bob.frontier(group)
        assert texts(bob, group) == {"from carol"}
    finally:
        close_all(devices)


def test_when_neither_side_serves_no_frontier_is_sent(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(alice, group, "unseen")
    for host in (alice, bob):
        host.may_serve = lambda group, peer: False  # type: ignore[method-assign]
    link = sync_pair(alice, bob)
    expected = ["Hello", "Match", "Digest", "Done"]
    assert kinds(link.sent_by("a")) == kinds(link.sent_by("b")) == expected
    assert link.a.synced and link.b.synced and "unseen" not in texts(bob, group)


def test_a_new_device_with_no_key_matches_by_its_welcome_and_gets_newest_first(
    tmp_path: Path,
) -> None:
    alice_device, bob_device = open_devices(tmp_path, "Alice", "Bob")
    try:
        group = family([alice_device])
        alice = DeviceHost(alice_device)
        for _ in range(3):  # alice offers three control keys before the add ids
            run(alice_device.group(group).rotate_keys())
        post(alice, group, *(f"post {i}" for i in range(20)))
        add = join(alice_device, group, bob_device)
        assert alice.sync_groups()[0].keys[3:] == (add,)
        bob = DeviceHost(bob_device, welcomes={group: add})
        assert not bob_device.group(group).is_member() and bob.sync_groups()[0].keys == (add,)
        newest = SyncOptions(newest_first=True, batch_entries=8)
        link = connect(bob, alice, options_a=newest, options_b=SyncOptions(batch_entries=8))
        pump(link)
        # what the newcomer needs to open anything comes first (each feed up to its last
        # membership operation, in order), then the rest newest first
        sent = [
            parse_entry(w) for m in link.sent_by("b") if isinstance(m, Entries) for w, _ in m.items
        ]
        kinds = [e.header.type for e in sent]
        last_op = max(i for i, t in enumerate(kinds) if t == MEMBERSHIP_TYPE)
        rest = [e.header.hlc for e in sent[last_op + 1 :]]
        assert rest == sorted(rest, reverse=True)  # here alice's add of bob ends her feed
        assert [e.header.seq for e in sent[: last_op + 1]] == sorted(
            e.header.seq for e in sent[: last_op + 1]
        )
        assert bob_device.group(group).is_member()
        assert alice.frontier(group) == bob.frontier(group)
        assert [p.text for p in bob_device.group(group).feed()[:2]] == ["post 19", "post 18"]
        # once it holds keys, it matches by them first, like any member
        assert bob.sync_groups()[0].keys[0] != add
    finally:
        close_all([alice_device, bob_device])


def test_key_requests_are_answered_a_bounded_number_of_times(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, _bob, group = pair_in_group
    link = opened(pair_in_group)
    [slot] = [s for s in alice.device.group(group)._replica.epoch_keys()]
    request = encode_message(KeyRequest(group=group, wanted=(slot,)))
    answers = [decode_message(r) for _ in range(6) for r in link.a.receive(request, now=0)]
    assert kinds(answers) == ["KeyResponse"] * 4 + ["KeyRefused"] * 2
    assert not link.a.closed


def test_a_local_failure_closes_with_an_opaque_internal_error(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(bob, group, "hello")

    def broken(group: GroupId, items: object) -> int:
        raise StorageError("disk full at /home/alice/secret-path")

    alice.receive = broken  # type: ignore[method-assign]
    link = connect(alice, bob)
    pump(link)
    [error] = [m for m in link.sent_by("a") if isinstance(m, ErrorMessage)]
    assert error.code is ErrorCode.INTERNAL and error.reason == "internal error"
    assert isinstance(link.a.error, StorageError) and link.a.closed and link.b.closed


def test_the_table_in_docs_sync_md_is_the_transition_table() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "sync.md").read_text()
    row = r"^\| `(\w+)\.(\w+)` \| `(\w+)` \| `([\w.]+)` \| (.+) \|$"
    rows = set(re.findall(row, text, re.MULTILINE))
    table = {
        (type(state).__name__, state.name, kind.name, row.name, _next(row.next))
        for (state, kind), row in TRANSITIONS.items()
    }
    assert rows == table
    ours = set(re.findall(r"^\| `GroupPhase\.(\w+)` \| `(\w+)` \|$", text, re.MULTILINE))
    assert ours == {(before.name, after.name) for before, after in OUR_DONE.items()}


def _next(phases: tuple[SessionState | GroupPhase, ...]) -> str:
    return ", ".join(f"`{p.name}`" for p in phases) or "(stays)"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), st.booleans()), max_size=8))
def test_live_sessions_in_a_line_converge_and_deliver_each_entry_once(
    steps: list[tuple[int, int, bool]],
) -> None:
    """A - B - C stay connected; posts anywhere reach everyone through B, each entry arriving
    at each device exactly once (the host calls local_update on every session after a change).
    """
    with tempfile.TemporaryDirectory() as root:
        devices = open_devices(Path(root), "A", "B", "C")
        try:
            group = family(devices)
            hosts = [DeviceHost(d) for d in devices]
            links = [connect(hosts[0], hosts[1]), connect(hosts[1], hosts[2])]

            def settle() -> None:  # as a node does: after any change, update every session
                while True:
                    for link in links:
                        link.update(group)
                    if not any(link.to_a or link.to_b for link in links):
                        return
                    for link in links:
                        pump(link)

            settle()
            written = 0
            for who, count, settle_now in steps:
                post(hosts[who], group, *(f"{written + n}" for n in range(count)))
                written += count
                for link in links:
                    link.update(group)
                if settle_now:
                    settle()
            settle()
            assert all(link.a.synced and link.b.synced for link in links)
            contents = [texts(h, group) for h in hosts]
            assert all(c == {str(n) for n in range(written)} for c in contents)
            for host in hosts:
                ids = [parse_entry(w).id for _, items in host.received for w, _ in items]
                assert len(ids) == len(set(ids))
        finally:
            close_all(devices)


def test_a_member_several_rotations_behind_is_recognised_and_catches_up(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(bob, group, "hi")  # bob has written: his add is no longer offered as a proof
    sync_pair(alice, bob)
    for _ in range(4):  # bob is away: alice's offered keys are all newer than his
        run(alice.device.group(group).rotate_keys())
    post(alice, group, "while you were away")
    offered = set(alice.sync_groups()[0].keys)
    assert not offered & set(bob.sync_groups()[0].keys)
    link = sync_pair(bob, alice)
    [match] = [m for m in link.sent_by("b") if isinstance(m, Match)]
    assert len(match.confirms) == 1  # alice confirms under the key bob offered
    assert link.a.synced and link.b.synced
    assert alice.frontier(group) == bob.frontier(group)
    assert texts(bob, group) == {"hi", "while you were away"}


def test_a_confirmation_from_another_connection_is_refused(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, bob, group = pair_in_group
    post(bob, group, "hi")
    sync_pair(alice, bob)
    for _ in range(4):
        run(alice.device.group(group).rotate_keys())
    old = connect(bob, alice, binding=b"\x05" * 64)
    deliver(old, "a")  # alice gets bob's Hello and confirms
    confirms = [m for r in old.to_a if isinstance(m := decode_message(r), Match)]
    assert confirms and confirms[0].confirms
    fresh = connect(bob, alice, binding=b"\x06" * 64)
    deliver(fresh, "b")  # bob gets alice's Hello on the new connection: nothing matches
    assert fresh.a.groups == {}
    before = dump(bob)
    [reply] = fresh.a.receive(encode_message(confirms[0]), now=0)  # replayed
    assert isinstance(decode_message(reply), ErrorMessage) and fresh.a.closed
    assert fresh.a.groups == {} and dump(bob) == before


@pytest.fixture(scope="module")
def fuzz_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DeviceHost, DeviceHost, GroupId]]:
    devices = open_devices(tmp_path_factory.mktemp("fuzz"), "Alice", "Bob")
    group = family(devices)
    post(DeviceHost(devices[1]), group, "bob is ahead")
    yield DeviceHost(devices[0]), DeviceHost(devices[1]), group
    close_all(devices)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.integers(0, 4),
    st.lists(st.tuples(messages, st.booleans()), min_size=1, max_size=6),
)
def test_any_sequence_of_messages_closes_cleanly_or_goes_on_and_changes_no_store(
    fuzz_pair: tuple[DeviceHost, DeviceHost, GroupId],
    honest: int,
    sequence: list[tuple[Message, bool]],
) -> None:
    """After ``honest`` real records from bob (Hello, Match, Digest, Frontier), anything."""
    alice, bob, group = fuzz_pair
    before = dump(alice)
    link = connect(bob, alice, binding=b"\x07" * 64)
    for _ in range(honest):
        if link.to_b:
            deliver(link, "a")
    session = link.b
    for message, in_group in sequence:
        if in_group and hasattr(message, "group"):
            message = dataclasses.replace(message, group=group)  # type: ignore[arg-type]
        for reply in session.receive(encode_message(message), now=0):
            decode_message(reply)  # whatever it answers is well-formed
    if session.error is not None:
        assert session.closed and isinstance(session.error, RemoteProtocolError)
    assert dump(alice) == before


def test_ephemeral_messages_beyond_the_rate_are_dropped(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    alice, _bob, group = pair_in_group
    link = opened(pair_in_group)
    flood = encode_message(Ephemeral(group=group, data=b"here"))
    for _ in range(130):
        link.a.receive(flood, now=1_000)
    assert len(alice.ephemerals) == 120 and link.a.stats.ephemeral_dropped == 10
    link.a.receive(flood, now=61_000)  # the next minute
    assert len(alice.ephemerals) == 121 and not link.a.closed


# ---------------------------------------------------------------------- vault chunks


def test_chunk_requests_are_answered_with_data_or_missing_beside_entry_sync(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    from microsync.protocol.messages import ChunkData, ChunkMissing, ChunkRequest

    alice, bob, group = pair_in_group
    ref = run(alice.device.group(group).vault.add(b"x" * 100, name="x"))
    post(alice, group, "a post that syncs while chunks flow")
    link = opened(pair_in_group)  # matched and compared; entries still to come
    bob.device.group(group).vault.refresh()
    chunk = bob.device.group(group).vault.missing(ref)[0]
    link.b.request_chunks(group, [chunk, b"u" * 32])
    assert link.b.chunks_outstanding(group) == 2
    post(alice, group, "and another")
    link.queue("b", link.b.flush())
    link.update(group)
    pump(link)
    sent = link.sent_by("a")
    assert ChunkRequest(group=group, ids=(chunk, b"u" * 32)) in link.sent_by("b")
    data = [m for m in sent if isinstance(m, ChunkData)]
    assert [m.id for m in data] == [chunk] and len(data[0].data) == 100 + 16
    assert ChunkMissing(group=group, ids=(b"u" * 32,)) in sent
    assert link.b.chunks_outstanding(group) == 0 and link.a.stats.chunks_sent == 1
    assert "and another" in texts(bob, group)


def test_unasked_chunk_answers_close_the_session_and_change_nothing(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    from microsync.protocol.messages import ChunkData, ChunkMissing

    alice, _bob, group = pair_in_group
    for message in (
        ChunkData(group=group, id=b"c" * 32, data=b"sealed"),
        ChunkMissing(group=group, ids=(b"c" * 32,)),
    ):
        link = opened(pair_in_group)
        before = dump(alice)
        [reply] = link.a.receive(encode_message(message), now=0)
        assert isinstance(decode_message(reply), ErrorMessage) and link.a.closed
        assert dump(alice) == before


def test_chunk_requests_beyond_the_window_are_a_local_error(
    pair_in_group: tuple[DeviceHost, DeviceHost, GroupId],
) -> None:
    _alice, _bob, group = pair_in_group
    link = opened(pair_in_group, options_a=SyncOptions(max_chunks_outstanding=4))
    link.a.request_chunks(group, [bytes([i]) * 32 for i in range(4)])
    with pytest.raises(LocalProtocolError):
        link.a.request_chunks(group, [b"\xff" * 32])
    assert len(link.a.flush()) == 1  # one request of four ids
