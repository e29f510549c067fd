"""WAL checkpoints run off the commit path, the WAL stays bounded, and commits survive
``kill -9`` (issue 19, the live p99; ``microsync.storage.checkpoint``)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from microsync.storage import checkpoint
from microsync.storage.sqlite import DATABASE_NAME, SqliteStore


def wal_size(directory: Path) -> int:
    try:
        return os.stat(directory / f"{DATABASE_NAME}-wal").st_size
    except FileNotFoundError:
        return 0


def test_commits_never_checkpoint_and_the_background_one_keeps_the_wal_bounded(
    tmp_path: Path,
) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        db: sqlite3.Connection = store._db
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        value = os.urandom(3000)
        for i in range(6000):  # about 24 MiB of WAL frames written in all
            with store.transaction():
                store.put_meta(f"k{i}", value)
            assert wal_size(tmp_path) <= checkpoint.WAL_HARD_LIMIT + 2**20
        assert store._checkpoints.checkpoints > 0  # the thread did the checkpoints
        assert wal_size(tmp_path) <= checkpoint.WAL_HARD_LIMIT
        assert os.stat(tmp_path / DATABASE_NAME).st_size > 6000 * 3000  # copied into the db
        assert store.get_meta("k5999") == value
    finally:
        store.close()
    assert store._checkpoints._thread is None  # close stopped it
    reopened = SqliteStore.open(tmp_path)
    try:
        assert reopened.get_meta("k0") == value
    finally:
        reopened.close()


def test_a_writer_far_ahead_of_the_thread_checkpoints_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "WAL_HARD_LIMIT", 2**20)
    monkeypatch.setattr(checkpoint.Checkpointer, "_run", lambda self: None)  # a stuck thread
    store = SqliteStore.open(tmp_path)
    try:
        value = os.urandom(3000)
        for i in range(3000):
            with store.transaction():
                store.put_meta(f"k{i}", value)
        assert store._checkpoints.checkpoints == 0
        assert wal_size(tmp_path) <= 2**20 + checkpoint.WAL_SIZE_LIMIT + 2**20
    finally:
        store.close()


def test_commits_survive_kill_9_while_checkpoints_run(tmp_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sys
        from microsync.storage.sqlite import SqliteStore
        store = SqliteStore.open({str(tmp_path)!r})
        i = 0
        while True:
            with store.transaction():
                store.put_meta(f"k{{i}}", bytes([i % 256]) * 2000)
            print(i, flush=True)
            i += 1
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        done = -1
        while done < 3000:  # past several background checkpoints
            done = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = SqliteStore.open(tmp_path)
    try:
        assert all(store.get_meta(f"k{i}") == bytes([i % 256]) * 2000 for i in range(done + 1))
    finally:
        store.close()
