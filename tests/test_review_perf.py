"""Adversarial review of issue 19's fourth pass (the after-commit live push, the header fast
path's 24..MAX_DEPS deps): hostile input and hostile orderings against what was merged."""

from __future__ import annotations

from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from microsync.errors import MicrosyncError
from microsync.feed import GroupId
from microsync.feed.entry import MAX_DEPS, EntryId, Header, _parse_fast
from microsync.identity import DeviceId

# ---------------------------------------------------------------------- the header fast path

ID = st.binary(min_size=32, max_size=32)
U64 = st.one_of(
    st.sampled_from([0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]),
    st.integers(0, 2**63 - 1),
)


@st.composite
def many_deps_headers(draw: st.DrawFn) -> bytes:
    """A valid header's bytes with 20..MAX_DEPS deps (the new one-byte-count form mostly)."""
    seq = draw(st.one_of(st.just(1), U64.map(lambda n: max(n, 2))))
    header = Header(
        group=GroupId(draw(ID)),
        device=DeviceId(draw(ID)),
        seq=seq,
        prev=None if seq == 1 else EntryId(draw(ID)),
        epoch=draw(U64),
        type=draw(st.integers(0, 0xFFFF)),
        hlc=draw(U64),
        deps=tuple(EntryId(d) for d in draw(st.lists(ID, min_size=20, max_size=MAX_DEPS))),
        body_hash=draw(ID),
        body_len=draw(U64),
    )
    return header.to_bytes()


def strict(data: bytes) -> tuple[str, object]:
    try:
        return "accepted", Header._from_bytes_strict(data)
    except MicrosyncError as exc:
        return "refused", type(exc)


def assert_agree(data: bytes) -> None:
    fast = _parse_fast(data)
    if fast is not None:
        assert strict(data) == ("accepted", fast)
    expected = strict(data)
    try:
        got: tuple[str, object] = "accepted", Header.from_bytes(data)
    except MicrosyncError as exc:
        got = "refused", type(exc)
    assert got == expected


def deps_array_at(data: bytes) -> int:
    """Where the deps array's head byte is in a header from :func:`many_deps_headers`."""
    end = len(data)
    # walk back: body_len (variable), body_hash (34), then 34 per dep
    for at in range(end - 1, 0, -1):
        if data[at] in (0x98,) or 0x80 <= data[at] <= 0x97:
            count = data[at + 1] if data[at] == 0x98 else data[at] - 0x80
            first = at + (2 if data[at] == 0x98 else 1)
            if first + 34 * count + 34 < end and data[first : first + 2] == b"\x58\x20":
                tail = first + 34 * count
                if data[tail : tail + 2] == b"\x58\x20" and tail + 34 < end:
                    return at
    raise AssertionError("no deps array")


@settings(max_examples=400, deadline=None)
@given(data=many_deps_headers(), count=st.integers(0, 255), wide=st.booleans())
def test_a_rewritten_deps_count_reads_the_same_both_ways(
    data: bytes, count: int, wide: bool
) -> None:
    """The deps count rewritten (non-canonical one-byte counts under 24, MAX_DEPS + 1 and
    more, counts past the end of the data, a two-byte count): never a different header."""
    at = deps_array_at(data)
    head = 2 if data[at] == 0x98 else 1
    new = (b"\x99" + count.to_bytes(2, "big")) if wide else b"\x98" + bytes([count])
    assert_agree(data[:at] + new + data[at + head :])
    if count < 24:
        assert_agree(data[:at] + bytes([0x80 + count]) + data[at + head :])


@settings(max_examples=400, deadline=None)
@given(
    data=many_deps_headers(),
    at=st.integers(0, 4096),
    junk=st.binary(min_size=0, max_size=3),
    how=st.sampled_from(["overwrite", "insert", "cut", "truncate"]),
)
def test_a_damaged_header_with_many_deps_reads_the_same_both_ways(
    data: bytes, at: int, junk: bytes, how: str
) -> None:
    """Bytes overwritten, inserted or cut anywhere (the deps' 58 20 marks, the last dep cut
    short, an index past the end): the fast path declines or agrees with the strict decoder."""
    at %= len(data) + 1
    if how == "overwrite":
        damaged = data[:at] + junk + data[at + len(junk) :]
    elif how == "insert":
        damaged = data[:at] + junk + data[at:]
    elif how == "cut":
        damaged = data[:at] + data[at + max(1, len(junk)) :]
    else:
        damaged = data[:at]
    event(strict(damaged)[0])
    assert_agree(damaged)


@settings(max_examples=200, deadline=None)
@given(data=many_deps_headers())
def test_every_header_with_many_deps_takes_the_fast_path(data: bytes) -> None:
    header = Header._from_bytes_strict(data)
    assert _parse_fast(data) == header


def test_max_deps_plus_one_is_refused_both_ways() -> None:
    header = Header(
        group=GroupId(b"g" * 32),
        device=DeviceId(b"d" * 32),
        seq=1,
        prev=None,
        epoch=0,
        type=1,
        hlc=5,
        deps=tuple(EntryId(bytes([i]) * 32) for i in range(MAX_DEPS)),
        body_hash=b"h" * 32,
        body_len=10,
    )
    data = header.to_bytes()
    at = deps_array_at(data)
    assert data[at : at + 2] == bytes([0x98, MAX_DEPS])
    extra = data[: at + 1] + bytes([MAX_DEPS + 1]) + data[at + 2 :]
    extra = (
        extra[: at + 2 + 34 * MAX_DEPS] + b"\x58\x20" + b"x" * 32 + extra[at + 2 + 34 * MAX_DEPS :]
    )
    assert _parse_fast(extra) is None
    assert strict(extra)[0] == "refused"


# ---------------------------------------------------------------------- the fresh push


def test_a_fresh_push_to_a_peer_just_put_out_stops_at_its_exit(tmp_path: Path) -> None:
    """Bob is removed; the removal and a post after it are handed over together, exactly what
    Bob lacks. ``serves`` admits Bob as a former member (up to the removal, so he learns he is
    out) and sets his exit limit: the post, past that limit, must not reach him."""
    from tests.sync_helpers import close_all, family, open_devices, pump, run, sync_pair
    from tests.test_live_fresh import StoreCountingHost, entries_sent, newest_items

    devices = open_devices(tmp_path, "Alice", "Bob", "Carol")
    try:
        group = family(devices)
        alice, bob = StoreCountingHost(devices[0]), StoreCountingHost(devices[1])
        link = sync_pair(alice, bob)
        run(alice.device.group(group).remove(bob.device.person_id))
        run(alice.device.group(group).post("after the removal"))
        removal, post = newest_items(alice.device, group, 2)
        link.queue("a", link.a.local_update(group, fresh=[removal, post]))
        pump(link)
        sent = entries_sent(link, "a")
        assert post[0] not in sent  # past Bob's exit: never sent
        texts = {p.text for p in bob.device.group(group).feed()}
        assert "after the removal" not in texts
    finally:
        close_all(devices)


# ---------------------------------------------------------------------- the keeper's purge

_KILLED_MID_PURGE = """
import os, sqlite3, sys
from pathlib import Path
from microsync.storage.keeper_store import DATABASE_NAME, KeeperStore
root = Path(sys.argv[1])
canary = b"purge me, canary " * 64
store = KeeperStore(root)
store.put(b"a" * 32, [(b"1" * 32, canary), (b"2" * 32, b"kept")], 1)
store._db.execute("PRAGMA busy_timeout = 50")
reader = sqlite3.connect(root / DATABASE_NAME, isolation_level=None)
reader.execute("BEGIN")
reader.execute("SELECT count(*) FROM items").fetchone()  # holds its snapshot
assert store.delete(b"a" * 32, [b"1" * 32]) == 1  # its checkpoint is kept from truncating
reader.execute("COMMIT")
os._exit(0)  # killed before any later delete or expiry: nothing closes, nothing checkpoints
"""


def test_a_purge_left_in_the_log_by_a_killed_keeper_is_finished_after_the_restart(
    tmp_path: Path,
) -> None:
    """The keeper remembers a purge still in the WAL only in memory: killed before the next
    delete or expiry, the restarted keeper must still take the purged bytes out of the log
    at its first delete or expiry (which finds nothing to purge)."""
    import os
    import subprocess
    import sys

    from microsync.storage.keeper_store import KeeperStore

    canary = b"purge me, canary " * 64

    def in_files() -> bool:
        return any(canary in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(
        [sys.executable, "-c", _KILLED_MID_PURGE, str(tmp_path)], check=True, env=env, timeout=60
    )
    assert in_files()  # the kill left the purged bytes in the log
    store = KeeperStore(tmp_path)
    try:
        assert store.expire(0) == 0  # the keeper's periodic expiry: nothing older, yet
        assert not in_files()
    finally:
        store.close()
