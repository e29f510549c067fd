"""Feed append and ingest throughput vs. the raw floor on this machine, in one run.

    python -m bench.feed_ingest [--entries 50000] [--batch 1000] [--repeat 3]

* **append**: sign + store our own entries (``microsync.feed.append``), ``batch`` per
  transaction.
* **ingest**: validate + store them on a second profile as a receiving peer would
  (``microsync.feed.ingest_many``: strict decode, rules, Ed25519 verify, body hash, insert).
* **raw send floor**: PyNaCl Ed25519 sign of the same header bytes + batched SQLite insert
  of the same bytes into a bare table.
* **raw receive floor**: PyNaCl Ed25519 verify of the same bytes + the same batched insert.

Both sides use the same SQLite settings (WAL, synchronous=FULL) and one core. Each figure is the
median of ``--repeat`` runs; the machine swings ±30% between runs, so read the ratios.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nacl.bindings as sodium

from microsync.crypto import labels
from microsync.crypto.labels import frame
from microsync.feed import Entry, GroupId, append, ingest_many
from microsync.feed.trust import add_certificate
from microsync.identity import LocalIdentity
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
    workdir: Path, identity: LocalIdentity, made: list[tuple[Entry, bytes]], batch: int
) -> float:
    store = SqliteStore.open(workdir)
    add_certificate(store, identity.certificate)
    items = [(entry.wire, body) for entry, body in made]
    start = time.perf_counter()
    for first in range(0, len(items), batch):
        results = ingest_many(store, GROUP, items[first : first + batch])
        assert all(not isinstance(r, Exception) for r in results), "benchmark input was rejected"
    elapsed = time.perf_counter() - start
    assert store.feed_status(GROUP, identity.device_id).head_seq == len(items)
    store.close()
    return elapsed


def _raw_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE entries (id BLOB PRIMARY KEY, wire BLOB, body BLOB) WITHOUT ROWID")
    return db


def run_raw(
    path: Path, made: list[tuple[Entry, bytes]], batch: int, crypto: Callable[[bytes, bytes], None]
) -> float:
    """``crypto(header_bytes, signature)`` per entry, then a batched insert of the same bytes."""
    db = _raw_db(path)
    rows = [(e.id, e.wire, body, e.header_bytes, e.signature) for e, body in made]
    start = time.perf_counter()
    for first in range(0, len(rows), batch):
        db.execute("BEGIN")
        for entry_id, wire, body, header_bytes, signature in rows[first : first + batch]:
            crypto(header_bytes, signature)
            db.execute("INSERT INTO entries VALUES (?, ?, ?)", (entry_id, wire, body))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.entries
    times: dict[str, list[float]] = {k: [] for k in ("append", "ingest", "raw_send", "raw_receive")}
    label = frame(labels.ENTRY_SIGNATURE)
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="microsync-bench-") as tmp:
            work = Path(tmp)
            identity, made, t_append = make_entries(work, n, args.batch)
            secret = sodium.crypto_sign_seed_keypair(identity.device_key.secret_bytes())[1]
            public = bytes(identity.device_key.public)

            def raw_sign(header_bytes: bytes, _sig: bytes, secret: bytes = secret) -> None:
                sodium.crypto_sign(label + header_bytes, secret)

            def raw_verify(header_bytes: bytes, sig: bytes, public: bytes = public) -> None:
                sodium.crypto_sign_open(sig + label + header_bytes, public)

            times["append"].append(t_append)
            times["ingest"].append(run_ingest(work / f"target{run}", identity, made, args.batch))
            times["raw_send"].append(run_raw(work / "raw_send.db", made, args.batch, raw_sign))
            times["raw_receive"].append(run_raw(work / "raw_recv.db", made, args.batch, raw_verify))
    rate = {k: n / statistics.median(v) for k, v in times.items()}
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


if __name__ == "__main__":
    main()
