"""The keeper's store at speed: pushes committed in groups on a writer thread (one transaction,
one fsync, for pushes from many connections), the event loop free meanwhile, each push still
all or none, and SIGTERM closing a ``microsync keeper`` cleanly."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microsync.errors import StorageError
from microsync.net.keeper import KeeperServer
from microsync.net.keeper_client import KeeperClient
from microsync.storage.keeper_schema import KEEPER_MIGRATIONS, KEEPER_SCHEMA_VERSION
from microsync.storage.keeper_store import (
    DATABASE_NAME,
    Cursors,
    KeeperFull,
    KeeperStore,
    MailboxFull,
    Push,
    Usage,
)
from microsync.storage.keeper_writer import KeeperWriter
from tests.keeper_helpers import start_keeper
from tests.test_keeper import box, pull_all, records

A, B = b"a" * 32, b"b" * 32


def item(n: int) -> bytes:
    return n.to_bytes(32, "big")


# --- put_many: one transaction, each push all or none ---------------------------------------


pushes = st.lists(
    st.tuples(
        st.sampled_from([A, B]),
        st.lists(st.tuples(st.integers(0, 12).map(item), st.binary(max_size=40)), max_size=8),
        st.integers(0, 10),
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(pushes, st.integers(60, 400))
def test_pushes_in_one_transaction_answer_as_one_at_a_time(group: list[Push], quota: int) -> None:
    """A law: ``put_many`` gives every push the answer (cursors, duplicates, or refusal) that
    pushing them one by one gives, and leaves the same rows."""
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        alone = KeeperStore(Path(one), mailbox_quota=quota)
        together = KeeperStore(Path(many), mailbox_quota=quota)
        try:
            expected: list[Cursors | type[MailboxFull]] = []
            for mailbox, items, now in group:
                try:
                    expected.append(alone.put(mailbox, items, now))
                except MailboxFull:
                    expected.append(MailboxFull)
            got = [
                r if not isinstance(r, MailboxFull) else MailboxFull
                for r in together.put_many(group)
            ]
            assert got == expected
            for mailbox in (A, B):
                assert together.page(mailbox) == alone.page(mailbox)
                assert together.usage(mailbox) == alone.usage(mailbox)
        finally:
            alone.close()
            together.close()


def test_a_full_keeper_refuses_the_push_that_does_not_fit_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """The disk fills in the middle of a group: the group is retried push by push, so the
    small pushes land and only the one too big is refused, and nothing else changes."""
    store = KeeperStore(tmp_path, max_bytes=256 * 1024)
    try:
        big = [(item(n), bytes(1000) + item(n)) for n in range(400)]
        small = [(item(1000 + n), b"s") for n in range(3)]
        results = store.put_many([(A, small[:1], 1), (B, big, 1), (A, small[1:], 2)])
        assert results[0] == [(1, False)]
        assert isinstance(results[1], KeeperFull)
        assert results[2] == [(2, False), (3, False)]
        assert store.usage(B).items == 0 and store.usage(A).items == 3
    finally:
        store.close()


def test_a_purge_a_reader_kept_from_the_log_is_finished_by_the_next_delete_or_expiry(
    tmp_path: Path,
) -> None:
    """A reader on an older snapshot keeps the delete's checkpoint from truncating the WAL
    (past the busy timeout): the purged bytes are still in the log, so the store remembers
    and the next delete or expiry, even one that removes nothing, checkpoints again."""
    canary = b"purge me, canary " * 64

    def in_files() -> bool:
        return any(canary in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    for finish in ("delete", "expire"):
        for p in tmp_path.iterdir():
            p.unlink()
        store = KeeperStore(tmp_path)
        try:
            store.put(A, [(item(1), canary), (item(2), b"kept")], 1)
            store._db.execute("PRAGMA busy_timeout = 50")  # not 10 s, for the test
            reader = sqlite3.connect(tmp_path / DATABASE_NAME, isolation_level=None)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM items").fetchone()  # holds its snapshot
            assert store.delete(A, [item(1)]) == 1
            assert in_files()  # the reader's snapshot still needs the log
            reader.execute("COMMIT")
            reader.close()
            if finish == "delete":
                assert store.delete(A, [item(1)]) == 0  # nothing left to delete, yet
            else:
                assert store.expire(0) == 0  # nothing older than the epoch, yet
            assert not in_files()
        finally:
            store.close()


# --- the writer thread ----------------------------------------------------------------------


class SlowStore(KeeperStore):
    """A store whose commits take ``delay`` seconds (as a slow disk's fsync), counted."""

    delay = 0.2

    def put_many(self, pushes: list[Push]) -> list[Cursors | Exception]:  # type: ignore[override]
        threading.Event().wait(self.delay)
        return list(super().put_many(pushes))


async def test_pushes_queued_during_a_commit_share_the_next_one(tmp_path: Path) -> None:
    writer = await KeeperWriter.open(lambda: SlowStore(tmp_path))
    try:
        answers = await asyncio.gather(
            *(writer.put(A if n % 2 else B, [(item(n), b"x")], n) for n in range(40))
        )
        assert writer.commits <= 3  # the first alone, then everyone who queued meanwhile
        assert sorted(c for answer in answers for c, _ in answer) == sorted(list(range(1, 21)) * 2)
    finally:
        await writer.close()
    store = KeeperStore(tmp_path)
    try:
        assert store.usage().items == 40  # on disk, after the writer closed
    finally:
        store.close()


async def test_a_slow_commit_does_not_stop_the_event_loop_or_reads(tmp_path: Path) -> None:
    SlowStore.delay = 1.0
    try:
        writer = await KeeperWriter.open(lambda: SlowStore(tmp_path))
        reader = KeeperStore(tmp_path)
        try:
            await writer.put(A, [(item(1), b"one")], 1)
            pending = asyncio.ensure_future(writer.put(A, [(item(2), b"two")], 2))
            started = asyncio.get_running_loop().time()
            await asyncio.sleep(0.05)  # the loop runs while the commit sleeps
            assert [r.cursor for r in reader.page(A)] == [1]  # reads see the last commit
            assert asyncio.get_running_loop().time() - started < 0.9  # not the 1 s commit
            assert not pending.done()  # not acknowledged before it is committed
            assert await pending == [(2, False)]
            assert [r.cursor for r in reader.page(A)] == [1, 2]
        finally:
            reader.close()
            await writer.close()
    finally:
        SlowStore.delay = 0.2


async def test_a_keeper_serves_pulls_while_a_commit_is_on_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real server, with commits that take a second: a pull of what is stored
    completes while another connection's PUSH is being committed, and that PUSH is answered
    only after its commit."""
    family, first, second = box(), records(5, "a"), records(5, "b")
    monkeypatch.setattr("microsync.net.keeper.KeeperStore", SlowStore)
    monkeypatch.setattr(SlowStore, "delay", 1.0)
    async with KeeperServer(tmp_path / "k") as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with (
            await KeeperClient.connect(url) as writer,
            await KeeperClient.connect(url) as reader,
        ):
            await writer.push(family, first)
            pushing = asyncio.ensure_future(writer.push(family, second))
            await asyncio.sleep(0.1)  # the second PUSH is in the writer's commit now
            started = asyncio.get_running_loop().time()
            pulled = await pull_all(reader, family)
            assert asyncio.get_running_loop().time() - started < 0.8
            assert [p.data for p in pulled] == [r.data for r in first]
            assert not pushing.done()
            assert await pushing == list(range(6, 11))


async def test_refusals_and_failures_reach_only_their_own_push(tmp_path: Path) -> None:
    writer = await KeeperWriter.open(lambda: SlowStore(tmp_path, mailbox_quota=10))
    try:
        full, fits = await asyncio.gather(
            writer.put(A, [(item(1), bytes(11))], 1),
            writer.put(B, [(item(1), bytes(10))], 1),
            return_exceptions=True,
        )
        assert isinstance(full, MailboxFull) and fits == [(1, False)]
        with pytest.raises(ZeroDivisionError):
            await writer.run(lambda store: 1 // 0)
        assert await writer.run(lambda store: store.usage().items) == 1
    finally:
        await writer.close()
    with pytest.raises(RuntimeError):
        await writer.put(A, [], 1)  # closed


async def test_a_store_that_cannot_open_raises_from_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OSError):
        await KeeperWriter.open(lambda: KeeperStore(tmp_path / "file"))


async def test_giving_up_on_a_slow_open_leaves_no_thread_or_connection(tmp_path: Path) -> None:
    opened: list[KeeperStore] = []

    def slow_open() -> KeeperStore:
        threading.Event().wait(0.3)
        opened.append(KeeperStore(tmp_path))
        return opened[-1]

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(KeeperWriter.open(slow_open), 0.05)
    for _ in range(100):
        if not any(t.name == "keeper-writer" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.05)
    assert not any(t.name == "keeper-writer" for t in threading.enumerate())
    with pytest.raises(sqlite3.ProgrammingError):  # closed by the thread as it ended
        opened[0].usage()


async def test_twelve_connections_pushing_at_once_share_commits(tmp_path: Path) -> None:
    """Through the real server: 12 proved connections push 256 items each at once (4 PUSHes
    of 64, all in flight); every item is acknowledged and pulled back once, in fewer commits
    than the 48 PUSH messages (one commit per PUSH without group commit)."""
    family = box()
    parts = [records(256, f"c{n}-") for n in range(12)]
    async with KeeperServer(tmp_path / "k") as server:
        url = f"ws://127.0.0.1:{server.port}"
        clients = [await KeeperClient.connect(url) for _ in parts]
        try:
            for client in clients:
                await client.prove(family)
            done = await asyncio.gather(
                *(c.push(family, p) for c, p in zip(clients, parts, strict=True))
            )
            assert sorted(c for d in done for c in d) == list(range(1, 12 * 256 + 1))
            pulled = await pull_all(clients[0], family)
        finally:
            for client in clients:
                await client.close()
        assert len(pulled) == 12 * 256 == len({p.item for p in pulled})
        assert server.writer.commits <= 24  # 7-8 seen


# --- SIGTERM ---------------------------------------------------------------------------------


async def test_sigterm_closes_the_keeper_cleanly_and_keeps_everything(tmp_path: Path) -> None:
    """``kill`` (SIGTERM) ends ``microsync keeper`` as Ctrl-C does: status 0, its store closed
    (the WAL folded into the database and removed), every acknowledged item there after."""
    data, family, sent = tmp_path / "k", box(), records(200)
    running = start_keeper(data)
    try:
        async with await KeeperClient.connect(running.url) as client:
            assert await client.push(family, sent) == list(range(1, 201))
        assert (data / f"{DATABASE_NAME}-wal").exists()  # open, mid-life
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(10) == 0
    except subprocess.TimeoutExpired:  # pragma: no cover (the failure this test is for)
        pytest.fail("the keeper did not stop on SIGTERM")
    finally:
        running.kill()
    assert not (data / f"{DATABASE_NAME}-wal").exists()  # closed: nothing left in a log
    with sqlite3.connect(data / DATABASE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM items").fetchone() == (200,)
    again = start_keeper(data)
    try:
        async with await KeeperClient.connect(again.url) as client:
            got = await pull_all(client, family)
        assert [p.data for p in got] == [r.data for r in sent]
    finally:
        again.proc.send_signal(signal.SIGTERM)
        again.proc.wait(10)
        again.kill()


# --- schema v2: one b-tree and one index; the v1 migration -----------------------------------


def v1_database(directory: Path) -> None:
    """A keeper database as the first store wrote it (``user_version`` 0): two mailboxes,
    one of them emptied by a delete, ``stored_at`` not in cursor order."""
    directory.mkdir(parents=True)
    db = sqlite3.connect(directory / DATABASE_NAME, isolation_level=None)
    db.executescript(KEEPER_MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('keeper', ?)", (b"k" * 16,))
    db.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)",
        [
            (A, 1, item(1), 100, 3, b"one"),
            (A, 2, item(2), 90, 3, b"two"),  # the clock stepped back
            (A, 4, item(4), 300, 4, b"four"),  # 3 was deleted
        ],
    )
    db.executemany("INSERT INTO mailboxes VALUES (?, ?, ?, ?)", [(A, 5, 3, 10), (B, 8, 0, 0)])
    db.close()


def test_a_v1_database_is_migrated_with_every_item_cursor_and_count(tmp_path: Path) -> None:
    v1_database(tmp_path / "k")
    store = KeeperStore(tmp_path / "k")
    try:
        assert store.keeper_id == b"k" * 16
        assert [(r.cursor, r.item, r.size) for r in store.page(A)] == [
            (1, item(1), 3),
            (2, item(2), 3),
            (4, item(4), 4),
        ]
        assert store.payloads(A, [1, 2, 3, 4]) == {1: b"one", 2: b"two", 4: b"four"}
        assert store.usage(A) == store.usage() == Usage(mailboxes=1, items=3, bytes=10)
        assert store.put(A, [(item(2), b"again"), (item(5), b"five")], 400) == [
            (2, True),  # an old item is still a duplicate
            (5, False),  # the next cursor goes on from where v1 was
        ]
        assert store.put(B, [(item(1), b"b")], 400) == [(8, False)]  # never reused, either
        assert store.expire(older_than_ms=101) == 2  # 2 (at 90, after 1 at 100) is 100
        assert [r.cursor for r in store.page(A)] == [4, 5]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "k" / DATABASE_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (KEEPER_SCHEMA_VERSION,)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert tables == {"meta", "mailboxes", "items", "items_by_id"} | {
            name for name in tables if name.startswith("sqlite_autoindex_")
        }


def test_a_database_newer_than_this_code_is_refused(tmp_path: Path) -> None:
    KeeperStore(tmp_path).close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute(f"PRAGMA user_version = {KEEPER_SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer"):
        KeeperStore(tmp_path)


def test_cursors_from_a_client_never_reach_another_mailbox(tmp_path: Path) -> None:
    """Keys are ``n << 32 | cursor``: hostile bounds are clamped to the mailbox's own range,
    and one item id in two mailboxes is two items."""
    store = KeeperStore(tmp_path)
    try:
        store.put(A, [(item(1), b"a1"), (item(2), b"a2")], 1)
        assert store.put(B, [(item(1), b"b1")], 1) == [(1, False)]
        huge = (1 << 32) + 1
        for after, before in [(-5, 0), (0, huge), (0, -1), (-huge, huge), (huge, 0)]:
            for newest_first in (False, True):
                got = store.page(B, after=after, before=before, newest_first=newest_first)
                assert {r.item for r in got} <= {item(1)}, (after, before)
        assert store.payloads(B, [1, 2, -1, huge, 1 + (1 << 32)]) == {1: b"b1"}
        assert store.payloads(b"c" * 32, [1]) == {} and store.page(b"c" * 32) == []
        assert store.delete(B, [item(2), item(1), item(1)]) == 1
        assert store.payloads(A, [1, 2]) == {1: b"a1", 2: b"a2"}
    finally:
        store.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([A, B]), st.integers(0, 30), st.integers(0, 100)),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 101),
)
def test_expiry_purges_exactly_what_is_older_whatever_the_clock_did(
    puts: list[tuple[bytes, int, int]], cutoff: int
) -> None:
    """However ``now`` jumped about between pushes, expiry leaves no row stored before the
    cutoff and every row stored at or after it, and the counts agree with the rows."""
    with tempfile.TemporaryDirectory() as directory:
        store = KeeperStore(Path(directory))
        try:
            for mailbox, name, now in puts:
                store.put(mailbox, [(item(name), bytes(name + 1))], now)
            db = sqlite3.connect(Path(directory) / DATABASE_NAME)
            before = db.execute("SELECT stored_at >= ?, COUNT(*) FROM items GROUP BY 1", (cutoff,))
            counts = dict(before.fetchall())
            assert store.expire(cutoff) == counts.get(0, 0)
            assert db.execute(
                "SELECT COUNT(*) FROM items WHERE stored_at < ?", (cutoff,)
            ).fetchone() == (0,)
            assert db.execute("SELECT COUNT(*), TOTAL(size) FROM items").fetchone() == (
                store.usage().items,
                store.usage().bytes,
            )
            assert store.usage().items == counts.get(1, 0)
            db.close()
        finally:
            store.close()
