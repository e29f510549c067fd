"""Each machine of the sync session on its own, against its table: which messages are legal in
which phase, where each leads, and the laws of the flow credit and the timers (Hypothesis).
The hosts here are small in-memory fakes; ``tests/test_sync_session.py`` runs real devices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microsync.errors import LocalProtocolError, RemoteProtocolError
from microsync.feed.entry import EntryId, GroupId
from microsync.identity import DeviceId
from microsync.protocol.messages import (
    Bye,
    Certificates,
    ChunkData,
    ChunkMissing,
    ChunkRequest,
    Credit,
    Digest,
    Done,
    Entries,
    ErrorMessage,
    Frontier,
    FrontierHead,
    Item,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Match,
    Message,
    MsgType,
    Ping,
    decode_message,
    encode_message,
    message_type,
)
from microsync.protocol.session import (
    OUR_DONE,
    GroupPhase,
    GroupProof,
    SessionState,
    SyncOptions,
    SyncSession,
    frontier_digest,
)
from microsync.protocol.sync.chunks import CHUNK_TRANSFER, ChunkTransfer
from microsync.protocol.sync.credit import Allowance, Window
from microsync.protocol.sync.keepalive import EPHEMERAL, Due, EphemeralInbox, Keepalive
from microsync.protocol.sync.keyfetch import KEY_FETCH, KeyFetch
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.matching import MATCHING, Matching
from microsync.protocol.sync.reconcile import FORK_EXCHANGE, RECONCILE, STREAMING, Reconcile
from microsync.protocol.sync.table import Row
from tests.sync_helpers import counter_rng

GROUP = GroupId(b"g" * 32)
PEER = DeviceId(b"p" * 32)
ME = DeviceId(b"m" * 32)
_P = GroupPhase


class FakeHost:
    """A host that holds one group with a given frontier and no entries to send."""

    def __init__(
        self,
        *,
        keys: tuple[bytes, ...] = (b"k" * 32,),
        older: tuple[bytes, ...] = (),
        heads: Mapping[DeviceId, tuple[int, EntryId]] | None = None,
        serves: bool = True,
        missing: Sequence[tuple[int, bytes]] = (),
    ) -> None:
        self.keys, self.older = keys, older
        self.heads = dict(heads or {})
        self.serves = serves
        self.missing = list(missing)
        self.received: list[Sequence[Item]] = []
        self.ephemerals: list[bytes] = []

    def sync_groups(self) -> list[GroupProof]:
        return [GroupProof(group=GROUP, keys=self.keys, older=self.older)]

    def frontier(self, group: GroupId) -> Mapping[DeviceId, tuple[int, EntryId]]:
        return self.heads

    def entries_after(
        self, group: GroupId, frontier: Mapping[DeviceId, int], *, newest_first: bool, limit: int
    ) -> list[Item]:
        return []

    def receive(self, group: GroupId, items: Sequence[Item]) -> int:
        self.received.append(items)
        return 0

    def may_serve(self, group: GroupId, peer: DeviceId) -> bool:
        return self.serves

    def certificates(self, group: GroupId) -> list[bytes]:
        return []

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        return None

    def missing_keys(self, group: GroupId) -> list[tuple[int, bytes]]:
        return self.missing

    def answer_key_request(
        self, group: GroupId, peer: DeviceId, wanted: Sequence[tuple[int, bytes]]
    ) -> bytes | None:
        return b"keys"

    def accept_key_response(self, group: GroupId, peer: DeviceId, response: bytes) -> int:
        return 0

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        self.ephemerals.append(data)


def link_to(host: FakeHost, options: SyncOptions | None = None) -> Link:
    options = options or SyncOptions()
    return Link(host, PEER, options, Window.of(options.window_batches, options.window_bytes))


def step(table: Mapping[tuple[Any, MsgType], Row[Any, Any, Any]], machine: Any, m: Message) -> Any:
    """What the session's dispatch does for one machine: the row, the handler, the move."""
    phase = machine.phase
    row = table.get((phase, message_type(m)))
    if row is None:
        raise RemoteProtocolError(f"{message_type(m).name} is not allowed in {phase}")
    after = row.run(machine, m)
    if after is not None:
        machine.enter(after)
    return machine.phase


def sent(link: Link) -> list[str]:
    names = [type(m).__name__ for m in link.out]
    link.out.clear()
    return names


HEADS = {DeviceId(b"d" * 32): (3, EntryId(b"h" * 32))}


def frontier_of(heads: Mapping[DeviceId, tuple[int, EntryId]]) -> Frontier:
    rows = tuple(FrontierHead(device=d, seq=s, head=h) for d, (s, h) in sorted(heads.items()))
    return Frontier(group=GROUP, heads=rows, newest_first=False)


# ---------------------------------------------------------------------- the tables


def test_each_message_is_legal_in_exactly_its_phases() -> None:
    after_frontier = set(STREAMING)
    legal = {
        MsgType.DIGEST: {_P.AWAIT_DIGEST},
        MsgType.FRONTIER: {_P.AWAIT_FRONTIER},
        MsgType.DONE: {_P.SYNCING, _P.AWAIT_DONE},  # one DONE each way
        MsgType.CERTIFICATES: {_P.AWAIT_FRONTIER, *after_frontier},
        MsgType.ENTRIES: after_frontier,
        MsgType.KEY_REQUEST: after_frontier,
        MsgType.KEY_RESPONSE: after_frontier,
        MsgType.KEY_REFUSED: after_frontier,
        MsgType.FORK_EVIDENCE: {_P.AWAIT_FRONTIER, *after_frontier},
        MsgType.CONFLICT: after_frontier,
        MsgType.EPHEMERAL: set(GroupPhase),
        MsgType.CHUNK_REQUEST: set(GroupPhase),
        MsgType.CHUNK_DATA: set(GroupPhase),
        MsgType.CHUNK_MISSING: set(GroupPhase),
    }
    tables = (RECONCILE, FORK_EXCHANGE, KEY_FETCH, CHUNK_TRANSFER, EPHEMERAL)
    rows = {key for table in tables for key in table}
    assert rows == {(phase, kind) for kind, phases in legal.items() for phase in phases}
    assert set(MATCHING) == {
        (SessionState.AWAIT_HELLO, MsgType.HELLO),
        (SessionState.AWAIT_MATCH, MsgType.MATCH),
    }
    # only reconciliation moves a group; what rides on it never does
    assert all(not row.next for table in tables[1:] for row in table.values())
    assert OUR_DONE == {_P.SYNCING: _P.AWAIT_DONE, _P.SENDING: _P.LIVE}


def test_a_handler_that_leaves_its_row_is_a_local_error() -> None:
    def sideways(machine: object, m: Done) -> GroupPhase:
        return GroupPhase.AWAIT_DIGEST

    with pytest.raises(LocalProtocolError):
        Row(sideways, (GroupPhase.LIVE,)).run(object(), Done(group=GROUP))
    with pytest.raises(LocalProtocolError):
        Row(sideways).run(object(), Done(group=GROUP))
    assert Row(lambda c, m: None, (GroupPhase.LIVE,)).run(object(), None) is GroupPhase.LIVE


# ---------------------------------------------------------------------- reconcile


def opened(host: FakeHost, options: SyncOptions | None = None) -> tuple[Link, Reconcile]:
    link = link_to(host, options)
    machine = Reconcile(link, GROUP)
    machine.open()
    assert sent(link) == ["Digest"] and machine.phase is _P.AWAIT_DIGEST
    return link, machine


def digest_of(heads: Mapping[DeviceId, tuple[int, EntryId]], *, serving: bool) -> Digest:
    return Digest(group=GROUP, digest=frontier_digest(heads), serving=serving)


def test_equal_digests_go_live_at_once() -> None:
    link, machine = opened(FakeHost(heads=HEADS))
    assert step(RECONCILE, machine, digest_of(HEADS, serving=True)) is _P.LIVE
    assert machine.view.knows and machine.view.known == {d: s for d, (s, _) in HEADS.items()}
    assert link.keys_due == {GROUP: None}  # keys are asked once the phase is LIVE


@pytest.mark.parametrize(
    ("we_serve", "peer_serves", "phase", "messages"),
    [
        (True, True, _P.AWAIT_FRONTIER, ["Frontier"]),
        (True, False, _P.AWAIT_FRONTIER, ["Frontier"]),
        (False, True, _P.AWAIT_FRONTIER, []),  # wait for the peer's frontier, then clamp
        (False, False, _P.AWAIT_DONE, ["Done"]),  # nothing to compare
    ],
)
def test_a_different_digest_leads_by_who_serves(
    we_serve: bool, peer_serves: bool, phase: GroupPhase, messages: list[str]
) -> None:
    link, machine = opened(FakeHost(heads=HEADS, serves=we_serve))
    assert step(RECONCILE, machine, digest_of({}, serving=peer_serves)) is phase
    assert sent(link) == messages


def test_serving_side_streams_then_ends_with_its_done() -> None:
    link, machine = opened(FakeHost(heads=HEADS))
    step(RECONCILE, machine, digest_of({}, serving=True))
    sent(link)
    assert step(RECONCILE, machine, frontier_of({})) is _P.SYNCING
    assert link.pump_due and GROUP in link.dirty
    link.credit = Allowance(1, 10**6)
    assert machine.push()  # nothing left to send: our stream ends
    assert sent(link) == ["Done"] and machine.phase is _P.AWAIT_DONE and not link.dirty
    assert step(RECONCILE, machine, Done(group=GROUP)) is _P.LIVE
    with pytest.raises(RemoteProtocolError):  # one DONE each way
        step(RECONCILE, machine, Done(group=GROUP))


def test_the_peers_done_first_then_ours_goes_live() -> None:
    link, machine = opened(FakeHost(heads=HEADS))
    step(RECONCILE, machine, digest_of({}, serving=True))
    step(RECONCILE, machine, frontier_of({}))
    assert step(RECONCILE, machine, Done(group=GROUP)) is _P.SENDING
    sent(link)
    link.credit = Allowance(1, 10**6)
    machine.push()
    assert sent(link) == ["Done"] and machine.phase is _P.LIVE


def test_a_side_not_serving_answers_the_frontier_clamped_and_is_done() -> None:
    ahead = {DeviceId(b"d" * 32): (5, EntryId(b"x" * 32))}
    link, machine = opened(FakeHost(heads=ahead, serves=False))
    step(RECONCILE, machine, digest_of({}, serving=True))
    assert step(RECONCILE, machine, frontier_of(HEADS)) is _P.AWAIT_DONE
    [frontier, done] = link.out
    assert isinstance(frontier, Frontier) and isinstance(done, Done)
    assert [(h.seq, h.head) for h in frontier.heads] == [(3, b"h" * 32)]  # not our 5


def test_out_of_phase_messages_are_refused() -> None:
    _, machine = opened(FakeHost(heads=HEADS))
    for message in (
        frontier_of({}),
        Done(group=GROUP),
        Entries(group=GROUP, items=((b"x", None),)),
    ):
        with pytest.raises(RemoteProtocolError):
            step(RECONCILE, machine, message)
    assert machine.phase is _P.AWAIT_DIGEST
    step(RECONCILE, machine, digest_of(HEADS, serving=True))
    with pytest.raises(RemoteProtocolError):
        step(RECONCILE, machine, digest_of(HEADS, serving=True))


def test_entries_spend_the_window_and_give_it_back() -> None:
    options = SyncOptions(window_batches=1)
    host = FakeHost(heads=HEADS)
    link, machine = opened(host, options)
    step(RECONCILE, machine, digest_of(HEADS, serving=True))
    batch = Entries(group=GROUP, items=((b"junk", b"body"),))
    assert step(RECONCILE, machine, batch) is _P.LIVE
    assert link.out == [Credit(batches=1, bytes=batch.size)] and host.received
    assert link.window.left == link.window.limit
    certs = Certificates(group=GROUP, certificates=(b"c",) * (options.limits.max_feeds + 1))
    with pytest.raises(RemoteProtocolError):
        step(RECONCILE, machine, certs)


# ---------------------------------------------------------------------- flow credit


@given(
    st.integers(1, 8),
    st.integers(1, 10_000),
    st.lists(st.tuples(st.booleans(), st.integers(0, 12_000)), max_size=60),
)
def test_the_window_is_never_negative_nor_beyond_what_was_granted(
    batches: int, size: int, steps: list[tuple[bool, int]]
) -> None:
    window = Window.of(batches, size)
    spent: list[int] = []
    for take, amount in steps:
        if take:
            try:
                window = window.take(amount)
                spent.append(amount)
            except RemoteProtocolError:
                assert not (window.left.batches >= 1 and amount <= window.left.bytes)
        elif spent:
            window = window.give_back(spent.pop())
        left = window.left
        assert 0 <= left.batches <= batches and 0 <= left.bytes <= size
        assert left.batches == batches - len(spent)  # a batch given back is a batch again
        assert left.bytes == size - sum(spent)


@given(st.integers(0, 5), st.integers(0, 10_000), st.lists(st.integers(0, 3_000), max_size=30))
def test_a_sender_never_spends_beyond_its_allowance(
    batches: int, size: int, batches_wanted: list[int]
) -> None:
    credit, total, count = Allowance(batches, size), 0, 0
    for amount in batches_wanted:
        if credit.admits(amount):
            credit = credit.spend(amount)
            total, count = total + amount, count + 1
        else:
            with pytest.raises(LocalProtocolError):
                credit.spend(amount)
        assert credit.batches >= 0 and credit.bytes >= 0
    assert count <= batches and total <= size
    assert credit.grant(2, 7) == Allowance(credit.batches + 2, credit.bytes + 7)


# ---------------------------------------------------------------------- matching


def pair(host_a: FakeHost, host_b: FakeHost) -> tuple[SyncSession, SyncSession, list[Message]]:
    """Two sessions over fake hosts, pumped until quiet; the messages in the order sent."""

    def session(host: FakeHost, initiator: bool) -> SyncSession:
        return SyncSession(
            host,
            our_device=ME if initiator else PEER,
            peer_device=PEER if initiator else ME,
            channel_binding=b"\x02" * 32,
            initiator=initiator,
            rng=counter_rng(f"{initiator}"),
        )

    a, b = session(host_a, True), session(host_b, False)
    queue = [(b, r) for r in a.start(0)] + [(a, r) for r in b.start(0)]
    log: list[Message] = []
    while queue:
        to, record = queue.pop(0)
        log.append(decode_message(record))
        back = a if to is b else b
        queue += [(back, r) for r in to.receive(record, 0)]
    return a, b, log


def test_sessions_holding_a_key_match_and_both_go_live() -> None:
    a, b, log = pair(FakeHost(heads=HEADS), FakeHost(heads=HEADS))
    assert a.state is b.state is SessionState.OPEN
    assert a.groups == b.groups == {GROUP: _P.LIVE} and a.synced and b.synced
    assert sorted(type(m).__name__ for m in log) == ["Digest"] * 2 + ["Hello"] * 2 + ["Match"] * 2


def test_a_side_behind_is_matched_through_a_confirmation() -> None:
    old, new = b"o" * 32, b"n" * 32
    a, b, log = pair(FakeHost(keys=(new,), older=(old,)), FakeHost(keys=(old,)))
    matches = [m for m in log if isinstance(m, Match)]
    assert sorted(len(m.confirms) for m in matches) == [0, 1]  # only the side ahead confirms
    assert set(a.groups) == set(b.groups) == {GROUP}


def test_no_group_in_common_ends_with_bye_and_the_matching_table_refuses_repeats() -> None:
    a, b, log = pair(FakeHost(keys=(b"a" * 32,)), FakeHost(keys=(b"b" * 32,)))
    assert a.closed and b.closed and a.error is None and a.groups == {}
    assert [type(m).__name__ for m in log].count("Bye") == 2
    host = FakeHost()
    link = link_to(host)
    matching = Matching(
        link, channel_binding=b"\x02" * 32, initiator=True, open_group=lambda g: None, opened={}
    )
    hello = matching.hello(counter_rng("m"))
    assert len(hello.tags) == SyncOptions().pad_tags

    class Machine:
        phase = SessionState.AWAIT_HELLO

        def enter(self, phase: SessionState) -> None:
            self.phase = phase

    state = Machine()

    def run(m: Message) -> SessionState:
        row = MATCHING.get((state.phase, message_type(m)))
        if row is None:
            raise RemoteProtocolError("out of state")
        after = row.run(matching, m)
        state.enter(after or state.phase)
        return state.phase

    with pytest.raises(RemoteProtocolError):
        run(Match(confirms=()))
    assert run(hello) is SessionState.AWAIT_MATCH
    with pytest.raises(RemoteProtocolError):
        run(hello)
    assert run(Match(confirms=())) is SessionState.CLOSED  # nothing matched: Bye
    assert isinstance(link.out[-1], Bye)


def test_session_level_messages_out_of_state_close_with_an_error() -> None:
    session = SyncSession(
        FakeHost(),
        our_device=ME,
        peer_device=PEER,
        channel_binding=b"\x02" * 32,
        initiator=True,
        rng=counter_rng("s"),
    )
    session.start(0)
    assert session.receive(encode_message(Ping()), 0) == []
    [error] = session.receive(encode_message(Credit(batches=1, bytes=1)), 0)
    assert isinstance(decode_message(error), ErrorMessage) and session.closed


# ---------------------------------------------------------------------- key fetch, chunks


def test_key_fetch_asks_once_per_slot_and_refuses_unasked_answers() -> None:
    slot = (2, b"c" * 32)
    link = link_to(FakeHost(missing=[slot]), SyncOptions(max_key_rounds=2))
    keys = KeyFetch(link, GROUP)
    keys.request()
    keys.request()  # the same slot: not asked again
    assert link.out == [KeyRequest(group=GROUP, wanted=(slot,))] and keys.awaiting == 1
    keys.on_key_refused(KeyRefused(group=GROUP))
    assert keys.awaiting == 0 and link.stats.key_refusals == 1
    with pytest.raises(RemoteProtocolError):
        keys.on_key_response(KeyResponse(group=GROUP, response=b"x"))
    link.out.clear()
    for _ in range(3):
        keys.on_key_request(KeyRequest(group=GROUP, wanted=(slot,)))
    assert [type(m).__name__ for m in link.out] == ["KeyResponse", "KeyResponse", "KeyRefused"]


def test_chunk_answers_must_match_a_request_within_the_window() -> None:
    link = link_to(FakeHost(), SyncOptions(max_chunks_outstanding=3))
    chunks = ChunkTransfer(link, GROUP)
    ids = [bytes([i]) * 32 for i in range(3)]
    chunks.request([*ids[:2], ids[0]])
    assert link.out == [ChunkRequest(group=GROUP, ids=tuple(ids[:2]))]
    with pytest.raises(LocalProtocolError):
        chunks.request([bytes([9]) * 32, bytes([8]) * 32])
    chunks.on_chunk_missing(ChunkMissing(group=GROUP, ids=(ids[1],)))
    with pytest.raises(RemoteProtocolError):
        chunks.on_chunk_data(ChunkData(group=GROUP, id=ids[1], data=b"late"))
    link.out.clear()
    chunks.on_chunk_request(ChunkRequest(group=GROUP, ids=(ids[2],)))  # not a ChunkHost
    assert link.out == [ChunkMissing(group=GROUP, ids=(ids[2],))]


# ---------------------------------------------------------------------- keepalive, ephemeral


@given(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.booleans(),
)
def test_nothing_is_due_before_the_deadline_and_something_is_at_it(
    start: int, heard: int, spoke: int, opening: bool
) -> None:
    timers = Keepalive(SyncOptions())
    timers.start(start)
    timers.received(start + heard)
    timers.sent(start + spoke)
    deadline = timers.deadline(opening=opening)
    assert timers.due(deadline - 1, opening=opening) is Due.NOTHING
    assert timers.due(deadline, opening=opening) is not Due.NOTHING


def test_timers_close_an_unopened_or_idle_session_and_ping_a_quiet_one() -> None:
    options = SyncOptions()
    timers = Keepalive(options)
    timers.start(0)
    assert timers.due(options.match_timeout_ms, opening=True) is Due.OPEN_TIMEOUT
    assert timers.due(options.keepalive_ms, opening=False) is Due.PING
    assert timers.due(options.idle_timeout_ms, opening=False) is Due.IDLE


def test_ephemeral_messages_beyond_the_rate_in_one_minute_are_dropped() -> None:
    from microsync.protocol.messages import Ephemeral

    host = FakeHost()
    link = link_to(host, SyncOptions(ephemeral_per_minute=2))
    inbox = EphemeralInbox(link)
    for now in (0, 1, 2, 60_000):
        link.now = now
        inbox.on_ephemeral(Ephemeral(group=GROUP, data=str(now).encode()))
    assert host.ephemerals == [b"0", b"1", b"60000"] and link.stats.ephemeral_dropped == 1
