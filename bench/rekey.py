"""Group key rotation on removal vs. the raw cost of its key wraps, in one run.

    python -m bench.rekey [--sizes 10,100,1000] [--devices 3] [--repeat 3]

For each size N, one group of N members (the founder included) with ``--devices`` devices each
is built once: the founder creates it, links its own extra devices, and adds every other member
with all of that member's device grants, in a SQLite profile (the real path). A second member's
device catches up on the group in its own SQLite profile. Building is timed and printed apart.

Each repeat then starts from a fresh copy of both profiles (so every measured removal is the
first removal in a group of exactly N members, and each repeat removes a different member) and
times:

* **removal**: ``GroupReplica.remove`` of one member on the founder's device: resolution of the
  op, a new epoch, a wrap to every remaining device, the sealed op, signature, and the
  transaction that stores it (``synchronous=FULL``).
* **floor**: for the same remaining devices' prekeys, one ephemeral X25519 key and, per
  device, an X25519 DH (``crypto_scalarmult``) and XChaCha20-Poly1305 of a 32-byte key
  (``crypto_aead_xchacha20poly1305_ietf_encrypt``), via PyNaCl's bindings, run right before
  and right after the removal and averaged (**raw wraps**); plus **one durable commit** of the
  removal entry's wire and body bytes into a bare table (``bench.floors.durable_db``: WAL,
  ``synchronous=FULL``), the fsync a removal reported as done cannot skip, run twice right
  after and averaged.
* **receive**: the other member's device taking in the removal entry
  (``GroupReplica.receive([(wire, body)])``: verify, store, find and open its wrap, open the
  sealed op, resolve, keep the new key). Every member device pays this once per rotation.

Both profiles get one small write after opening, before anything is timed, as a running
device's profile has had: the first write after a fresh open pays SQLite's WAL set-up (about
10 ms here), once per open, not per removal. Bytes added are ``len(wire) + len(body)`` of the
removal entry. Times are medians of
``--repeat``; the ratio is the median of each repeat's removal / floor (raw wraps + commit),
and the ratio to the raw wraps alone is printed too. The machine swings ±30% between runs, so
read the ratio (target: removal within 2x of the floor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium

from bench.floors import durable_db
from bench.report import Figure, Report
from microsync import encoding
from microsync.crypto import system_rng
from microsync.encoding import expect_list
from microsync.feed import GroupId, Ingested
from microsync.feed.trust import add_certificate
from microsync.group.ops import DeviceGrant
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import LocalIdentity, PersonId
from microsync.storage.sqlite import SqliteStore

NONCE = bytes(24)


def grant(identity: LocalIdentity) -> DeviceGrant:
    return DeviceGrant(identity.certificate.to_bytes(), identity.prekey_certificate.to_bytes())


def person_devices(name: str, devices: int) -> list[LocalIdentity]:
    """One new person with ``devices`` devices, all certified by its person key."""
    first = LocalIdentity.create(f"{name}-0", os.urandom, 0)
    assert first.person_key is not None
    return [first] + [
        LocalIdentity.for_person(first.person_key, f"{name}-{d}", os.urandom, 0)
        for d in range(1, devices)
    ]


@dataclass(frozen=True, slots=True)
class Built:
    group: GroupId
    founder: LocalIdentity
    receiver: LocalIdentity
    people: list[PersonId]  # every member but the founder, in order of addition
    founder_dir: Path
    receiver_dir: Path
    build_s: float  # founder: create + link + every add
    catch_up_s: float  # receiver: take in the whole membership log


def build_group(work: Path, members: int, devices: int) -> Built:
    founder_devices = person_devices("founder", devices)
    others = [person_devices(f"m{i}", devices) for i in range(1, members)]
    founder = founder_devices[0]
    founder_dir, receiver_dir = work / "founder", work / "receiver"

    store = SqliteStore.open(founder_dir)
    add_certificate(store, founder.certificate)
    start = time.perf_counter()
    replica = GroupReplica.create(store, LocalMember.of(founder, system_rng), "bench", now=1)
    now = 2
    for linked in founder_devices[1:]:
        replica.add_device(grant(linked), now=now)
        now += 1
    for person in others:
        replica.add(person[0].person_id, person[0].name, [grant(d) for d in person], now=now)
        now += 1
    build_s = time.perf_counter() - start
    assert len(replica.state.members) == members
    assert len(replica.state.entitled_devices()) == members * devices
    log = [
        (s.entry.wire, s.body)
        for device in store.feeds(replica.id)
        for s in store.entries(replica.id, device)
    ]
    store.close()

    receiver = others[0][0]
    member_store = SqliteStore.open(receiver_dir)
    add_certificate(member_store, founder.certificate)
    start = time.perf_counter()
    member = GroupReplica(member_store, LocalMember.of(receiver, system_rng), replica.id)
    results = member.receive(log)
    catch_up_s = time.perf_counter() - start
    assert all(isinstance(r, Ingested) for r in results), "the receiver rejected the log"
    assert member.is_member and member.current_epoch_key() is not None
    member_store.close()
    return Built(
        replica.id,
        founder,
        receiver,
        [p[0].person_id for p in others],
        founder_dir,
        receiver_dir,
        build_s,
        catch_up_s,
    )


def raw_wraps(prekeys: list[bytes]) -> float:
    """The floor: one ephemeral key, then X25519 + XChaCha20-Poly1305 of 32 bytes per device."""
    start = time.perf_counter()
    eph = os.urandom(32)
    sodium.crypto_scalarmult_base(eph)
    bundle_key = os.urandom(32)
    for prekey in prekeys:
        shared = sodium.crypto_scalarmult(eph, prekey)
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(bundle_key, None, NONCE, shared)
    return time.perf_counter() - start


def count_wraps(body: bytes) -> int:
    """The wraps in a membership entry's envelope ``[version, [[purpose, epoch, bundle]], _]``."""
    _, bundles, _ = expect_list(encoding.decode(body, max_size=len(body) + 1), "envelope", 3)
    total = 0
    for item in expect_list(bundles, "bundles"):
        _, _, bundle = expect_list(item, "bundle entry", 3)
        _, wraps, _ = expect_list(bundle, "bundle", 3)
        total += len(expect_list(wraps, "wraps"))
    return total


def durable_commit(db: sqlite3.Connection, n: int, wire: bytes, body: bytes) -> float:
    """Seconds for one transaction storing ``wire`` and ``body`` (``synchronous=FULL``)."""
    start = time.perf_counter()
    db.execute("BEGIN")
    db.execute("INSERT INTO entries VALUES (?, ?, ?)", (n, wire, body))
    db.execute("COMMIT")
    return time.perf_counter() - start


@dataclass(slots=True)
class Run:
    removal_s: float
    raw_s: float
    commit_s: float
    receive_s: float
    load_s: float
    wrapped: int
    added_bytes: int


def one_removal(built: Built, work: Path, victim: PersonId) -> Run:
    founder_dir, receiver_dir = work / "founder", work / "receiver"
    shutil.copytree(built.founder_dir, founder_dir)
    shutil.copytree(built.receiver_dir, receiver_dir)

    store = SqliteStore.open(founder_dir)
    start = time.perf_counter()
    replica = GroupReplica.load(store, LocalMember.of(built.founder, system_rng), built.group)
    load_s = time.perf_counter() - start
    # a running device's profile has been written since it opened: one small write first, so
    # the timed removal does not pay the first write after a fresh open (WAL set-up, ~10 ms)
    store.put_meta("bench/warm", b"1")
    leaving = set(replica.state.members[victim].devices)
    prekeys = []
    for device in sorted(replica.state.entitled_devices() - leaving):
        info = replica.state.device(device)
        assert info is not None
        prekeys.append(bytes(info.prekey))
    # the floor right before and right after the removal, so both see the same machine
    raw_before = raw_wraps(prekeys)
    start = time.perf_counter()
    entry = replica.remove(victim, now=10**9)
    removal_s = time.perf_counter() - start
    raw_s = (raw_before + raw_wraps(prekeys)) / 2
    assert victim not in replica.state.members
    stored = store.entry_at(built.group, entry.header.device, entry.header.seq)
    assert stored is not None and stored.body is not None
    wire, body = stored.entry.wire, stored.body
    store.close()
    wrapped = count_wraps(body)
    assert wrapped == len(prekeys), (wrapped, len(prekeys))
    floor_db = durable_db(work / "floor.db")
    commit_s = sum(durable_commit(floor_db, n, wire, body) for n in (1, 2)) / 2
    floor_db.close()

    member_store = SqliteStore.open(receiver_dir)
    member = GroupReplica.load(
        member_store, LocalMember.of(built.receiver, system_rng), built.group
    )
    member_store.put_meta("bench/warm", b"1")  # as above
    start = time.perf_counter()
    results = member.receive([(wire, body)])
    receive_s = time.perf_counter() - start
    assert all(isinstance(r, Ingested) for r in results), results
    assert victim not in member.state.members
    key = member.current_epoch_key()
    assert key is not None and key.number == entry.header.epoch + 1, "new epoch key not kept"
    member_store.close()
    return Run(removal_s, raw_s, commit_s, receive_s, load_s, wrapped, len(wire) + len(body))


@dataclass(frozen=True, slots=True)
class Row:
    members: int
    wrapped: int
    removal_ms: float
    raw_ms: float
    commit_ms: float
    ratio: float
    wraps_ratio: float
    added: int
    receive_ms: float
    load_ms: float


def measure(
    sizes: list[int], devices: int, repeat: int, say: Callable[[str], None] = print
) -> list[Row]:
    """One row per group size: medians of ``repeat`` removals from fresh copies."""
    rows = []
    for members in sizes:
        with tempfile.TemporaryDirectory(prefix="microsync-bench-") as tmp:
            work = Path(tmp)
            built = build_group(work / "base", members, devices)
            say(
                f"  N={members}: built in {built.build_s:.2f} s (founder: create + "
                f"{members - 1} adds), receiver caught up in {built.catch_up_s:.2f} s"
            )
            runs = [
                one_removal(built, work / f"run{r}", built.people[-1 - r]) for r in range(repeat)
            ]
        rows.append(
            Row(
                members,
                runs[0].wrapped,
                statistics.median(r.removal_s for r in runs) * 1e3,
                statistics.median(r.raw_s for r in runs) * 1e3,
                statistics.median(r.commit_s for r in runs) * 1e3,
                statistics.median(r.removal_s / (r.raw_s + r.commit_s) for r in runs),
                statistics.median(r.removal_s / r.raw_s for r in runs),
                runs[0].added_bytes,
                statistics.median(r.receive_s for r in runs) * 1e3,
                statistics.median(r.load_s for r in runs) * 1e3,
            )
        )
    return rows


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: 10 and 100 members once (quick), or 10, 100 and 1,000, median
    of 3 (full); 3 devices each."""
    sizes, repeat = ([10, 100], 1) if quick else ([10, 100, 1000], 3)
    rows = measure(sizes, 3, repeat, say=lambda _: None)
    return Report(
        figures=[
            Figure(
                bench="rekey",
                measure=f"remove one member of {r.members:,} ({r.wrapped:,} wraps)",
                value=f"{r.removal_ms:.1f} ms",
                floor=f"{r.raw_ms + r.commit_ms:.1f} ms (raw wraps + one durable commit)",
                ratio=r.ratio,
                target="<= 2.00",
            )
            for r in rows
        ],
        notes=[
            f"{r.members:,} members: {r.added:,} bytes added, received in "
            f"{r.receive_ms:.1f} ms; raw wraps {r.raw_ms:.1f} ms + commit {r.commit_ms:.1f} ms; "
            f"removal / raw wraps alone {r.wraps_ratio:.2f}"
            for r in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000", help="members per group, comma-separated")
    parser.add_argument("--devices", type=int, default=3, help="devices per member")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if min(sizes) < args.repeat + 2:
        parser.error("every size needs at least --repeat + 2 members")
    print(
        f"rekey: remove one member of N (x {args.devices} devices), "
        f"SQLite synchronous=FULL, median of {args.repeat}"
    )
    rows = measure(sizes, args.devices, args.repeat)
    print()
    print(
        f"  {'members':>7} {'wrapped':>7} {'removal ms':>10} {'raw ms':>8} {'commit':>7} "
        f"{'ratio':>6} {'/wraps':>6} {'bytes':>8} {'B/recip':>7} {'receive ms':>10} "
        f"{'load ms':>8}"
    )
    for r in rows:
        print(
            f"  {r.members:>7,} {r.wrapped:>7,} {r.removal_ms:>10.1f} {r.raw_ms:>8.1f} "
            f"{r.commit_ms:>7.1f} {r.ratio:>6.2f} {r.wraps_ratio:>6.2f} {r.added:>8,} "
            f"{r.added / r.wrapped:>7.1f} {r.receive_ms:>10.1f} {r.load_ms:>8.1f}"
        )
    print(
        "  ratio = median over repeats of removal / (raw wraps + one durable commit) of that "
        "repeat (target <= 2.0); /wraps = the same against the raw wraps alone"
    )
    print("  load = GroupReplica.load of the founder's profile before a removal (not timed in it)")


if __name__ == "__main__":
    main()
