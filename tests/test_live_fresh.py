"""The live push of this device's own new entries without the store (issue 19, fourth pass):
the runtime's after-commit hook (``Runtime.written``) hands the entry's bytes to the sessions,
which push them as they are when they are exactly what the peer lacks
(``Reconcile.push_fresh``), and otherwise ask the host as before. Also the two costs that grew
with the history: the header fast path now reads up to ``MAX_DEPS`` deps, and ``deps_for``
picks the smallest heads without sorting them all."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import microsync
from microsync.app.ops import PostOp
from microsync.app.timeline import deps_for
from microsync.errors import StorageError
from microsync.feed import GroupId
from microsync.feed.entry import MAX_DEPS, EntryId, Header, _parse_fast, parse_entry
from microsync.identity import DeviceId
from microsync.node.runtime import Runtime
from microsync.protocol.messages import Entries, Item
from microsync.storage.sqlite import SqliteStore
from tests.sync_helpers import DeviceHost, close_all, family, open_devices, pump, run, sync_pair


class StoreCountingHost(DeviceHost):
    """Counts how often the session asks the host for entries, frontiers or fork points."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def entries_after(self, *args: Any, **kwargs: Any) -> list[Item]:
        self.asked += 1
        return super().entries_after(*args, **kwargs)

    def fork_evidence(self, group: GroupId) -> list[tuple[DeviceId, int, bytes, bytes]]:
        self.asked += 1
        return super().fork_evidence(group)


def newest_items(device: microsync.Device, group: GroupId, count: int) -> list[Item]:
    """The last ``count`` entries of ``device``'s own feed, as (wire, body)."""
    mine = [(w, b) for w, b in device.entries_after(group) if device_of(w) == device.id]
    return mine[-count:]


def device_of(wire: bytes) -> DeviceId:
    return parse_entry(wire).header.device


def entries_sent(link: Any, side: str) -> list[bytes]:
    return [w for m in link.sent_by(side) if isinstance(m, Entries) for w, _ in m.items]


@contextmanager
def linked(tmp_path: Path, *names: str) -> Iterator[tuple[GroupId, StoreCountingHost, Any, Any]]:
    """``names``' devices in one family, the first two in a sync session over an in-memory
    link: (group, the first's counting host, the second's, the link); all closed after."""
    devices = open_devices(tmp_path, *names)
    try:
        group = family(devices)
        alice, bob = StoreCountingHost(devices[0]), StoreCountingHost(devices[1])
        yield group, alice, bob, sync_pair(alice, bob)
    finally:
        close_all(devices)


# ---------------------------------------------------------------------- the session


def test_a_fresh_entry_is_pushed_without_asking_the_host_and_once(tmp_path: Path) -> None:
    with linked(tmp_path, "Alice", "Bob") as (group, alice, bob, link):
        for text in ("one", "two"):
            run(alice.device.group(group).post(text))
            [item] = newest_items(alice.device, group, 1)
            alice.asked = 0
            link.queue("a", link.a.local_update(group, fresh=[item]))
            assert alice.asked == 0  # no entries, no fork points: the item as it was handed
            pump(link)
        again = link.a.local_update(group, fresh=[item])  # the peer holds it now
        link.queue("a", again)
        pump(link)
        wires = entries_sent(link, "a")
        assert wires.count(item[0]) == 1  # pushed once, not again on the repeat
        assert {p.text for p in bob.device.group(group).feed()} >= {"one", "two"}


def test_a_fresh_entry_behind_a_gap_takes_the_general_path(tmp_path: Path) -> None:
    with linked(tmp_path, "Alice", "Bob") as (group, alice, bob, link):
        run(alice.device.group(group).post("first"))  # never pushed: no update for it
        run(alice.device.group(group).post("second"))
        first, second = newest_items(alice.device, group, 2)
        alice.asked = 0
        link.queue("a", link.a.local_update(group, fresh=[second]))
        pump(link)
        assert alice.asked > 0  # the peer lacked more than the item: the host was asked
        wires = entries_sent(link, "a")
        assert wires.index(first[0]) < wires.index(second[0])  # in feed order, each once
        assert wires.count(first[0]) == wires.count(second[0]) == 1
        assert [p.text for p in bob.device.group(group).feed()][:2] == ["second", "first"]


def test_a_fresh_entry_is_not_pushed_to_a_peer_no_longer_served(tmp_path: Path) -> None:
    with linked(tmp_path, "Alice", "Bob", "Carol") as (group, alice, bob, link):
        run(alice.device.group(group).remove(bob.device.person_id))
        run(alice.device.group(group).post("after the removal"))
        [item] = newest_items(alice.device, group, 1)
        link.queue("a", link.a.local_update(group, fresh=[item]))
        pump(link)
        assert item[0] not in entries_sent(link, "a")  # may_serve asked as on every push


# ---------------------------------------------------------------------- the runtime


async def live_pair(root: Path) -> tuple[microsync.Device, microsync.Device, GroupId]:
    """Two started devices of one group, connected and in sync."""
    alice = await microsync.Device.open(root / "alice", name="Alice")
    bob = await microsync.Device.open(root / "bob", name="Bob")
    group = await alice.create_group("Family")
    invite = await group.invite(ttl=3600)
    await alice.start(lan=False, port=0)
    await bob.join(invite.link, at=f"127.0.0.1:{alice.port}")
    await bob.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.port}",))
    await until(lambda: any(p.synced for p in bob.peers()))
    return alice, bob, group.id


async def until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def first_post(group: microsync.Group, text: str) -> None:
    async for event in group.events():
        if event.kind == "post" and event.post is not None and event.post.text == text:
            return


def test_a_live_post_reaches_the_peer_without_the_author_reading_its_store(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[str], list[int], int]:
        bob, alice, group = await live_pair(tmp_path)  # alice joined and dialled bob
        statements: list[str] = []
        handed: list[int] = []
        original = Runtime.written

        def written(runtime: Runtime, group_id: GroupId, item: Item) -> None:
            handed.append(len(item[0]))
            original(runtime, group_id, item)

        try:
            Runtime.written = written  # type: ignore[method-assign]
            for i in range(5):
                arrived = asyncio.create_task(first_post(bob.group(group), f"live {i}"))
                await asyncio.sleep(0.01)  # the listener is there before the post
                await alice.group(group).post(f"live {i}")
                if i > 0:  # the first push of a session offers the certificates (a read)
                    alice._store._db.set_trace_callback(statements.append)
                await asyncio.wait_for(arrived, 10)
                alice._store._db.set_trace_callback(None)
        finally:
            Runtime.written = original  # type: ignore[method-assign]
        received = [w for w, _ in bob.entries_after(group) if device_of(w) == alice.id]
        await alice.close()
        await bob.close()
        return statements, handed, len(received)

    statements, handed, received = asyncio.run(main())
    reads = [s for s in statements if "entries" in s or "feeds" in s]
    assert reads == []  # from post() returning to the peer's event: no entry or feed read
    assert len(handed) == 5 and received >= 5


def test_the_hook_runs_after_the_commit_and_a_failed_commit_pushes_nothing(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[int], list[str]]:
        bob, alice, group = await live_pair(tmp_path)
        seen: list[int] = []
        original = Runtime.written
        database = alice._store.directory / "profile.db"

        def written(runtime: Runtime, group_id: GroupId, item: Item) -> None:
            # another connection sees only committed rows: the entry must be one by now
            with sqlite3.connect(database) as other:
                found = other.execute(
                    "SELECT count(*) FROM entries WHERE wire = ?", (item[0],)
                ).fetchone()
            seen.append(found[0])
            original(runtime, group_id, item)

        commit = SqliteStore._commit
        failing = {"once": True}

        def commit_or_fail(store: SqliteStore) -> None:
            if store is alice._store and failing.pop("once", False):
                store._rollback()  # as a COMMIT that fails does
                raise StorageError("disk full (test)")
            commit(store)

        try:
            Runtime.written = written  # type: ignore[method-assign]
            SqliteStore._commit = commit_or_fail  # type: ignore[method-assign]
            with pytest.raises(StorageError):
                await alice.group(group).post("lost")
            await asyncio.sleep(0.05)  # the push it scheduled finds nothing new
            arrived = asyncio.create_task(first_post(bob.group(group), "kept"))
            await asyncio.sleep(0.01)
            await alice.group(group).post("kept")
            await asyncio.wait_for(arrived, 10)
        finally:
            Runtime.written = original  # type: ignore[method-assign]
            SqliteStore._commit = commit  # type: ignore[method-assign]
        texts = [p.text for p in bob.group(group).feed()]
        await alice.close()
        await bob.close()
        return seen, texts

    seen, texts = asyncio.run(main())
    assert seen == [1]  # called once, for the post that committed, and after its commit
    assert "kept" in texts and "lost" not in texts


# ---------------------------------------------------------------------- what grew


def header_with(deps: list[bytes]) -> Header:
    return Header(
        group=GroupId(b"g" * 32),
        device=DeviceId(b"d" * 32),
        seq=70_000,
        prev=EntryId(b"p" * 32),
        epoch=3,
        type=2,
        hlc=1_764_700_000_000,
        deps=tuple(EntryId(d) for d in deps),
        body_hash=b"h" * 32,
        body_len=300,
    )


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=24, max_size=MAX_DEPS))
def test_the_fast_path_reads_headers_with_24_to_max_deps(deps: list[bytes]) -> None:
    header = header_with(deps)
    data = header.to_bytes()
    assert _parse_fast(data) == header == Header._from_bytes_strict(data)


def test_the_fast_path_declines_what_it_must_not_read() -> None:
    data = header_with([bytes([i]) * 32 for i in range(30)]).to_bytes()
    at = data.index(bytes([0x98, 30]))
    non_minimal = data[:at] + bytes([0x98, 5]) + data[at + 2 :]  # 5 items with a long head
    assert _parse_fast(non_minimal) is None
    with pytest.raises(microsync.errors.DecodeError):
        Header.from_bytes(non_minimal)
    too_many = header_with([bytes([i]) * 32 for i in range(MAX_DEPS + 1)]).to_bytes()
    assert _parse_fast(too_many) is None
    with pytest.raises(microsync.errors.DecodeError):
        Header.from_bytes(too_many)
    broken = bytearray(data)
    broken[at + 2 + 34 * 7] = 0x57  # the 8th dep is 23 bytes long: the strict decoder decides
    assert _parse_fast(bytes(broken)) is None


@given(
    st.sets(st.binary(min_size=32, max_size=32), max_size=200),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)
def test_deps_for_picks_what_sorting_every_head_picked(
    heads: set[bytes], named: list[bytes]
) -> None:
    op = PostOp(text="x", reply_to=named[0]) if named else PostOp(text="x")
    ids = {EntryId(h) for h in heads}
    if named:
        ids.add(EntryId(named[0]))  # what it answers may be a head too
    needed = sorted({EntryId(i) for i in ([named[0]] if named else [])})
    rest = sorted(ids - set(needed))
    assert deps_for(op, ids) == tuple(needed + rest[: MAX_DEPS - len(needed)])
