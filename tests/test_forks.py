"""Forks are caught when peers meet (issue 13, item 6).

Mallory's device signs two different entries at one position of its feed (the hostile kit,
``Hostile.craft(seq=k)``) and gives one to Alice, the other to Carol. When Alice and Carol sync,
the frontier head ids disagree at a position both hold; the session sends each the other's
signed entry there (``Conflict``), each keeps the pair as fork evidence, passes it on
(``FORK_EVIDENCE``) to every peer it serves, marks Mallory's feed forked, accepts and shows
nothing of it from the fork on, and emits ``device_forked``. A peer serving an older view of a
feed than one this device holds is counted in ``stats.stale``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.app.api import DeviceForked, Event
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.errors import ForkedFeed, RemoteProtocolError
from microsync.feed import GroupId
from microsync.feed.entry import Entry
from microsync.identity import DeviceId
from microsync.protocol.messages import (
    Conflict,
    ForkEvidenceMessage,
    Message,
    encode_message,
)
from microsync.protocol.session import SyncOptions
from microsync.testing import replica_of, store_of
from microsync.testing.hostile import Hostile
from tests.sync_helpers import DeviceHost, connect, deliver, pump, sync_pair
from tests.test_app_group import family_of

Item = tuple[bytes, bytes | None]


def hlc() -> int:
    return int(time.time() * 1000)


def post_op(text: str) -> bytes:
    return AppOp(Kind.POST, text=text).to_bytes()


def versions(evil: Hostile, run: int = 1) -> tuple[list[Item], list[Item]]:
    """``run`` entries of Mallory's feed from the next position, twice: version A (stored in
    Mallory's own feed, chained) and version B (a second chain from the same position)."""
    start = evil.head()[0] + 1
    a: list[Item] = []
    for i in range(run):
        entry = evil.append_content(APP_TYPE, post_op(f"version A {i}"), hlc=hlc())
        a.append((entry.wire, stored_body(evil, entry)))
    b: list[Item] = []
    prev = evil.replica.store.entry_at(evil.replica.id, evil.identity.device_id, start - 1)
    prev_id = None if prev is None else prev.entry.id
    for i in range(run):
        epoch, body = evil.seal_content(APP_TYPE, post_op(f"version B {i}"), seq=start + i)
        entry = evil.craft(
            type=APP_TYPE,
            body=body,
            epoch=epoch,
            hlc=hlc(),
            seq=start + i,
            prev=prev_id,
            chain=False,
        )
        b.append((entry.wire, body))
        prev_id = entry.id
    return a, b


def stored_body(evil: Hostile, entry: Entry) -> bytes | None:
    stored = evil.replica.store.entry_at(evil.replica.id, entry.header.device, entry.header.seq)
    assert stored is not None
    return stored.body


def forked_at(group: microsync.Group, device: DeviceId) -> int | None:
    return replica_of(group).store.feed_status(group.id, device).forked_at


def evidence(group: microsync.Group, device: DeviceId) -> set[frozenset[bytes]]:
    found = replica_of(group).store.fork_evidence(group.id, device)
    return {frozenset((e.first, e.second)) for e in found}


def texts(group: microsync.Group) -> set[str | None]:
    return {p.text for p in group.feed()}


def kinds(messages: list[Message]) -> list[str]:
    return [type(m).__name__ for m in messages]


class Listener:
    """Collects a group's events from now on (``Group.events``)."""

    def __init__(self, group: microsync.Group) -> None:
        self.stream: AsyncIterator[Event] = group.events()
        self.seen: list[Event] = []
        self.task = asyncio.ensure_future(self._collect())

    async def _collect(self) -> None:
        async for event in self.stream:
            self.seen.append(event)

    async def forks(self) -> list[DeviceForked]:
        await asyncio.sleep(0)
        return [e.detail for e in self.seen if e.kind == "device_forked"]  # type: ignore[misc]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def listening(stack: AsyncExitStack, group: microsync.Group) -> Listener:
    listener = Listener(group)
    await asyncio.sleep(0)  # the stream is registered once it runs
    stack.push_async_callback(listener.close)
    return listener


async def three(stack: AsyncExitStack, root: Path) -> tuple[microsync.Group, ...]:
    return tuple(await family_of(stack, root, "Alice", "Carol", "Mallory"))


def dump(group: microsync.Group) -> bytes:
    return replica_of(group).store.dump()


# ---------------------------------------------------------------------- sans-IO sessions


async def test_both_sides_of_a_fork_learn_it_when_they_sync(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        m = evil.identity.device_id
        [a], [b] = versions(evil)
        k = evil.head()[0]
        assert alice.device.receive(alice.id, [a]) == 1
        assert carol.device.receive(carol.id, [b]) == 1
        assert "version A 0" in texts(alice) and "version B 0" in texts(carol)
        heard = [await listening(stack, g) for g in (alice, carol)]

        link = sync_pair(DeviceHost(alice.device), DeviceHost(carol.device))

        assert link.a.error is None and link.b.error is None and link.a.synced
        for side in ("a", "b"):
            sent = kinds(link.sent_by(side))
            assert "Conflict" in sent and "ForkEvidenceMessage" in sent
        pair = frozenset((a[0], b[0]))
        for group, listener in zip((alice, carol), heard, strict=True):
            assert forked_at(group, m) == k
            assert evidence(group, m) == {pair}
            assert not {"version A 0", "version B 0"} & texts(group)  # not shown any more
            assert await listener.forks() == [DeviceForked(device=m, seq=k)]
        # the event names the forked device's owner
        [event] = [e for e in heard[0].seen if e.kind == "device_forked"]
        assert event.person == mallory.device.person_id
        # nothing of Mallory's from the fork on is accepted any more
        later = evil.append_content(APP_TYPE, post_op("after the fork"), hlc=hlc())
        for group in (alice, carol):
            before = dump(group)
            assert group.device.receive(group.id, [(later.wire, stored_body(evil, later))]) == 0
            assert dump(group) == before
        # and the next session between them is one round trip again
        again = sync_pair(DeviceHost(carol.device), DeviceHost(alice.device))
        assert kinds(again.sent_by("a")) == ["Hello", "Match", "Digest"]
        assert kinds(again.sent_by("b")) == ["Hello", "Match", "Digest"]


async def test_a_fork_far_behind_both_heads_is_traced_back_to_where_it_began(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        m = evil.identity.device_id
        k = evil.head()[0] + 1
        a, b = versions(evil, run=40)  # two chains of 40 from k: more than two Conflicts' worth
        assert alice.device.receive(alice.id, a) == 40
        assert carol.device.receive(carol.id, b) == 40
        link = sync_pair(DeviceHost(alice.device), DeviceHost(carol.device))
        assert link.a.error is None and link.b.error is None
        assert sum(isinstance(msg, Conflict) for _, msg in link.log) >= 3  # walked back
        for group in (alice, carol):
            assert forked_at(group, m) == k
            assert evidence(group, m) >= {frozenset((a[0][0], b[0][0]))}
            assert not any(t and t.startswith("version") for t in texts(group))


async def test_a_device_that_holds_neither_version_learns_the_fork_by_gossip(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory, bob = await family_of(
            stack, tmp_path, "Alice", "Carol", "Mallory", "Bob"
        )
        evil = Hostile.of_group(mallory)
        m = evil.identity.device_id
        [a], [b] = versions(evil)
        k = evil.head()[0]
        alice.device.receive(alice.id, [a])
        carol.device.receive(carol.id, [b])
        sync_pair(DeviceHost(alice.device), DeviceHost(carol.device))
        heard = await listening(stack, bob)

        link = sync_pair(DeviceHost(bob.device), DeviceHost(alice.device))

        assert [type(msg).__name__ for msg in link.sent_by("b")].count("ForkEvidenceMessage") == 1
        assert forked_at(bob, m) == k and evidence(bob, m) == {frozenset((a[0], b[0]))}
        assert await heard.forks() == [DeviceForked(device=m, seq=k)]
        # Mallory's own device learns it too, and can no longer write to the group
        sync_pair(DeviceHost(mallory.device), DeviceHost(carol.device))
        assert forked_at(mallory, m) == k
        with pytest.raises(ForkedFeed):
            await mallory.post("still here?")


async def test_a_fork_known_on_one_side_only_keeps_sync_to_one_round_trip_afterwards(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        [a], [b] = versions(evil)
        alice.device.receive(alice.id, [a])
        alice.device.receive(alice.id, [b])  # Alice holds both: she finds the fork herself
        m = evil.identity.device_id
        assert forked_at(alice, m) == evil.head()[0]
        link = sync_pair(DeviceHost(carol.device), DeviceHost(alice.device))
        assert forked_at(carol, m) == forked_at(alice, m)
        assert link.b.stats.entries_sent == 0  # nothing of the forked feed from the fork on
        again = sync_pair(DeviceHost(carol.device), DeviceHost(alice.device))
        assert kinds(again.sent_by("a")) == ["Hello", "Match", "Digest"]


# ---------------------------------------------------------------------- bad evidence


def forged(
    alice: microsync.Group, carol: microsync.Group, message: Message
) -> tuple[bytes, bytes, Exception | None]:
    """Deliver ``message`` from Carol's side to Alice's session once both are live."""
    link = connect(DeviceHost(alice.device), DeviceHost(carol.device))
    pump(link)
    before = dump(alice)
    link.to_a.append(encode_message(message))
    deliver(link, "b")
    return before, dump(alice), link.a.error


def flip_signature(wire: bytes) -> bytes:
    return wire[:-1] + bytes([wire[-1] ^ 1])


@pytest.mark.parametrize(
    "case",
    ["bad signature", "two positions", "two devices", "conflict unchained", "conflict forged"],
)
async def test_evidence_that_proves_nothing_is_refused_and_changes_nothing(
    tmp_path: Path, case: str
) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        [a], [b] = versions(evil)
        [a2], _ = versions(evil)
        [c], _ = versions(Hostile.of_group(carol))
        g = GroupId(alice.id)
        message: Message = {
            "bad signature": ForkEvidenceMessage(group=g, first=a[0], second=flip_signature(b[0])),
            "two positions": ForkEvidenceMessage(group=g, first=a[0], second=a2[0]),
            "two devices": ForkEvidenceMessage(group=g, first=a[0], second=c[0]),
            "conflict unchained": Conflict(group=g, entries=(a2[0], b[0], a[0])),
            "conflict forged": Conflict(group=g, entries=(flip_signature(b[0]),)),
        }[case]
        alice.device.receive(alice.id, [a])  # Alice holds version A: a conflict may touch it
        before, after, error = forged(alice, carol, message)
        assert isinstance(error, RemoteProtocolError)
        assert after == before
        assert forked_at(alice, evil.identity.device_id) is None


async def test_a_fork_of_a_device_nobody_certified_is_ignored(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        eve = Hostile.of_group(mallory).as_device(Hostile.of_group(mallory).forge_identity("Eve"))
        [a], [b] = versions(eve)
        message = ForkEvidenceMessage(group=GroupId(alice.id), first=a[0], second=b[0])
        before, after, error = forged(alice, carol, message)
        assert error is None and after == before  # nothing to mark: the session goes on


# ---------------------------------------------------------------------- stale views


class PartialHost(DeviceHost):
    """A keeper that holds everything but serves only the first ``cut`` entries of one feed."""

    def __init__(self, device: microsync.Device, feed: DeviceId, cut: int) -> None:
        super().__init__(device)
        self.feed, self.cut = feed, cut

    def frontier(self, group: GroupId) -> dict[DeviceId, tuple[int, bytes]]:  # type: ignore[override]
        heads = dict(super().frontier(group))
        stored = store_of(self.device).entry_at(group, self.feed, self.cut)
        assert stored is not None
        heads[self.feed] = (self.cut, stored.entry.id)
        return heads  # type: ignore[return-value]

    def entries_after(
        self, group: GroupId, frontier: Mapping[DeviceId, int], *, newest_first: bool, limit: int
    ) -> list[Item]:
        found = super().entries_after(group, frontier, newest_first=newest_first, limit=limit)
        return [i for i in found if not self._beyond(i[0])]

    def _beyond(self, wire: bytes) -> bool:
        from microsync.feed.entry import feed_position

        device, seq = feed_position(wire[:-64])
        return device == self.feed and seq > self.cut


async def test_a_peer_serving_a_partial_view_shows_as_stale(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, keeper = await family_of(stack, tmp_path, "Alice", "Carol", "Keeper")
        for i in range(10):
            await carol.post(f"post {i}")
        sync_pair(DeviceHost(carol.device), DeviceHost(alice.device))
        sync_pair(DeviceHost(carol.device), DeviceHost(keeper.device))
        feed = carol.device.id
        head = replica_of(alice).store.feed_status(alice.id, feed).head_seq
        honest = sync_pair(DeviceHost(alice.device), DeviceHost(keeper.device))
        assert honest.a.stats.stale == {}
        partial = sync_pair(
            DeviceHost(alice.device), PartialHost(keeper.device, feed, cut=head - 6)
        )
        assert partial.a.stats.stale == {feed: (head - 6, head)}
        assert partial.a.error is None and partial.a.stats.forks_learnt == 0


# ---------------------------------------------------------------------- over TCP


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_fork_is_caught_between_real_devices_over_tcp(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory, bob = await family_of(
            stack, tmp_path, "Alice", "Carol", "Mallory", "Bob"
        )
        evil = Hostile.of_group(mallory)
        m = evil.identity.device_id
        for device in (mallory.device, alice.device):
            await device.start(lan=False, port=0)
            stack.push_async_callback(device.stop)
        alice_at = f"127.0.0.1:{alice.device.port}"
        await bob.device.start(lan=False, port=None, peers=(alice_at,))  # live with Alice
        stack.push_async_callback(bob.device.stop)
        await eventually(lambda: any(p.synced for p in bob.device.peers()))
        [a], [b] = versions(evil)  # version A in Mallory's own feed ...
        k = evil.head()[0]
        await alice.device.sync_with("127.0.0.1", mallory.device.port or 0)
        assert "version A 0" in texts(alice)
        assert carol.device.receive(carol.id, [b]) == 1  # ... version B handed to Carol
        heard = [await listening(stack, g) for g in (alice, carol, bob)]

        await carol.device.sync_with("127.0.0.1", alice.device.port or 0)

        # Bob, connected live to Alice, is passed the evidence as soon as she has it
        await eventually(lambda: forked_at(bob, m) == k)
        for group, listener in zip((alice, carol, bob), heard, strict=True):
            assert forked_at(group, m) == k
            assert evidence(group, m) == {frozenset((a[0], b[0]))}
            assert not {"version A 0", "version B 0"} & texts(group)
            assert await listener.forks() == [DeviceForked(device=m, seq=k)]
        # Mallory's feed from the fork on is refused when it is offered again
        later = evil.append_content(APP_TYPE, post_op("after the fork"), hlc=hlc())
        await alice.device.sync_with("127.0.0.1", mallory.device.port or 0)
        assert forked_at(mallory, m) == k  # Mallory was told
        assert replica_of(alice).store.entry_at(alice.id, m, later.header.seq) is None


async def test_a_peer_sending_conflict_after_conflict_is_cut_off(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        [a], _ = versions(Hostile.of_group(mallory))
        alice.device.receive(alice.id, [a])
        link = connect(
            DeviceHost(alice.device),
            DeviceHost(carol.device),
            options_a=SyncOptions(max_conflicts=2),
        )
        pump(link)
        before = dump(alice)
        for _ in range(3):  # Alice's own version back at her: nothing to learn, but work
            link.to_a.append(encode_message(Conflict(group=GroupId(alice.id), entries=(a[0],))))
            deliver(link, "b")
        assert isinstance(link.a.error, RemoteProtocolError) and link.a.closed
        assert dump(alice) == before


async def test_a_fork_stays_known_and_hidden_after_a_restart(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        [a], [b] = versions(evil)
        alice.device.receive(alice.id, [a])
        carol.device.receive(carol.id, [b])
        texts(alice)  # the view is loaded, so closing saves a snapshot of it
        sync_pair(DeviceHost(alice.device), DeviceHost(carol.device))
        await alice.device.close()
        again = await stack.enter_async_context(
            await microsync.Device.open(tmp_path / "Alice", name="Alice")
        )
        group = again.group(alice.id)
        heard = await listening(stack, group)
        assert forked_at(group, evil.identity.device_id) == evil.head()[0]
        assert not {"version A 0", "version B 0"} & texts(group)
        sync_pair(DeviceHost(again), DeviceHost(carol.device))
        assert await heard.forks() == []  # known already: no second event


async def test_a_one_shot_sync_waits_for_the_answer_to_its_conflict(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, carol, mallory = await three(stack, tmp_path)
        evil = Hostile.of_group(mallory)
        m = evil.identity.device_id
        a, b = versions(evil, run=4)
        alice.device.receive(alice.id, a)  # Alice is ahead: only she can compare ...
        carol.device.receive(carol.id, b[:1])
        link = connect(DeviceHost(alice.device), DeviceHost(carol.device))
        while not link.a.synced:  # ... and she stops the moment she is synced (sync_with)
            assert link.to_a or link.to_b, "nothing in flight, and not synced"
            if link.to_b and not link.a.synced:
                deliver(link, "a")
            if link.to_a:
                deliver(link, "b")
        k = evil.head()[0] - 3
        assert forked_at(alice, m) == k and forked_at(carol, m) == k
        assert evidence(alice, m) == evidence(carol, m) == {frozenset((a[0][0], b[0][0]))}
