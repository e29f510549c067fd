"""Snapshots of a group's app state: load snapshot + tail instead of replaying all history.
Sans-IO.

Replaying a group from its feeds costs, per entry, a body decryption and a strict decode of the
operation (the fold itself is cheap, ~150,000 ops/s; see ``docs/benchmarks.md``). A snapshot
keeps the opened operations the fold applied, so a restart folds them again without touching the
crypto, then replays only the *tail*: the entries stored after the snapshot's frontier.

**Trust rule: a snapshot never overrides signed entries.** It is a cache of the fold of entries
this device verified itself, and it is believed only while the store agrees with it:

* it is sealed and signed by this device (XChaCha20-Poly1305 under a key derived from the device
  key, plus an Ed25519 signature by the device key): another device's snapshot, or a modified
  one, is ignored;
* it names the frontier it covers, ``feed -> (seq, entry id)``; every one of those entries must
  be in the store with that id, or the snapshot is ignored and the group is replayed in full;
* entries of the store beyond the frontier are folded on top (the tail), by the same rules as
  ever; entries the snapshot could not open yet (no key) are retried from the store;
* it never holds what was purged: deleted and expired posts appear in it only as tombstones, and
  any purge drops the stored snapshot at once.

Wire format: ``[1, group, device, nonce, ciphertext, signature]`` where the ciphertext seals
``[frontier, entries, locked]`` and the signature covers everything before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.app.ops import AppOp
from microsync.app.timeline import AppEntry
from microsync.crypto import SigningKey, SymmetricKey, VerifyKey, derive_key, labels
from microsync.crypto.random import Rng
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError
from microsync.feed.entry import EntryId, GroupId
from microsync.identity import DeviceId, PersonId

__all__ = ["MAX_SNAPSHOT", "Snapshot", "open_snapshot", "seal_snapshot"]

_VERSION: Final = 1
MAX_SNAPSHOT: Final = 1 << 30
_NONCE: Final = 24
_ID: Final = 32


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a snapshot holds: the frontier it covers, the applied (and waiting) operations in
    the order they were applied, and the entries it could not open yet."""

    frontier: Mapping[DeviceId, tuple[int, EntryId]]
    entries: tuple[AppEntry, ...]
    locked: tuple[tuple[DeviceId, int], ...]


def _key(signer: SigningKey) -> SymmetricKey:
    return SymmetricKey(derive_key(labels.SNAPSHOT_KEY, signer.secret_bytes()))


def _entry(e: AppEntry) -> Value:
    return [e.id, e.device, e.person, e.seq, e.hlc, list(e.deps), e.op.to_bytes()]


def seal_snapshot(snapshot: Snapshot, *, group: GroupId, signer: SigningKey, rng: Rng) -> bytes:
    """Encode, encrypt and sign ``snapshot`` for this device only."""
    plain = encoding.encode(
        [
            [[d, s, i] for d, (s, i) in sorted(snapshot.frontier.items())],
            [_entry(e) for e in snapshot.entries],
            [[d, s] for d, s in snapshot.locked],
        ]
    )
    nonce = rng(_NONCE)
    device = bytes(signer.public)
    sealed = _key(signer).encrypt(nonce, plain, encoding.encode([bytes(group), device]))
    head: list[Value] = [_VERSION, bytes(group), device, nonce, sealed]
    signature = signer.sign(labels.SNAPSHOT_SIGNATURE, encoding.encode(head))
    return encoding.encode([*head, signature])


def open_snapshot(data: bytes, *, group: GroupId, signer: SigningKey) -> Snapshot:
    """Verify and open a snapshot this device sealed for ``group``.

    :class:`DecodeError`, :class:`~microsync.errors.BadSignature` or
    :class:`~microsync.errors.DecryptionError` for anything else (another device's snapshot, a
    modified one, another group's).
    """
    items = expect_list(encoding.decode(data, max_size=MAX_SNAPSHOT), "snapshot", 6)
    version, for_group, device, nonce, sealed, signature = items
    if version != _VERSION:
        raise DecodeError("snapshot: unknown version")
    if for_group != bytes(group) or device != bytes(signer.public):
        raise DecodeError("snapshot: not this device's snapshot of this group")
    VerifyKey(bytes(signer.public)).verify(
        labels.SNAPSHOT_SIGNATURE,
        encoding.encode(items[:5]),
        expect_bytes(signature, "signature", 64),
    )
    plain = _key(signer).decrypt(
        expect_bytes(nonce, "nonce", _NONCE),
        expect_bytes(sealed, "ciphertext", max_size=MAX_SNAPSHOT),
        encoding.encode([bytes(group), bytes(signer.public)]),
    )
    frontier_v, entries_v, locked_v = expect_list(
        encoding.decode(plain, max_size=MAX_SNAPSHOT), "snapshot body", 3
    )
    frontier: dict[DeviceId, tuple[int, EntryId]] = {}
    for item in expect_list(frontier_v, "frontier"):
        d, s, i = expect_list(item, "frontier item", 3)
        frontier[DeviceId(expect_bytes(d, "device", _ID))] = (
            expect_int(s, "seq"),
            EntryId(expect_bytes(i, "entry id", _ID)),
        )
    entries = tuple(_open_entry(v) for v in expect_list(entries_v, "entries"))
    locked = tuple(
        (DeviceId(expect_bytes(p[0], "device", _ID)), expect_int(p[1], "seq"))
        for p in (expect_list(v, "locked", 2) for v in expect_list(locked_v, "locked"))
    )
    return Snapshot(frontier, entries, locked)


def _open_entry(value: Value) -> AppEntry:
    i, d, p, s, h, deps, op = expect_list(value, "snapshot entry", 7)
    return AppEntry(
        EntryId(expect_bytes(i, "id", _ID)),
        DeviceId(expect_bytes(d, "device", _ID)),
        PersonId(expect_bytes(p, "person", _ID)),
        expect_int(s, "seq"),
        expect_int(h, "hlc"),
        tuple(EntryId(expect_bytes(x, "dep", _ID)) for x in expect_list(deps, "deps")),
        AppOp.from_bytes(expect_bytes(op, "op", max_size=1 << 20)),
    )
