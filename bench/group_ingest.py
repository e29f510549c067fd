"""The cost of the group layer's checks on the ingest path, in one run.

    python -m bench.group_ingest [--entries 20000] [--members 12] [--batch 1000] [--repeat 3]

A group of ``members`` people, each writing posts (encrypted app entries), ``entries`` in all.
A new device receives every entry, feed by feed, in batches of ``batch``:

* **feed layer**: ``microsync.feed.ingest_many`` on a fresh SQLite profile: strict decode, feed
  rules, Ed25519 verify, body hash, durable insert (WAL, ``synchronous=FULL``). This is the
  floor for the same work: the same bytes, the same durability, none of the group's checks.
* **group replica**: ``GroupReplica.receive`` on a fresh SQLite profile: the same, plus what
  the group layer decides before and after storing (who is admitted, cut-offs, membership
  opened and resolved, keys kept).

``replica / feed`` is what the group's write-side checks cost; run it from two checkouts to
compare before and after a change (``docs/benchmarks.md``). Each figure is the median of
``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.report import Figure, Report
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.crypto import system_rng
from microsync.feed import GroupId, ingest_many
from microsync.feed.trust import add_certificate
from microsync.group.replica import GroupReplica, LocalMember
from microsync.identity import LocalIdentity
from microsync.storage.memory import MemoryStore
from microsync.storage.sqlite import SqliteStore

Item = tuple[bytes, bytes | None]


def make_group(entries: int, members: int) -> tuple[GroupId, list[LocalIdentity], list[Item]]:
    """Every entry of a group of ``members`` people who wrote ``entries`` posts, in feed order
    (membership first, as a sync sends it)."""
    people = [LocalIdentity.create(f"m{i}", os.urandom, 0) for i in range(members + 1)]
    stores = [MemoryStore() for _ in people]
    for store in stores:
        for identity in people:
            add_certificate(store, identity.certificate)
    founder = GroupReplica.create(stores[0], LocalMember.of(people[0], system_rng), "Bench", now=1)
    for i, identity in enumerate(people[1:], start=1):
        member = LocalMember.of(identity, system_rng)
        founder.add(identity.person_id, identity.name, [member.grant()], now=1 + i)
    group = founder.id
    ops = [(s.entry.wire, s.body) for s in stores[0].entries(group, people[0].device_id)]
    replicas = [founder]
    for store, identity in zip(stores[1:-1], people[1:-1], strict=True):
        replica = GroupReplica(store, LocalMember.of(identity, system_rng), group)
        replica.receive(ops)
        replicas.append(replica)
    body = AppOp(Kind.POST, text="x" * 120).to_bytes()
    for n in range(entries):
        replicas[n % len(replicas)].append_content(APP_TYPE, body, now=1000 + n)
    items: list[Item] = []
    for replica in replicas:  # each device's own feed, in order (the founder's holds the ops)
        own = replica.store.entries(group, replica.me.device)
        items.extend((stored.entry.wire, stored.body) for stored in own)
    return group, people, items


def _fresh(path: Path, people: list[LocalIdentity]) -> SqliteStore:
    store = SqliteStore.open(path)
    with store.transaction():
        for identity in people:
            add_certificate(store, identity.certificate)
    return store


def run_feed(
    path: Path, group: GroupId, people: list[LocalIdentity], items: list[Item], batch: int
) -> float:
    store = _fresh(path, people)
    start = time.perf_counter()
    for first in range(0, len(items), batch):
        results = ingest_many(store, group, items[first : first + batch])
        assert not any(isinstance(r, Exception) for r in results), "input was rejected"
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def run_replica(
    path: Path, group: GroupId, people: list[LocalIdentity], items: list[Item], batch: int
) -> float:
    store = _fresh(path, people)
    receiver = GroupReplica(store, LocalMember.of(people[-1], system_rng), group)
    start = time.perf_counter()
    for first in range(0, len(items), batch):
        results = receiver.receive(items[first : first + batch])
        assert not any(isinstance(r, Exception) for r in results), "input was rejected"
    elapsed = time.perf_counter() - start
    stored = sum(f.head_seq for f in store.feeds(group).values())
    assert stored == len(items), f"stored {stored} of {len(items)}"
    store.close()
    return elapsed


def measure(entries: int, members: int, batch: int, repeat: int) -> tuple[int, dict[str, float]]:
    """How many entries, and entries per second through each path (median of ``repeat``)."""
    group, people, items = make_group(entries, members)
    times: dict[str, list[float]] = {"feed": [], "replica": []}
    for run in range(repeat):
        with tempfile.TemporaryDirectory(prefix="microsync-bench-") as tmp:
            work = Path(tmp)
            times["feed"].append(run_feed(work / f"feed{run}", group, people, items, batch))
            times["replica"].append(
                run_replica(work / f"replica{run}", group, people, items, batch)
            )
    return len(items), {k: len(items) / statistics.median(v) for k, v in times.items()}


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: 3,000 posts once (quick), or 10,000, median of 3 (full)."""
    n, rate = measure(3_000 if quick else 10_000, 12, 1_000, 1 if quick else 3)
    return Report(
        figures=[
            Figure(
                bench="group_ingest",
                measure=f"group replica receives {n:,} entries (feed layer + the group's checks)",
                value=f"{rate['replica']:,.0f} entries/s",
                floor=f"{rate['feed']:,.0f} entries/s (feed layer alone)",
                ratio=rate["feed"] / rate["replica"],
                target="<= 1.05",
            )
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, rate = measure(args.entries, args.members, args.batch, args.repeat)
    print(
        f"group_ingest: {n} entries of a group of {args.members}, "
        f"batches of {args.batch}, median of {args.repeat}"
    )
    print(f"  feed layer (verify + rules + store)  {rate['feed']:>9,.0f} entries/s")
    print(f"  group replica (+ the group's checks) {rate['replica']:>9,.0f} entries/s")
    print(f"  replica / feed = {rate['replica'] / rate['feed']:.3f}")


if __name__ == "__main__":
    main()
