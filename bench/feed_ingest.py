"""Feed append and ingest throughput vs. the raw floor on this machine, in one run.

    python -m bench.feed_ingest [--entries 50000] [--batch 1000] [--repeat 3]

* **append**: sign + store our own entries (``microsync.feed.append``), ``batch`` per
  transaction.
* **ingest**: validate + store them on a second profile as a receiving peer would
  (``microsync.feed.ingest_many``: strict decode, rules, Ed25519 verify, body hash, insert).
* **raw send floor**: PyNaCl Ed25519 sign of the same header bytes + a durable insert of the
  same wire and body bytes into a bare table with an integer key, ``batch`` rows per
  ``executemany`` and transaction (``bench/floors.py``).
* **raw receive floor**: PyNaCl Ed25519 verify of the same bytes + the same batched insert.
* **ingest, both cores**: the same ingest with the batch's signatures shared between one thread
  per core (``verify=microsync.node.parallel.verify_in_threads``, what a device passes),
  against the same single-core floor: the one figure here that may go below 1.

Both sides use the same SQLite settings (WAL, synchronous=FULL) and one core. Each figure is the
median of ``--repeat`` runs; the machine swings ±30% between runs, so read the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import nacl.bindings as sodium

from bench.floors import receive_floor, receive_work, send_floor
from bench.report import Figure, Report
from microsync.crypto.batch import BatchVerify, verify_many
from microsync.feed import Entry, GroupId, append, ingest_many
from microsync.feed.trust import add_certificate
from microsync.identity import LocalIdentity
from microsync.node.parallel import verify_in_threads
from microsync.storage.sqlite import SqliteStore

GROUP = GroupId(b"B" * 32)


def make_entries(
    workdir: Path, count: int, batch: int
) -> tuple[LocalIdentity, list[tuple[Entry, bytes]], float]:
    identity = LocalIdentity.create("bench", os.urandom, 0)
    store = SqliteStore.open(workdir / "source")
    add_certificate(store, identity.certificate)
    made: list[tuple[Entry, bytes]] = []
    start = time.perf_counter()
    for first in range(0, count, batch):
        with store.transaction():
            for i in range(first, min(first + batch, count)):
                body = os.urandom(200)
                entry = append(
                    store, identity.device_key, group=GROUP, type=1, body=body, epoch=0, hlc=i
                )
                made.append((entry, body))
    elapsed = time.perf_counter() - start
    store.close()
    return identity, made, elapsed


def run_ingest(
    workdir: Path,
    identity: LocalIdentity,
    made: list[tuple[Entry, bytes]],
    batch: int,
    verify: BatchVerify = verify_many,
) -> float:
    store = SqliteStore.open(workdir)
    add_certificate(store, identity.certificate)
    items = [(entry.wire, body) for entry, body in made]
    start = time.perf_counter()
    for first in range(0, len(items), batch):
        results = ingest_many(store, GROUP, items[first : first + batch], verify=verify)
        assert all(not isinstance(r, Exception) for r in results), "benchmark input was rejected"
    elapsed = time.perf_counter() - start
    assert store.feed_status(GROUP, identity.device_id).head_seq == len(items)
    store.close()
    return elapsed


def measure(entries: int, batch: int, repeat: int) -> dict[str, float]:
    """Entries per second of each path (the median of ``repeat`` runs)."""
    paths = ("append", "ingest", "ingest_threads", "raw_send", "raw_receive")
    times: dict[str, list[float]] = {k: [] for k in paths}
    for run in range(repeat):
        with tempfile.TemporaryDirectory(prefix="microsync-bench-") as tmp:
            work = Path(tmp)
            identity, made, t_append = make_entries(work, entries, batch)
            items: list[tuple[bytes, bytes | None]] = [(e.wire, body) for e, body in made]
            secret = sodium.crypto_sign_seed_keypair(identity.device_key.secret_bytes())[1]
            times["append"].append(t_append)
            times["ingest"].append(run_ingest(work / f"target{run}", identity, made, batch))
            threaded = run_ingest(work / f"both{run}", identity, made, batch, verify_in_threads)
            times["ingest_threads"].append(threaded)
            times["raw_send"].append(send_floor(work / "raw_send.db", items, secret, batch))
            verify_only = receive_work(items, decrypt=False)  # ingest stores bodies as they are
            times["raw_receive"].append(receive_floor(work / "raw_recv.db", verify_only, batch))
    return {k: entries / statistics.median(v) for k, v in times.items()}


def figures(
    quick: bool = False, *, entries: int | None = None, repeat: int | None = None
) -> Report:
    """For ``python -m bench``: 5,000 entries once (quick) or 50,000, median of 3 (full);
    ``entries`` and ``repeat`` override the mode's."""
    entries = entries or (5_000 if quick else 50_000)
    repeat = repeat or (1 if quick else 3)
    rate = measure(entries, 1_000, repeat)
    return Report(
        figures=[
            Figure(
                bench="feed_ingest",
                measure=f"append {entries:,} entries (sign + store)",
                value=f"{rate['append']:,.0f} entries/s",
                floor=f"{rate['raw_send']:,.0f} entries/s",
                ratio=rate["raw_send"] / rate["append"],
            ),
            Figure(
                bench="feed_ingest",
                measure=f"ingest {entries:,} entries (validate + store)",
                value=f"{rate['ingest']:,.0f} entries/s",
                floor=f"{rate['raw_receive']:,.0f} entries/s",
                ratio=rate["raw_receive"] / rate["ingest"],
                target="<= 1.43",
            ),
            Figure(
                bench="feed_ingest",
                measure=f"ingest {entries:,} entries, signatures on both cores",
                value=f"{rate['ingest_threads']:,.0f} entries/s",
                floor=f"{rate['raw_receive']:,.0f} entries/s (one core)",
                ratio=rate["raw_receive"] / rate["ingest_threads"],
                target="< 1.00",
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.entries
    rate = measure(n, args.batch, args.repeat)
    print(
        f"feed_ingest: {n} entries, 200-byte bodies, "
        f"batches of {args.batch}, median of {args.repeat}"
    )
    print(f"  append (sign + store)           {rate['append']:>9,.0f} entries/s")
    print(f"  raw send floor (sign + insert)  {rate['raw_send']:>9,.0f} entries/s")
    print(f"  ingest (validate + store)       {rate['ingest']:>9,.0f} entries/s")
    print(f"  raw receive floor (verify + insert) {rate['raw_receive']:>5,.0f} entries/s")
    print(f"  append / raw send      = {rate['append'] / rate['raw_send']:.2f}")
    print(
        f"  ingest / raw receive   = {rate['ingest'] / rate['raw_receive']:.2f}  (target >= 0.70)"
    )
    both = rate["ingest_threads"]
    print(f"  ingest, signatures on both cores {both:>8,.0f} entries/s")
    print(f"  both cores / raw receive (one core) = {both / rate['raw_receive']:.2f}")


if __name__ == "__main__":
    main()
