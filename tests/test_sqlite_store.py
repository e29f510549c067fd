"""What only the SQLite adapter has: files, migrations, the profile lock, disk failures.

The shared behaviour is in ``test_storage_contract.py``. Here the store is observed from the
outside where possible: a second plain ``sqlite3`` connection reads the file, and child
processes (``sys.executable``) hold or try the profile lock.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from microsync.errors import ProfileInUse, StorageError
from microsync.feed import Entry, GroupId, Header, body_hash, sign_entry
from microsync.identity import DeviceRevocation
from microsync.storage import SqliteStore
from microsync.storage.migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from tests.conftest import make_identity

GROUP = GroupId(b"S" * 32)
ALICE = make_identity("alice")
REPO = Path(__file__).resolve().parents[1]


def entries(count: int, body_size: int = 16) -> list[tuple[Entry, bytes]]:
    """``count`` linked entries of ALICE with bodies of ``body_size`` bytes."""
    made: list[tuple[Entry, bytes]] = []
    prev = None
    for seq in range(1, count + 1):
        body = seq.to_bytes(4, "big") * (body_size // 4)
        header = Header(
            group=GROUP, device=ALICE.device_id, seq=seq, prev=prev, epoch=0, type=1, hlc=seq,
            deps=(), body_hash=body_hash(body), body_len=len(body),
        )  # fmt: skip
        made.append((sign_entry(ALICE.device_key, header), body))
        prev = made[-1][0].id
    return made


def populate(store: SqliteStore) -> None:
    store.put_meta("identity", ALICE.to_bytes())
    store.put_certificate(ALICE.certificate)
    for entry, body in entries(3):
        store.insert_entry(entry, body)


def read_only(profile: Path) -> sqlite3.Connection:
    """A plain connection to the profile's database, beside the store."""
    return sqlite3.connect(f"file:{profile / 'profile.db'}?mode=ro", uri=True)


# --- files and schema ---------------------------------------------------------------------


def test_content_survives_close_and_reopen(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "a" / "nested" / "profile")
    populate(store)
    before = store.dump()
    store.close()
    store = SqliteStore.open(tmp_path / "a" / "nested" / "profile")
    assert store.dump() == before
    assert store.get_meta("identity") == ALICE.to_bytes()
    assert store.feed_status(GROUP, ALICE.device_id).head_seq == 3
    store.close()


def test_a_write_outside_a_transaction_is_committed_on_return(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        store.put_meta("k", b"v")
        with closing(read_only(tmp_path)) as reader:
            assert reader.execute("SELECT value FROM meta").fetchall() == [(b"v",)]
    finally:
        store.close()


def test_an_inner_block_commits_only_when_the_outer_one_does(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        with closing(read_only(tmp_path)) as reader:
            with store.transaction():
                with store.transaction():
                    store.put_meta("k", b"v")
                assert reader.execute("SELECT count(*) FROM meta").fetchone() == (0,)
            assert reader.execute("SELECT count(*) FROM meta").fetchone() == (1,)
    finally:
        store.close()


def test_closing_inside_a_transaction_commits_nothing(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    with pytest.raises(StorageError, match="closed"), store.transaction():
        store.put_meta("k", b"v")
        store.close()
    store = SqliteStore.open(tmp_path)
    try:
        assert store.get_meta("k") is None
    finally:
        store.close()


def test_the_database_is_in_wal_mode_with_foreign_keys_enforced(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        store.put_meta("k", b"v")
        assert (tmp_path / "profile.db-wal").exists()
        with closing(read_only(tmp_path)) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert ALICE.person_key is not None
        orphan = DeviceRevocation.issue(ALICE.person_key, ALICE.device_id, 0)
        with pytest.raises(StorageError, match="FOREIGN KEY"):
            store.put_revocation(orphan)  # revocations reference certificates
    finally:
        store.close()


def test_migrations_record_the_schema_version(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    SqliteStore.open(tmp_path).close()  # a second open applies nothing and keeps the version
    with closing(read_only(tmp_path)) as reader:
        assert reader.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master")}
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1
    expected = {"meta", "certificates", "revocations", "feeds", "entries", "pending", "forks"}
    assert expected <= tables
    assert "bodies" not in tables  # since version 2, a body is a column of its entry's row


def test_version_2_moves_every_body_into_its_entry_row_and_keeps_what_was_purged(
    tmp_path: Path,
) -> None:
    """A profile written at schema version 1 (bodies in their own table) opens at version 2
    with the same entries, the same bodies, and purged bodies still purged."""
    made = entries(4)
    with closing(sqlite3.connect(tmp_path / "profile.db", isolation_level=None)) as db:
        migrate(db, MIGRATIONS[:1])
        for entry, body in made:
            h = entry.header
            db.execute(
                "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
                (h.group, h.device, h.seq, entry.id, entry.wire),
            )
            if h.seq != 2:  # the second one's body was purged
                db.execute("INSERT INTO bodies VALUES (?, ?)", (entry.id, body))
        db.execute(
            "INSERT INTO feeds VALUES (?, ?, 4, ?, NULL)", (GROUP, ALICE.device_id, made[-1][0].id)
        )
    store = SqliteStore.open(tmp_path)
    try:
        stored = [(s.entry.wire, s.body) for s in store.entries(GROUP, ALICE.device_id)]
        assert stored == [(e.wire, None if e.header.seq == 2 else b) for e, b in made]
        store.delete_body(made[0][0].id)
        assert store.entry_at(GROUP, ALICE.device_id, 1) is not None
        assert store.entry_at(GROUP, ALICE.device_id, 1).body is None  # type: ignore[union-attr]
    finally:
        store.close()
    with closing(read_only(tmp_path)) as reader:
        assert reader.execute("PRAGMA user_version").fetchone() == (2,)


def test_each_migration_applies_whole_or_not_at_all(tmp_path: Path) -> None:
    steps = ["CREATE TABLE one (x);", "CREATE TABLE two (x); INSERT INTO missing VALUES (1);"]
    with closing(sqlite3.connect(tmp_path / "m.db", isolation_level=None)) as db:
        with pytest.raises(sqlite3.OperationalError, match="missing"):
            migrate(db, steps)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert tables == {"one"}
        assert not db.in_transaction
        migrate(db, [steps[0], "CREATE TABLE two (x);"])
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        with pytest.raises(StorageError, match="newer"):
            migrate(db, steps[:1])


def test_a_newer_schema_is_refused_and_the_lock_released(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    with closing(sqlite3.connect(tmp_path / "profile.db")) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="newer") as refused:
        SqliteStore.open(tmp_path)
    assert not isinstance(refused.value, ProfileInUse)
    with closing(sqlite3.connect(tmp_path / "profile.db")) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    SqliteStore.open(tmp_path).close()


@pytest.mark.parametrize(
    "garbage", [b"this is not a database\n" * 200, os.urandom(8192)], ids=["text", "random"]
)
def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "profile.db").write_bytes(garbage)
    with pytest.raises(StorageError, match="not a database"):
        SqliteStore.open(tmp_path)
    (tmp_path / "profile.db").unlink()
    SqliteStore.open(tmp_path).close()  # the failed open let go of the lock


def test_an_unknown_synchronous_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore.open(tmp_path, synchronous="FULL; DROP TABLE meta")
    SqliteStore.open(tmp_path, synchronous="NORMAL").close()


# --- the profile lock ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from microsync.errors import ProfileInUse
    from microsync.storage import SqliteStore

    try:
        store = SqliteStore.open(sys.argv[1])
    except ProfileInUse:
        print("in use", flush=True)
        sys.exit(0)
    print("open", flush=True)
    sys.stdin.read()  # hold the profile until the parent closes stdin or kills us
    store.close()
    """
)


@contextmanager
def child_opening(profile: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run a process that opens ``profile``; yields it and its first line of output."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(profile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None
        yield child, child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait(timeout=10)


def test_a_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        with pytest.raises(ProfileInUse, match=str(tmp_path)):
            SqliteStore.open(tmp_path)
        store.put_meta("still", b"usable")  # the refused open took nothing from the first
        with child_opening(tmp_path) as (_, line):
            assert line == "in use"
    finally:
        store.close()


def test_close_releases_the_lock(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    store.close()
    store.close()
    with child_opening(tmp_path) as (_, line):
        assert line == "open"


def test_another_process_holding_the_profile_blocks_us_until_it_dies(tmp_path: Path) -> None:
    with child_opening(tmp_path) as (child, line):
        assert line == "open"
        with pytest.raises(ProfileInUse, match=str(tmp_path)):
            SqliteStore.open(tmp_path)
        child.kill()  # SIGKILL: no close(), the kernel drops the lock
        child.wait(timeout=10)
        store = SqliteStore.open(tmp_path)
        store.close()


# --- a full disk --------------------------------------------------------------------------

MAX_PAGES = 64  # 256 KiB with 4 KiB pages


def test_a_full_disk_in_a_transaction_rolls_all_of_it_back(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path, max_pages=MAX_PAGES)
    try:
        populate(store)
        before = store.dump()
        with pytest.raises(StorageError, match="full"), store.transaction():
            store.put_meta("first write", b"x")
            for entry, body in entries(40, body_size=16 * 1024)[3:]:
                store.insert_entry(entry, body)
        assert store.dump() == before
        store.put_meta("after", b"still usable")
        assert store.get_meta("after") == b"still usable"
    finally:
        store.close()


def test_a_full_disk_on_a_single_call_leaves_no_trace(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path, max_pages=MAX_PAGES)
    try:
        populate(store)
        before = store.dump()
        big, body = entries(4, body_size=256 * 1024)[3]
        with pytest.raises(StorageError, match="full"):
            store.insert_entry(big, body)  # the entry row fits; its body does not
        assert store.dump() == before
        store.insert_entry(big, None)
        assert store.feed_status(GROUP, ALICE.device_id).head_seq == 4
    finally:
        store.close()


def test_after_a_failure_the_transaction_refuses_work_and_cannot_commit(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path, max_pages=MAX_PAGES)
    try:
        populate(store)
        before = store.dump()
        big, body = entries(4, body_size=256 * 1024)[3]
        with pytest.raises(StorageError, match="rolled back"), store.transaction():
            store.put_meta("first write", b"x")
            with pytest.raises(StorageError, match="full"):
                store.insert_entry(big, body)
            with pytest.raises(StorageError, match="rolled back"):
                store.put_meta("second write", b"y")
        assert store.dump() == before
        with store.transaction():
            store.put_meta("next transaction", b"works")
        assert store.get_meta("next transaction") == b"works"
    finally:
        store.close()


# --- feed status cached inside a transaction, heads written once at commit ----------------

COUNT_HEAD_WRITES = """
CREATE TABLE head_writes (n INTEGER);
CREATE TRIGGER head_inserted AFTER INSERT ON feeds BEGIN INSERT INTO head_writes VALUES (1); END;
CREATE TRIGGER head_updated AFTER UPDATE ON feeds BEGIN INSERT INTO head_writes VALUES (1); END;
"""


def outside(profile: Path, script: str) -> None:
    """Run ``script`` on the database with a plain connection (a tool beside the store)."""
    with closing(sqlite3.connect(profile / "profile.db", isolation_level=None)) as db:
        db.executescript(script)


def test_a_transaction_writes_each_moved_head_once_with_its_entries(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        populate(store)
        outside(tmp_path, COUNT_HEAD_WRITES)
        made = entries(20)
        with store.transaction():
            for entry, body in made[3:]:
                store.insert_entry(entry, body)
            with closing(read_only(tmp_path)) as db:  # nothing of it is visible before COMMIT
                assert db.execute("SELECT head_seq FROM feeds").fetchall() == [(3,)]
                assert db.execute("SELECT count(*) FROM head_writes").fetchone() == (0,)
        with closing(read_only(tmp_path)) as db:
            assert db.execute("SELECT head_seq, head_id FROM feeds").fetchall() == [
                (20, made[-1][0].id)
            ]
            assert db.execute("SELECT count(*) FROM entries").fetchone() == (20,)
            assert db.execute("SELECT count(*) FROM head_writes").fetchone() == (1,)
    finally:
        store.close()


def test_nothing_cached_outlives_its_transaction(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        populate(store)
        with store.transaction():
            assert store.feed_status(GROUP, ALICE.device_id).pending == 0
        pending = entries(5)[4][0]
        outside(  # another tool adds a pending entry between our transactions
            tmp_path,
            "INSERT INTO pending (group_id, device, seq, id, wire) VALUES "
            f"(x'{GROUP.hex()}', x'{ALICE.device_id.hex()}', 5, x'{pending.id.hex()}', "
            f"x'{pending.wire.hex()}')",
        )
        assert store.feed_status(GROUP, ALICE.device_id).pending == 1
        with store.transaction():
            assert store.feed_status(GROUP, ALICE.device_id).pending == 1
    finally:
        store.close()


def test_a_failure_writing_the_heads_at_commit_rolls_everything_back(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        populate(store)
        before = store.dump()
        outside(
            tmp_path,
            "CREATE TRIGGER refuse AFTER UPDATE ON feeds BEGIN SELECT RAISE(ABORT, 'no'); END",
        )
        with pytest.raises(StorageError, match="no"), store.transaction():
            store.put_meta("first write", b"x")
            assert store.feed_status(GROUP, ALICE.device_id).head_seq == 3
            for entry, body in entries(6)[3:]:
                store.insert_entry(entry, body)
            assert store.feed_status(GROUP, ALICE.device_id).head_seq == 6  # from the cache
            # the heads are written only now, as the block commits, and the trigger refuses
        outside(tmp_path, "DROP TRIGGER refuse")
        assert store.dump() == before
        assert store.feed_status(GROUP, ALICE.device_id).head_seq == 3
        with store.transaction():  # the next transaction works and writes its head
            store.insert_entry(*entries(4)[3])
        assert store.feed_status(GROUP, ALICE.device_id).head_seq == 4
    finally:
        store.close()


KILLED_MID_BATCH = textwrap.dedent(
    """
    import os, signal, sys
    from microsync.storage import SqliteStore
    from tests.test_sqlite_store import ALICE, GROUP, entries

    store = SqliteStore.open(sys.argv[1])
    made = entries(6)
    with store.transaction():
        for entry, body in made[:3]:
            store.insert_entry(entry, body)
    with store.transaction():
        store.feed_status(GROUP, ALICE.device_id)
        for entry, body in made[3:]:
            store.insert_entry(entry, body)
        store.feed_status(GROUP, ALICE.device_id)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_process_killed_mid_batch_keeps_the_last_committed_head(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_BATCH, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert child.returncode == -9
    made = entries(3)
    store = SqliteStore.open(tmp_path)
    try:
        assert store.feed_status(GROUP, ALICE.device_id).head_seq == 3
        assert store.feed_status(GROUP, ALICE.device_id).head_id == made[2][0].id
        assert [s.entry for s in store.entries(GROUP, ALICE.device_id)] == [e for e, _ in made]
        assert store.entry_at(GROUP, ALICE.device_id, 4) is None
    finally:
        store.close()
