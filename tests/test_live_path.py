"""The live path's shortcuts (issue 19), each against the general path it stands in for:
certificates offered on a live push only when a batch may need new ones, received entries
committed without an fsync (``SqliteStore.replaceable``, still surviving ``kill -9``), and
disappearing posts found through a heap instead of a scan of every post."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microsync.app.ops import PostOp
from microsync.app.timeline import AppEntry, ChangeKind, Timeline
from microsync.feed import GroupId
from microsync.feed.entry import EntryId
from microsync.identity import DeviceId, PersonId
from microsync.protocol.messages import Certificates, Entries
from microsync.protocol.session import SyncSession
from microsync.protocol.sync.stream import PeerView
from microsync.storage.sqlite import SqliteStore
from tests.sync_helpers import DeviceHost, close_all, connect, family, join, open_devices, pump, run

# ---------------------------------------------------------------------- certificates


class CountingHost(DeviceHost):
    """Counts how often the session asks for the group's certificates."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.certificate_reads = 0

    def certificates(self, group: GroupId) -> list[bytes]:
        self.certificate_reads += 1
        return super().certificates(group)


def view_of(session: SyncSession, group: GroupId) -> PeerView:
    # private reach: what the session believes the peer was sent is the property under test
    return session._groups[group].reconcile.view


def test_a_live_post_does_not_read_the_certificates_again(tmp_path: Path) -> None:
    devices = open_devices(tmp_path, "Alice", "Bob")
    try:
        group = family(devices)
        alice, bob = CountingHost(devices[0]), CountingHost(devices[1])
        link = connect(alice, bob)
        pump(link)
        reads = []
        for text in ("one", "two", "three"):
            run(alice.device.group(group).post(text))
            link.update(group)
            pump(link)
            reads.append(alice.certificate_reads)
        sent = [m for m in link.sent_by("a") if isinstance(m, Entries)]
        # the first push of a feed in this session offers certificates (in sync before: none
        # were sent yet); later posts of the same feed do not read them again
        assert len(sent) == 3 and reads == [1, 1, 1]
        assert {p.text for p in bob.device.group(group).feed()} >= {"one", "two", "three"}
    finally:
        close_all(devices)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.sampled_from(["alice", "bob", "add", "newcomer"]), min_size=1, max_size=6))
def test_live_pushes_offer_every_certificate_the_general_path_would(steps: list[str]) -> None:
    """After every live push that sent entries, the peer was offered every certificate the
    general path (certificates due before every batch) would have offered by then."""
    with tempfile.TemporaryDirectory() as root:
        devices = open_devices(Path(root), "Alice", "Bob", "Carol", "Dave")
        try:
            group = family(devices[:2])
            alice, bob = DeviceHost(devices[0]), DeviceHost(devices[1])
            link = connect(alice, bob)
            pump(link)
            waiting = [DeviceHost(d) for d in devices[2:]]
            joined: list[DeviceHost] = []
            for step in steps:
                if step == "add" and waiting:
                    joiner = waiting.pop(0)
                    join(alice.device, group, joiner.device)
                    joined.append(joiner)
                elif step == "newcomer" and joined:
                    newcomer = joined[-1]
                    pump(connect(alice, newcomer))  # it learns the group, then writes
                    run(newcomer.device.group(group).post("hello"))
                    pump(connect(newcomer, alice))
                elif step in ("alice", "bob"):
                    host = alice if step == "alice" else bob
                    run(host.device.group(group).post(step))
                due = set(alice.certificates(group))
                start = len(link.log)
                link.update(group)
                pump(link)
                pushed = any(
                    s == "a" and isinstance(m, Entries) and m.items for s, m in link.log[start:]
                )
                if pushed:
                    assert due <= view_of(link.a, group).certs_sent
            offered = {
                c
                for s, m in link.log
                if s == "a" and isinstance(m, Certificates)
                for c in m.certificates
            }
            assert offered == view_of(link.a, group).certs_sent
        finally:
            close_all(devices)


# ---------------------------------------------------------------------- replaceable commits


def synchronous_level(store: SqliteStore) -> int:
    # private reach: the connection's durability level is what the block changes
    level: int = store._db.execute("PRAGMA synchronous").fetchone()[0]
    return level


def test_replaceable_commits_skip_the_fsync_and_the_level_comes_back(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        assert synchronous_level(store) == 2  # FULL
        with store.replaceable():
            assert synchronous_level(store) == 1  # NORMAL for what begins here
            store.put_meta("received", b"1")
        assert synchronous_level(store) == 2
        with store.transaction(), store.replaceable():  # inside one: the outer one decides
            assert synchronous_level(store) == 2
            store.put_meta("own", b"2")
        assert store.get_meta("received") == b"1" and store.get_meta("own") == b"2"
    finally:
        store.close()


def test_a_replaceable_commit_survives_kill_9(tmp_path: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sys, time
        from microsync.storage.sqlite import SqliteStore
        store = SqliteStore.open({str(tmp_path)!r})
        for i in range(50):
            with store.replaceable():
                store.put_meta(f"k{{i}}", b"v" * 100)
        print("committed", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"committed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = SqliteStore.open(tmp_path)
    try:
        assert all(store.get_meta(f"k{i}") == b"v" * 100 for i in range(50))
    finally:
        store.close()


# ---------------------------------------------------------------------- expiry


def scan_expire(timeline: Timeline, now: int) -> list[EntryId]:
    """The general path: every post, in the order posted."""
    return [
        post.id
        for post in timeline.posts.values()
        if post.expires_at is not None and not post.gone and now >= post.expires_at
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.integers(1000, 5000),  # the post's ttl (ms), or a plain post
            st.integers(0, 3000),  # its hlc
            st.integers(0, 4000),  # then expire at now = hlc + this
        ),
        max_size=30,
    )
)
def test_expiry_through_the_heap_agrees_with_a_scan(
    posts: list[tuple[int | None, int, int]],
) -> None:
    timeline = Timeline()
    now = 0
    for n, (ttl, hlc, wait) in enumerate(posts):
        entry = AppEntry(
            id=EntryId(n.to_bytes(32, "big")),
            device=DeviceId(bytes(32)),
            person=PersonId(bytes(32)),
            seq=n + 1,
            hlc=hlc,
            deps=(),
            op=PostOp(text=f"post {n}", ttl_ms=ttl),
        )
        timeline.add([entry])
        now = max(now, hlc + wait)
        expected = scan_expire(copy.deepcopy(timeline), now)
        changes = timeline.expire(now)
        assert [c.post for c in changes] == expected
        assert all(c.kind is ChangeKind.EXPIRE for c in changes)
        assert scan_expire(timeline, now) == []  # nothing due is left behind
