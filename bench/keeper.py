"""The keeper: pushes per second from 12 devices, memory and disk per group, and a new
device's catch-up from a keeper, each against a floor measured in the same run.

    python -m bench.keeper [--posts 24000] [--groups 1000] [--per-member 20] [--repeat 3]
                           [--catch-up 20000]

Items are real post entries: a device (``microsync.Device``, profile on ``/dev/shm`` where
there is one, not timed) creates a group and writes ``--posts`` posts of 30-210 bytes through
``Group.post``; each becomes the record a device gives a keeper, ``CBOR [wire, body]`` named by
its entry id, sealed by :meth:`Mailbox.seal` (padded to 1 KiB: 1,064 bytes on the wire).

* **push** (timed): a real ``microsync keeper`` subprocess on 127.0.0.1; 12 clients in this
  process, each its own WebSocket connection that has proved the group's mailbox (as 12
  devices of one group would; connecting and proving are done before the clock starts), push
  their share of the records at once through :meth:`KeeperClient.push` (sealed as sent, up to
  64 per PUSH, 4 PUSHes in flight per connection). Time from the first push to the last
  acknowledgement; every acknowledged record is committed (``synchronous=FULL``).
* **floors, storage** (same run, no network, one process): the same sealed bytes (item id and
  payload) inserted into a bare table with an integer key, WAL, ``synchronous=FULL`` as the
  keeper's store uses, the same PUSH batches, committed two ways. *Grouped* (the fair floor
  for a keeper that commits in groups): :data:`IN_FLIGHT` PUSHes per transaction, the most the
  12 clients can have unacknowledged at once (4 each), so the fewest commits (fsyncs) that any
  keeper acknowledging only what is on disk can make. *Per PUSH*: one transaction per PUSH
  batch, what a keeper committing each PUSH alone would do (the floor before group commit).
* **floor, network** (same run): the same PUSH messages, byte for byte, sent by 12 raw
  ``websockets`` connections to a ``websockets`` server in a subprocess that answers each with
  the bytes of a 64-item STORED, 4 in flight per connection, as the client does: the
  keeper's network cost with no decoding, checking or storing.
* **footprint**: a fresh keeper; ``--groups`` groups of 12 members, each member its own
  connection (two groups at a time: 24 connections, under the keeper's 32 per address)
  pushing ``--per-member`` records of the same sizes into its group's mailbox (one per
  epoch, derived from a random secret per group); then the keeper's resident set
  (``VmRSS``, every connection closed) and peak (``VmHWM``) above its idle start, and the
  bytes of its data directory (database and WAL) while it runs and after it stops, against
  the bytes that must be kept (sealed payload plus the 32-byte item id of every item).
  (``bench/keeper_footprint.py``.)
* **catch-up**: a new device's catch-up of ``--catch-up`` posts through its keeper link with
  the inviter offline, against the same from a directly connected peer
  (``bench/keeper_catch_up.py``, which says how).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.keeper_footprint import Footprint, measure_footprint
from bench.keeper_rig import batches, echo_server, keeper, post_records, sealed_size, shares
from bench.report import Figure, Report
from microsync.crypto.random import system_rng
from microsync.group.mailbox import Mailbox, SealedItem
from microsync.net.keeper_client import KeeperClient, Record
from microsync.protocol.keeper import MAX_MESSAGE, Push, encode

CLIENTS = 12
WINDOW = 4  # PUSHes in flight per connection, as KeeperClient.PUSH_WINDOW
IN_FLIGHT = CLIENTS * WINDOW
"""The most PUSHes the clients have unacknowledged at once: the largest group a commit can hold."""


# ---------------------------------------------------------------- pushes per second


async def push_into(url: str, mailbox: Mailbox, parts: Sequence[Sequence[Record]]) -> float:
    """Seconds for ``len(parts)`` proved connections to push their parts at once."""
    clients = [await KeeperClient.connect(url) for _ in parts]
    try:
        for client in clients:
            await client.prove(mailbox)
        start = time.perf_counter()
        done = await asyncio.gather(
            *(c.push(mailbox, p) for c, p in zip(clients, parts, strict=True))
        )
        elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            await client.close()
    assert [len(d) for d in done] == [len(p) for p in parts]
    return elapsed


def storage_floor(
    path: Path, pushes: Sequence[tuple[SealedItem, ...]], per_commit: int = 1
) -> float:
    """Seconds to insert the same sealed bytes durably, ``per_commit`` PUSH batches per
    transaction (one ``executemany`` each)."""
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE items (n INTEGER PRIMARY KEY, item BLOB NOT NULL, payload BLOB)")
    rows: list[list[tuple[int, bytes, bytes]]] = []
    n = 0
    for first in range(0, len(pushes), per_commit):
        group = [item for batch in pushes[first : first + per_commit] for item in batch]
        rows.append([(n + k, item.id, item.payload) for k, item in enumerate(group, start=1)])
        n += len(group)
    start = time.perf_counter()
    for batch_rows in rows:
        db.execute("BEGIN")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)", batch_rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


async def websocket_floor(url: str, messages: Sequence[Sequence[bytes]]) -> float:
    """Seconds for one raw connection per list to send its messages, ``WINDOW`` in flight."""
    from websockets.asyncio.client import ClientConnection, connect

    async def one(conn: ClientConnection, mine: Sequence[bytes]) -> None:
        in_flight = 0
        for message in mine:
            await conn.send(message)
            in_flight += 1
            if in_flight >= WINDOW:
                await conn.recv()
                in_flight -= 1
        for _ in range(in_flight):
            await conn.recv()

    conns = [
        await connect(url, compression=None, max_size=MAX_MESSAGE, max_queue=4) for _ in messages
    ]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(one(c, m) for c, m in zip(conns, messages, strict=True)))
        return time.perf_counter() - start
    finally:
        for conn in conns:
            await conn.close()


@dataclass(frozen=True, slots=True)
class PushRate:
    items: int
    payload: int  # sealed bytes pushed
    keeper: float  # median seconds
    storage: float  # the grouped floor (IN_FLIGHT PUSHes per transaction)
    per_push: float  # the floor committing each PUSH alone
    network: float
    vs_storage: float  # median of each repeat's keeper / storage floor
    vs_per_push: float
    vs_network: float


def measure_pushes(records: Sequence[Record], repeat: int, clients: int = CLIENTS) -> PushRate:
    """Pushes into a fresh keeper, and both floors, ``repeat`` times."""
    parts = shares(records, clients)
    runs: list[tuple[float, float, float, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="microsync-bench-keeper-") as disk,
        echo_server() as echo,
    ):
        for run in range(repeat):
            mailbox = Mailbox.derive(os.urandom(32))
            sealed = [[mailbox.seal(system_rng, r.name, r.data) for r in part] for part in parts]
            pushes = [batches(s) for s in sealed]
            messages = [
                [encode(Push(request=i, mailbox=mailbox.id, items=b)) for i, b in enumerate(p, 1)]
                for p in pushes
            ]
            with keeper(Path(disk) / f"keeper-{run}") as running:
                took = asyncio.run(push_into(running.url, mailbox, parts))
            flat = [b for p in pushes for b in p]
            floor = storage_floor(Path(disk) / f"floor-{run}.db", flat, IN_FLIGHT)
            alone = storage_floor(Path(disk) / f"alone-{run}.db", flat)
            network = asyncio.run(websocket_floor(echo.url, messages))
            runs.append((took, floor, alone, network))
    return PushRate(
        items=len(records),
        payload=sum(sealed_size(r) for r in records),
        keeper=statistics.median(r[0] for r in runs),
        storage=statistics.median(r[1] for r in runs),
        per_push=statistics.median(r[2] for r in runs),
        network=statistics.median(r[3] for r in runs),
        vs_storage=statistics.median(r[0] / r[1] for r in runs),
        vs_per_push=statistics.median(r[0] / r[2] for r in runs),
        vs_network=statistics.median(r[0] / r[3] for r in runs),
    )


# ---------------------------------------------------------------- the report

if TYPE_CHECKING:
    from bench.keeper_catch_up import Measured as CatchUp
    from bench.keeper_catch_up import Spent


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def report(
    rate: PushRate,
    foot: Footprint,
    caught: Sequence[CatchUp] = (),
    spent: Spent | None = None,
    profiled: int | None = None,
) -> Report:
    per_s = rate.items / rate.keeper
    figures = [
        Figure(
            bench="keeper",
            measure=f"new device's catch-up of {m.posts:,} posts from a keeper",
            value=f"{m.keeper:.2f} s",
            floor=f"{m.peer:.2f} s (from a directly connected peer)",
            ratio=m.ratio,
            target="<= 1.20",
        )
        for m in caught
    ] + [
        Figure(
            bench="keeper",
            measure=f"{rate.items:,} pushes into one keeper from {CLIENTS} devices",
            value=f"{per_s:,.0f} items/s",
            floor=(
                f"{rate.items / rate.storage:,.0f} items/s (durable SQLite, same batches, "
                f"{IN_FLIGHT} per commit)"
            ),
            ratio=rate.vs_storage,
        ),
        Figure(
            bench="keeper",
            measure=f"{rate.items:,} pushes into one keeper from {CLIENTS} devices",
            value=f"{per_s:,.0f} items/s",
            floor=f"{rate.items / rate.per_push:,.0f} items/s (durable SQLite, a commit per PUSH)",
            ratio=rate.vs_per_push,
        ),
        Figure(
            bench="keeper",
            measure=f"{rate.items:,} pushes into one keeper from {CLIENTS} devices",
            value=f"{per_s:,.0f} items/s",
            floor=f"{rate.items / rate.network:,.0f} items/s (raw loopback WebSocket)",
            ratio=rate.vs_network,
        ),
        Figure(
            bench="keeper",
            measure=(
                f"keeper disk, {foot.groups:,} groups x {foot.members} members x "
                f"{foot.per_member} items"
            ),
            value=f"{foot.disk_running / foot.groups / 1024:,.1f} KiB/group",
            floor=f"{foot.kept / foot.groups / 1024:,.1f} KiB/group (sealed bytes + ids)",
            ratio=foot.disk_running / foot.kept,
        ),
        Figure(
            bench="keeper",
            measure=f"keeper memory, {foot.groups:,} groups (connections closed)",
            value=f"{foot.rss / foot.groups / 1024:,.1f} KiB/group",
            floor="",
            ratio=None,
        ),
    ]
    notes = [
        f"pushes: median of the runs; {rate.payload / rate.keeper / 1e6:,.1f} MB/s of sealed "
        f"items (1 KiB padded post entries, {rate.payload / rate.items:,.0f} B each); storage "
        f"floors {rate.storage:.2f} s ({IN_FLIGHT} PUSHes per commit: the most the clients "
        f"have in flight) and {rate.per_push:.2f} s (a commit per PUSH), network floor "
        f"{rate.network:.2f} s, keeper {rate.keeper:.2f} s (it commits the PUSHes that "
        "arrive together, from any connections, in one transaction)",
        f"footprint: {foot.items:,} items in {foot.seconds:.0f} s "
        f"({foot.groups * foot.members:,} connections, one per member); disk "
        f"{_mib(foot.disk_running)} running ({foot.disk_running / foot.items:,.0f} B/item), "
        f"{_mib(foot.disk_stopped)} after it stopped ({foot.disk_stopped / foot.items:,.0f} "
        f"B/item), against {_mib(foot.kept)} of sealed bytes and ids; resident set "
        f"+{_mib(foot.rss)} above the idle keeper with every connection closed, peak "
        f"+{_mib(foot.peak)} ({foot.peak / foot.groups / 1024:,.1f} KiB/group)",
    ]
    if caught:
        notes.append(
            "catch-up: a new device admitted by invite (it holds the group's welcome only) "
            "starts with no listener and no LAN; keeper: the inviter is offline, the device's "
            "keeper link pulls everything; peer: the same in a keeper-less group of the same "
            "posts, its host served by another process as its one peer; both until every feed "
            "is at the host's head and Group.feed() shows every post"
        )
    for name, layers in (spent or {}).items():
        from bench.catch_up import layer_summary

        notes.append(
            f"where the {name} catch-up of {profiled:,} posts spends its time (cProfile, own "
            f"time by layer): {layer_summary(layers)}"
        )
    return Report(figures=figures, notes=notes)


def figures(
    quick: bool = False,
    *,
    posts: int | None = None,
    groups: int | None = None,
    per_member: int | None = None,
    repeat: int | None = None,
    catch_up: int | None = None,
) -> Report:
    """The keeper figures for ``python -m bench``: pushes of 3,000 posts once, 100 groups
    and a catch-up of 3,000 posts (quick), or 24,000 posts median of 3, 1,000 groups and a
    catch-up of 20,000 posts median of 3, profiled (full); 20 items per member; a 0 skips
    that part."""
    from bench import keeper_catch_up

    posts = posts if posts is not None else (3_000 if quick else 24_000)
    groups = groups if groups is not None else (100 if quick else 1_000)
    per_member = per_member or 20
    repeat = repeat or (1 if quick else 3)
    catch_up = catch_up if catch_up is not None else (3_000 if quick else 20_000)
    records = post_records(posts)
    rate = measure_pushes(records, repeat)
    foot = measure_footprint(groups, per_member, records)
    caught, spent = keeper_catch_up.measure([catch_up], repeat, catch_up) if catch_up else ([], {})
    return report(rate, foot, caught, spent, catch_up)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=24_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--per-member", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--catch-up", type=int, default=20_000, help="posts (0: skip)")
    args = parser.parse_args()
    from bench.report import table

    done = figures(
        posts=args.posts,
        groups=args.groups,
        per_member=args.per_member,
        repeat=args.repeat,
        catch_up=args.catch_up,
    )
    print(table(done.figures))
    for note in done.notes:
        print(f"  {note}")


if __name__ == "__main__":
    main()
