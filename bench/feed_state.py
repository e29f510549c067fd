"""Applying app operations: mixed posts, replies, reactions and location updates from 12
members, received by one real device, against the floor of the same work, in one run.

    python -m bench.feed_state [--ops 100000] [--members 12] [--batch 1000]

* **generate**: 12 simulated members (``microsync.testing``, memory stores) write ``--ops``
  app operations: 40% posts, 25% replies, 25% reactions, 10% location updates kept in history,
  each naming its target in ``deps``.
* **apply**: a real device (SQLite profile) receives them in generation order, ``--batch`` per
  call of ``Device.receive``: strict decode, every feed rule, Ed25519 verify, body hash, store,
  decrypt, app-op decode and the timeline fold (authorship rules, reactions, threads).
* **fold only**: the same decrypted operations folded into a fresh ``Timeline``.
* **floor**: PyNaCl Ed25519 verify of the same headers + XChaCha20-Poly1305 decrypt of
  ciphertexts as long as the bodies + a durable insert of the same bytes into one bare table
  with an integer key, 1,000 rows per ``executemany`` (WAL, ``synchronous=FULL``;
  ``bench/floors.py``).

Resident memory is read from ``/proc/self/status`` before and after applying, and set against
what the same operations added to the profile's files on disk (database and WAL): issue 19's
target is a resident growth of at most 5x the on-disk growth.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import microsync
from bench.floors import receive_floor, receive_work
from bench.report import Figure, Report
from microsync.app.ops import APP_TYPE, AppOp, Kind
from microsync.app.timeline import AppEntry, Timeline
from microsync.feed.entry import Entry, EntryId, GroupId
from microsync.testing import SimDevice, SimNetwork

EMOJI = ("❤️", "👍", "😂", "🎉", "😮")


def dir_mib(path: Path) -> float:
    """The size of every file under ``path`` (database, WAL, blobs), in MiB."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(
    ops: int, members: int, reader: microsync.Device | Sequence[microsync.Device], seed: int
) -> tuple[SimNetwork, list[SimDevice], GroupId, list[tuple[Entry, bytes]]]:
    net = SimNetwork(seed=seed)
    people = [net.add_device(f"member{i}") for i in range(members)]
    group = net.create_group(people[0], "Family")
    admin = people[0].replica(group)
    for person in people[1:]:
        admin.add(person.person_id, person.name, [person.grant()], now=net.clock.now)
    for device in [reader] if isinstance(reader, microsync.Device) else reader:
        admin.add(device.person_id, device.name, [device._member.grant()], now=net.clock.now)
    net.settle(group)
    rng = random.Random(seed)
    posts: list[EntryId] = []
    made: list[tuple[Entry, bytes]] = []
    now = net.clock.now
    for i in range(ops):
        person = rng.choice(people)
        replica = person.replica(group)
        roll = rng.random()
        if roll < 0.40 or not posts:
            op = AppOp(Kind.POST, text=f"post {i}: " + "x" * rng.randrange(20, 200))
            deps: tuple[EntryId, ...] = ()
        elif roll < 0.65:
            target = rng.choice(posts[-500:])
            op = AppOp(Kind.POST, text=f"reply {i}", reply_to=target)
            deps = (target,)
        elif roll < 0.90:
            target = rng.choice(posts[-500:])
            op = AppOp(Kind.REACT, post=target, emoji=rng.choice(EMOJI))
            deps = (target,)
        else:
            lat = rng.randrange(-900, 900) * 100_000 + 50_000
            lon = rng.randrange(-1800, 1800) * 100_000 + 50_000
            op = AppOp(Kind.LOCATION, lat=lat, lon=lon, precision="city")
            deps = ()
        entry = replica.append_content(APP_TYPE, op.to_bytes(), now=now + i, deps=deps)
        if op.kind is Kind.POST:
            posts.append(entry.id)
        stored = person.store.entry_at(group, entry.header.device, entry.header.seq)
        assert stored is not None and stored.body is not None
        made.append((entry, stored.body))
    return net, people, group, made


def membership_items(people: list[SimDevice], group: GroupId) -> list[tuple[bytes, bytes | None]]:
    store = people[0].store
    gid = people[0].replica(group).id
    return [
        (s.entry.wire, s.body)
        for device in store.feeds(gid)
        for s in store.entries(gid, device)
        if s.entry.header.type != APP_TYPE
    ]


@dataclass(frozen=True, slots=True)
class Measured:
    ops: int
    build: float
    apply: float
    floor: float
    fold: float
    rss_before: float
    rss_after: float
    posts: int
    disk: float  # MiB the applied operations added to the profile's files


async def measure(ops: int, members: int, batch: int, seed: int) -> Measured:
    with tempfile.TemporaryDirectory(prefix="microsync-bench-") as tmp:
        work = Path(tmp)
        async with await microsync.Device.open(work / "reader", name="Reader") as reader:
            t0 = time.perf_counter()
            _net, people, group, made = build(ops, members, reader, seed)
            t_build = time.perf_counter() - t0
            reader.learn_certificates([p.identity.certificate.to_bytes() for p in people])
            reader.receive(group, membership_items(people, group))
            family = reader.group(group)
            assert family.is_member()
            family.feed()  # load the (empty) timeline so the fold runs as entries arrive
            items = [(e.wire, b) for e, b in made]
            disk_before = dir_mib(work / "reader")
            rss_before = rss_mib()
            start = time.perf_counter()
            accepted = 0
            for first in range(0, len(items), batch):
                accepted += reader.receive(group, items[first : first + batch])
            t_apply = time.perf_counter() - start
            rss_after = rss_mib()
            disk = dir_mib(work / "reader") - disk_before
            assert accepted == len(items), f"only {accepted} of {len(items)} accepted"
            timeline = family._timeline()
            assert len(timeline.applied) == len(items) and timeline.waiting == 0
            posts = len(family.feed())

            # the fold alone, over the same decrypted operations
            replica = family._replica
            owners = {p.device_id: p.person_id for p in people}
            opened = []
            for e, _ in made:
                h = e.header
                stored = replica.store.entry_at(replica.id, h.device, h.seq)
                assert stored is not None
                op = AppOp.from_bytes(replica.decrypt(stored))
                opened.append(AppEntry(e.id, h.device, owners[h.device], h.seq, h.hlc, h.deps, op))
            start = time.perf_counter()
            Timeline().add(opened)
            t_fold = time.perf_counter() - start

            t_floor = receive_floor(work / "floor.db", receive_work(items), batch)
    return Measured(
        len(made), t_build, t_apply, t_floor, t_fold, rss_before, rss_after, posts, disk
    )


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: 5,000 ops (quick) or 100,000 (full), 12 members."""
    m = asyncio.run(measure(5_000 if quick else 100_000, 12, 1_000, 1))
    return Report(
        figures=[
            Figure(
                bench="feed_state",
                measure=f"apply {m.ops:,} app ops on a real device (validate + store + fold)",
                value=f"{m.ops / m.apply:,.0f} ops/s",
                floor=f"{m.ops / m.floor:,.0f} ops/s",
                ratio=m.apply / m.floor,
            ),
            Figure(
                bench="feed_state",
                measure=f"resident memory the same {m.ops:,} ops added (the fold and caches)",
                value=f"+{m.rss_after - m.rss_before:.0f} MiB",
                floor=f"{m.disk:.0f} MiB (what they added on disk)",
                ratio=(m.rss_after - m.rss_before) / m.disk,
                target="<= 5.00",
            ),
        ],
        notes=[
            f"resident memory +{m.rss_after - m.rss_before:.0f} MiB for {m.ops:,} ops "
            f"({m.posts:,} visible posts); the fold alone {m.ops / m.fold:,.0f} ops/s"
        ],
    )


async def run(ops: int, members: int, batch: int, seed: int) -> None:
    m = await measure(ops, members, batch, seed)
    n, t_build, t_apply, t_floor, t_fold = m.ops, m.build, m.apply, m.floor, m.fold
    rss_before, rss_after, posts = m.rss_before, m.rss_after, m.posts
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"feed_state: {n:,} app ops from {members} members "
        f"(40% posts, 25% replies, 25% reactions, 10% locations), batches of {batch}"
    )
    print(f"  generate on simulated members   {n / t_build:>9,.0f} ops/s ({t_build:.1f} s)")
    print(f"  apply on a real device          {n / t_apply:>9,.0f} ops/s ({t_apply:.1f} s)")
    print(f"  floor (verify + decrypt + insert) {n / t_floor:>7,.0f} ops/s ({t_floor:.1f} s)")
    print(f"  fold only (Timeline.add)        {n / t_fold:>9,.0f} ops/s ({t_fold:.2f} s)")
    print(f"  apply / floor = {t_floor / t_apply:.2f}")
    print(
        f"  resident memory: {rss_before:.0f} MiB before applying, {rss_after:.0f} MiB after "
        f"(+{rss_after - rss_before:.0f} MiB for {n:,} ops, {posts:,} visible posts); "
        f"peak {peak:.0f} MiB (includes the simulated members)"
    )
    growth = rss_after - rss_before
    print(f"  on disk: +{m.disk:.0f} MiB (the profile's files); resident / on disk = ", end="")
    print(f"{growth / m.disk:.2f} (target <= 5)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=12)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.ops, args.members, args.batch, args.seed))


if __name__ == "__main__":
    main()
