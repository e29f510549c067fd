"""The floors: the physical work a path cannot avoid, done the cheapest honest way.

Every floor here does the same work as the path it is compared with, on the same bytes and with
the same durability, and nothing else:

* Ed25519 through PyNaCl's bindings (``crypto_sign`` / ``crypto_sign_open`` of the framed
  label and header bytes, the message the library signs), one call per entry;
* XChaCha20-Poly1305 through ``nacl.bindings``, one call per body, on ciphertexts as long as the
  real bodies with the header as associated data (a receiver's key is not public API; the AEAD's
  cost depends only on the lengths);
* one bare table with an integer key (``n INTEGER PRIMARY KEY``: the rowid B-tree, no second
  index) holding the same ``wire`` and ``body`` bytes, in WAL mode with ``synchronous=FULL``
  (the profile's durability: what was committed survives a power cut), or ``NORMAL`` where the
  path commits without an fsync (entries received in a sync session: they survive ``kill -9``,
  and a power cut rolls back to an earlier commit that the next sync makes good), ``batch``
  rows per ``executemany`` and per transaction.

Inputs (signed messages, ciphertexts, rows) are made before the clock starts.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings as sodium

from microsync.crypto import labels
from microsync.crypto.labels import frame
from microsync.feed import parse_entry

__all__ = ["ReceiveWork", "durable_db", "receive_floor", "receive_work", "send_floor"]

Item = tuple[bytes, bytes | None]
Row = tuple[int, bytes, bytes | None]
INSERT = "INSERT INTO entries VALUES (?, ?, ?)"


def durable_db(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A bare table with an integer key, as durable as a profile (WAL, ``synchronous=FULL``),
    or, with ``synchronous="NORMAL"``, as durable as entries received in a sync session (a
    commit ``kill -9`` cannot undo, without an fsync: ``SqliteStore.replaceable``)."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE entries (n INTEGER PRIMARY KEY, wire BLOB NOT NULL, body BLOB)")
    return db


def rows(items: Sequence[Item]) -> list[Row]:
    """The rows the floors insert: an integer key, then the same wire and body bytes."""
    return [(n, wire, body) for n, (wire, body) in enumerate(items, start=1)]


def _insert(db: sqlite3.Connection, batch: Sequence[Row]) -> None:
    db.execute("BEGIN")
    db.executemany(INSERT, batch)
    db.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class ReceiveWork:
    """Everything a receive floor needs, made before its clock starts."""

    signed: list[tuple[bytes, bytes]]  # (signature || label || header, device key)
    sealed: list[tuple[bytes, bytes, bytes] | None]  # (ciphertext, associated data, nonce)
    rows: list[Row]
    key: bytes


def receive_work(items: Sequence[Item], *, decrypt: bool = True) -> ReceiveWork:
    """The floor's inputs for ``items`` (``decrypt=False``: no AEAD, for plaintext bodies)."""
    label = frame(labels.ENTRY_SIGNATURE)
    key = os.urandom(32)
    signed: list[tuple[bytes, bytes]] = []
    sealed: list[tuple[bytes, bytes, bytes] | None] = []
    for wire, body in items:
        entry = parse_entry(wire)
        signed.append((entry.signature + label + entry.header_bytes, entry.header.device))
        if decrypt and body:
            nonce, ad = os.urandom(24), entry.header_bytes
            plain = os.urandom(max(0, len(body) - 24 - 16))  # nonce and tag are in the body
            ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, key)
            sealed.append((ct, ad, nonce))
        else:
            sealed.append(None)
    return ReceiveWork(signed, sealed, rows(items), key)


def receive_floor(
    path: Path, work: ReceiveWork, batch: int = 1_000, *, synchronous: str = "FULL"
) -> float:
    """Seconds to verify, decrypt and durably insert everything in ``work`` (``synchronous``:
    as :func:`durable_db`, the durability of the path it is compared with)."""
    db = durable_db(path, synchronous)
    verify = sodium.crypto_sign_open
    decrypt = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt
    key = work.key
    start = time.perf_counter()
    for first in range(0, len(work.rows), batch):
        for signed, device in work.signed[first : first + batch]:
            verify(signed, device)
        for sealed in work.sealed[first : first + batch]:
            if sealed is not None:
                decrypt(sealed[0], sealed[1], sealed[2], key)
        _insert(db, work.rows[first : first + batch])
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def send_floor(path: Path, items: Sequence[Item], secret: bytes, batch: int = 1_000) -> float:
    """Seconds to sign every entry's header (Ed25519 secret key ``secret``) and durably insert
    the same bytes."""
    label = frame(labels.ENTRY_SIGNATURE)
    messages = [label + parse_entry(wire).header_bytes for wire, _ in items]
    table = rows(items)
    db = durable_db(path)
    sign = sodium.crypto_sign
    start = time.perf_counter()
    for first in range(0, len(table), batch):
        for message in messages[first : first + batch]:
            sign(message, secret)
        _insert(db, table[first : first + batch])
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed
