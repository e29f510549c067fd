"""Epoch keys, key wraps and content encryption for groups. Sans-IO.

Theory of operation
-------------------
An **epoch** is one random 32-byte root key. Two keys are derived from it:

* the *content key* (``EPOCH_CONTENT_KEY``) encrypts content entries;
* the *control key* (``EPOCH_CONTROL_KEY``) encrypts membership operations.

A member who joins a ``history="none"`` group receives only the control keys of earlier
epochs: enough to check who is in the group, never enough to read what was said.

An epoch is named by its number and its **commitment**
``BLAKE2b(EPOCH_COMMITMENT || group || number || root)``, announced inside the (signed,
encrypted) operation that starts the epoch. A key received from anywhere is accepted only if it
matches an announced commitment, so nobody can inject a key of their own. Entries carry the first
16 bytes of the commitment (the *key ref*) so a reader knows which key of an epoch number to use
when two rotations raced.

**Key wraps** move a 32-byte bundle key to each recipient device: one ephemeral X25519 key per
bundle, a DH with each recipient's signed prekey, a wrap key
``derive(KEY_WRAP, dh, eph || prekey)``, and XChaCha20-Poly1305 with associated data binding
group, epoch, sender device, recipient device and purpose. A blinded 8-byte tag
``BLAKE2b(KEY_WRAP_TAG || eph || device)`` lets a recipient find its wrap without the wire
naming devices. The bundle key then opens the bundle's payload (a list of epoch keys).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.crypto import (
    SymmetricKey,
    X25519PublicKey,
    X25519SecretKey,
    derive_key,
    labelled_hash,
    labels,
)
from microsync.crypto.random import Rng
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import GroupId
from microsync.identity import DeviceId

__all__ = [
    "KEY_REF_SIZE",
    "EpochKey",
    "KeyGrant",
    "Purpose",
    "Recipient",
    "commitment",
    "commitment_of",
    "content_check",
    "decrypt_content",
    "discovery_tag",
    "encrypt_content",
    "open_bundle",
    "rendezvous_id",
    "seal_bundle",
]

KEY_REF_SIZE: Final = 16
_NONCE: Final = 24
_ZERO_NONCE: Final = bytes(_NONCE)  # every wrap key and bundle key is used exactly once
_TAG: Final = 8
_KEY: Final = 32
MAX_BUNDLE_PAYLOAD: Final = 256 * 1024


class Purpose(enum.IntEnum):
    """Why a bundle was wrapped; bound into every wrap's associated data."""

    ROTATION = 1  # a new epoch for every entitled device
    HISTORY = 2  # earlier epochs for a joiner or a newly linked device
    KEY_RESPONSE = 3  # an answer to a key request


def content_check(group: GroupId, number: int, root: bytes) -> bytes:
    """A hash of epoch ``number``'s root: what a control-only holder keeps in its place."""
    return labelled_hash(labels.EPOCH_CONTENT_CHECK, group, number.to_bytes(8, "big"), root)


def commitment_of(group: GroupId, number: int, control: bytes, check: bytes) -> bytes:
    """The public commitment to an epoch, from its control key and its :func:`content_check`:
    ``H(EPOCH_COMMITMENT, group, number, control, check)``. A full grant (the root) and a
    control-only grant (control key + check) can both be verified against it."""
    return labelled_hash(labels.EPOCH_COMMITMENT, group, number.to_bytes(8, "big"), control, check)


def commitment(group: GroupId, number: int, root: bytes) -> bytes:
    """The public commitment to epoch ``number``, from its root key."""
    control = derive_key(labels.EPOCH_CONTROL_KEY, root)
    return commitment_of(group, number, control, content_check(group, number, root))


@dataclass(frozen=True, slots=True)
class EpochKey:
    """What a device holds of one epoch: always the control key, the content key if entitled.

    ``root`` is ``None`` for a control-only grant (a ``history="none"`` joiner's view of an
    epoch from before it joined).
    """

    number: int
    commitment: bytes
    control: SymmetricKey
    root: bytes | None
    check: bytes  # content_check(group, number, root): lets a control-only key be verified

    @classmethod
    def from_root(cls, group: GroupId, number: int, root: bytes) -> EpochKey:
        control = derive_key(labels.EPOCH_CONTROL_KEY, root)
        check = content_check(group, number, root)
        return cls(
            number=number,
            commitment=commitment_of(group, number, control, check),
            control=SymmetricKey(control),
            root=root,
            check=check,
        )

    @property
    def ref(self) -> bytes:
        return self.commitment[:KEY_REF_SIZE]

    @property
    def content(self) -> SymmetricKey | None:
        if self.root is None:
            return None
        return SymmetricKey(derive_key(labels.EPOCH_CONTENT_KEY, self.root))

    def control_only(self) -> EpochKey:
        return EpochKey(self.number, self.commitment, self.control, None, self.check)

    def __repr__(self) -> str:
        kind = "full" if self.root is not None else "control-only"
        return f"EpochKey({self.number}, {self.commitment[:4].hex()}, {kind})"


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """One epoch key as carried in a bundle: ``[number, commitment, full, key, check]``.

    Full: ``key`` is the root and ``check`` is empty. Control-only: ``key`` is the control key
    and ``check`` the epoch's :func:`content_check`. Either way :meth:`open` verifies the key
    against the commitment, so a grant can only ever carry the key an epoch announced.
    ``repr`` shows the epoch number, a prefix of the (public) commitment and the kind, never
    ``key``.
    """

    number: int
    commitment: bytes
    key: bytes  # the root when ``full``, else the control key
    full: bool
    check: bytes = b""

    @classmethod
    def of(cls, epoch: EpochKey, full: bool) -> KeyGrant:
        if full and epoch.root is None:
            raise ValueError("cannot grant a full key from a control-only one")
        if full and epoch.root is not None:
            return cls(epoch.number, epoch.commitment, epoch.root, True)
        return cls(epoch.number, epoch.commitment, epoch.control.secret_bytes(), False, epoch.check)

    def to_value(self) -> Value:
        return [self.number, self.commitment, self.full, self.key, self.check]

    @classmethod
    def from_value(cls, value: Value) -> KeyGrant:
        number, digest, full, key, check = expect_list(value, "grant", 5)
        if type(full) is not bool:
            raise DecodeError("grant: full must be a boolean")
        checked = expect_bytes(check, "check", max_size=_KEY)
        if len(checked) != (0 if full else _KEY):
            raise DecodeError("grant: a check goes with a control-only key, and only then")
        return cls(
            expect_int(number, "epoch"),
            expect_bytes(digest, "commitment", _KEY),
            expect_bytes(key, "key", _KEY),
            full,
            checked,
        )

    def __repr__(self) -> str:
        kind = "full" if self.full else "control-only"
        return f"KeyGrant({self.number}, {self.commitment[:4].hex()}, {kind})"

    def open(self, group: GroupId) -> EpochKey:
        """The key this grant carries, checked against the commitment it names
        (:class:`DecryptionError` if it does not match)."""
        if self.full:
            epoch = EpochKey.from_root(group, self.number, self.key)
            if epoch.commitment != self.commitment:
                raise DecryptionError()
            return epoch
        if commitment_of(group, self.number, self.key, self.check) != self.commitment:
            raise DecryptionError()
        return EpochKey(self.number, self.commitment, SymmetricKey(self.key), None, self.check)


@dataclass(frozen=True, slots=True)
class Recipient:
    """A device a bundle is wrapped to, at its current signed prekey."""

    device: DeviceId
    prekey_id: int
    prekey: X25519PublicKey


def _tag(eph: bytes, device: DeviceId) -> bytes:
    return labelled_hash(labels.KEY_WRAP_TAG, eph, device)[:_TAG]


def _wrap_ad(
    group: GroupId, epoch: int, sender: DeviceId, recipient: DeviceId, purpose: Purpose
) -> bytes:
    return encoding.encode([group, epoch, sender, recipient, int(purpose)])


def _wrap_ads(
    group: GroupId, epoch: int, sender: DeviceId, purpose: Purpose
) -> Callable[[DeviceId], bytes]:
    """:func:`_wrap_ad` for many recipients: the same bytes, the parts that do not name the
    recipient encoded once (a CBOR array is its header and its items' encodings in a row)."""
    head = b"\x85" + b"".join(encoding.encode(v) for v in (group, epoch, sender))
    tail = encoding.encode(int(purpose))

    def wrap_ad(recipient: DeviceId) -> bytes:
        if type(recipient) is bytes and len(recipient) == _KEY:  # a device id: written out
            return b"".join((head, _ID_HEAD, recipient, tail))
        return b"".join((head, encoding.encode(recipient), tail))

    return wrap_ad


_ID_HEAD: Final = b"\x58\x20"  # CBOR: a byte string of 32 bytes (one-byte length follows)


def _wrap_key(shared: bytes, eph: bytes, prekey: bytes) -> SymmetricKey:
    return SymmetricKey(derive_key(labels.KEY_WRAP, shared, eph + prekey))


def _bundle_ad(group: GroupId, epoch: int, sender: DeviceId, purpose: Purpose) -> bytes:
    return encoding.encode([group, epoch, sender, int(purpose)])


def seal_bundle(
    rng: Rng,
    *,
    group: GroupId,
    epoch: int,
    sender: DeviceId,
    purpose: Purpose,
    recipients: list[Recipient],
    grants: list[KeyGrant],
) -> Value:
    """Wrap ``grants`` to every recipient: ``[eph, [[tag, prekey_id, wrap], ...], payload]``.

    Cost per recipient: one X25519, two BLAKE2b, one AEAD of 32 bytes.
    """
    eph = X25519SecretKey.generate(rng)
    eph_public = bytes(eph.public)
    bundle_key = rng(_KEY)
    wraps: list[Value] = []
    wrap_ad = _wrap_ads(group, epoch, sender, purpose)
    for r in recipients:
        shared = eph.exchange(r.prekey)
        wrapped = _wrap_key(shared, eph_public, bytes(r.prekey)).encrypt(
            _ZERO_NONCE, bundle_key, wrap_ad(r.device)
        )
        wraps.append([_tag(eph_public, r.device), r.prekey_id, wrapped])
    payload = encoding.encode([g.to_value() for g in grants])
    sealed = SymmetricKey(bundle_key).encrypt(
        _ZERO_NONCE, payload, _bundle_ad(group, epoch, sender, purpose)
    )
    return [eph_public, wraps, sealed]


def open_bundle(
    bundle: Value,
    *,
    group: GroupId,
    epoch: int,
    sender: DeviceId,
    purpose: Purpose,
    me: DeviceId,
    prekeys: dict[int, X25519SecretKey],
) -> list[KeyGrant] | None:
    """The grants in ``bundle`` if it holds a wrap for ``me``; ``None`` if it holds none.

    A wrap for ``me`` that does not open (forged, moved from another group, epoch, sender or
    purpose, or wrapped to a prekey ``me`` no longer holds) raises :class:`DecryptionError`.
    """
    eph_value, wraps, sealed = expect_list(bundle, "bundle", 3)
    eph = expect_bytes(eph_value, "eph", _KEY)
    tag = _tag(eph, me)
    error: DecryptionError | None = None
    for wrap in expect_list(wraps, "wraps"):
        wrap_tag, prekey_id, wrapped = expect_list(wrap, "wrap", 3)
        if expect_bytes(wrap_tag, "tag", _TAG) != tag:
            continue
        secret = prekeys.get(expect_int(prekey_id, "prekey_id"))
        if secret is None:
            error = DecryptionError()
            continue
        try:
            shared = secret.exchange(X25519PublicKey(eph))
            bundle_key = _wrap_key(shared, eph, bytes(secret.public)).decrypt(
                _ZERO_NONCE,
                expect_bytes(wrapped, "wrapped", max_size=64),
                _wrap_ad(group, epoch, sender, me, purpose),
            )
            payload = SymmetricKey(bundle_key).decrypt(
                _ZERO_NONCE,
                expect_bytes(sealed, "payload", max_size=MAX_BUNDLE_PAYLOAD),
                _bundle_ad(group, epoch, sender, purpose),
            )
        except (DecryptionError, ValueError):
            error = DecryptionError()
            continue
        items = expect_list(encoding.decode(payload, max_size=MAX_BUNDLE_PAYLOAD), "grants")
        return [KeyGrant.from_value(item) for item in items]
    if error is not None:
        raise error
    return None


def _content_ad(
    group: GroupId, epoch: int, device: DeviceId, seq: int, type: int, ref: bytes
) -> bytes:
    """The content AD: canonical CBOR of ``[group, epoch, device, seq, type, ref]``.

    Written out directly for the fields an entry has (32-byte ids, a key ref, an epoch and a
    type under 256, a seq under 2**32): one AD per decrypt, so once per entry a catch-up
    folds. Anything else goes through :func:`encoding.encode`, the reference, which
    ``tests/test_catch_up_content_ad.py`` holds this to (same bytes, or the same error)."""
    if (
        group.__class__ is bytes
        and device.__class__ is bytes
        and ref.__class__ is bytes
        and len(group) == len(device) == 32
        and len(ref) == KEY_REF_SIZE
        and epoch.__class__ is type.__class__ is seq.__class__ is int
        and 0 <= epoch < 256
        and 0 <= type < 256
        and 0 <= seq < 0x100000000
    ):
        if seq < 256:
            position = _SMALL_UINTS[seq]
        elif seq < 0x10000:
            position = b"\x19" + seq.to_bytes(2, "big")
        else:
            position = b"\x1a" + seq.to_bytes(4, "big")
        small = _SMALL_UINTS
        return b"".join(
            (
                _AD_HEAD,
                group,
                small[epoch],
                _ID_HEAD,
                device,
                position,
                small[type],
                _REF_HEAD,
                ref,
            )
        )
    return encoding.encode([group, epoch, device, seq, type, ref])


_AD_HEAD: Final = b"\x86\x58\x20"  # an array of 6, then a byte string of 32 bytes (the group)
_REF_HEAD: Final = bytes([0x40 | KEY_REF_SIZE])  # a byte string of 16 bytes (the key ref)
# canonical CBOR of 0..255: one byte under 24, else 0x18 and the byte
_SMALL_UINTS: Final = tuple(bytes([n] if n < 24 else [0x18, n]) for n in range(256))


def encrypt_content(
    rng: Rng,
    key: SymmetricKey,
    ref: bytes,
    plaintext: bytes,
    *,
    group: GroupId,
    epoch: int,
    device: DeviceId,
    seq: int,
    type: int,
) -> bytes:
    """``ref || nonce || XChaCha20-Poly1305(key, nonce, plaintext, AD)`` where the AD binds
    group, epoch, device, seq, entry type and key ref: the body cannot be moved to any other
    entry, group or epoch."""
    nonce = rng(_NONCE)
    return (
        ref
        + nonce
        + key.encrypt(nonce, plaintext, _content_ad(group, epoch, device, seq, type, ref))
    )


def body_ref(body: bytes) -> bytes:
    """The key ref at the front of an encrypted body (``DecryptionError`` if too short)."""
    if len(body) < KEY_REF_SIZE + _NONCE + 16:
        raise DecryptionError()
    return body[:KEY_REF_SIZE]


def decrypt_content(
    key: SymmetricKey,
    body: bytes,
    *,
    group: GroupId,
    epoch: int,
    device: DeviceId,
    seq: int,
    type: int,
) -> bytes:
    """Inverse of :func:`encrypt_content`; any mismatch is one opaque :class:`DecryptionError`."""
    ref = body_ref(body)
    nonce = body[KEY_REF_SIZE : KEY_REF_SIZE + _NONCE]
    return key.decrypt(
        nonce, body[KEY_REF_SIZE + _NONCE :], _content_ad(group, epoch, device, seq, type, ref)
    )


def discovery_tag(epoch: EpochKey, bucket: int) -> bytes:
    """The opaque 8-byte LAN discovery tag for ``epoch`` in time bucket ``bucket``.

    Derived from the control key, so it changes with every rotation and members of any history
    setting compute the same value; outsiders cannot link tags across buckets or epochs.
    """
    return derive_key(
        labels.DISCOVERY_TAG, epoch.control.secret_bytes(), bucket.to_bytes(8, "big")
    )[:8]


def rendezvous_id(epoch: EpochKey, bucket: int) -> bytes:
    """The 32-byte relay rendezvous id for ``epoch`` in time bucket ``bucket``."""
    return derive_key(labels.RENDEZVOUS_ID, epoch.control.secret_bytes(), bucket.to_bytes(8, "big"))
