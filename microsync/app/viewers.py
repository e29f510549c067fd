"""A location for one viewer device: signed by the sharer's device, encrypted to the viewer
device's signed prekey, never under a group key. Sans-IO.

Wire format (canonical CBOR, at most :data:`MAX_ENVELOPE` bytes)::

    envelope = [2, sender, recipient, issued_at, expires_at, prekey id, eph, nonce, ciphertext,
                signature]
    key = derive(VIEWER_LOCATION_KEY, X25519(eph, recipient prekey), eph || prekey)
    ciphertext = XChaCha20-Poly1305(key, nonce, inner,
                                    AD=[2, group, sender, recipient, issued_at, expires_at, eph])
    inner = [body, padding]   (an announcement body: a location or a stop, same times)
    signature = Ed25519(sender device key,
                        VIEWER_LOCATION_SIGNATURE || [group, the envelope's first nine fields])

Theory of operation. The clear fields (who to whom, when) are for carrying: an envelope only
ever travels to its recipient and to devices of the sharer's or the recipient's own person,
who pass it on to the recipient (``ViewerBoard.may_hold`` in :mod:`microsync.app.location`);
no other member's device is sent one, stores one, or could open one. Only the recipient opens
it; whether it is a location or a stop is inside, padded to one size (512 bytes of plaintext).
A carrier checks the signature, so nobody can make it hold a forged envelope in place of the
real one; the recipient checks it too, and that the body's
times are the clear ones. The signature names the recipient and the AEAD binds the sender: a
viewer cannot pass its copy on as if it had been shared with someone else, and nobody can
re-sign another's envelope as their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.app.ephemeral import MAX_TTL_MS, Announcement, AnnouncementKind, open_body
from microsync.crypto import (
    SigningKey,
    SymmetricKey,
    VerifyKey,
    X25519PublicKey,
    X25519SecretKey,
    derive_key,
    labels,
)
from microsync.crypto.random import Rng
from microsync.encoding import expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import GroupId
from microsync.identity import DeviceId

__all__ = [
    "MAX_ENVELOPE",
    "VERSION",
    "Envelope",
    "is_envelope",
    "open_envelope",
    "read_envelope",
    "seal_for",
]

VERSION: Final = 2
"""First field of an envelope (a group announcement's is 1)."""
MAX_ENVELOPE: Final = 2048
_PAD: Final = 512  # one size for every envelope: a stop, or a location with the longest label
_NONCE: Final = 24
_LOCATION_KINDS: Final = (AnnouncementKind.LOCATION, AnnouncementKind.LOCATION_STOPPED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A parsed envelope whose signature checked (its content still sealed)."""

    sender: DeviceId
    recipient: DeviceId
    issued_at: int
    expires_at: int
    prekey_id: int
    eph: bytes
    nonce: bytes
    ciphertext: bytes
    data: bytes  # the envelope as received, to pass on unchanged


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` has an envelope's header (a 10-item array, version 2), not a group
    announcement's (a 5-item array, version 1). Says nothing of its validity."""
    return bytes(data[:2]) == b"\x8a\x02"


def _key(shared: bytes, eph: bytes, prekey: bytes) -> SymmetricKey:
    return SymmetricKey(derive_key(labels.VIEWER_LOCATION_KEY, shared, eph + prekey))


def _ad(group: GroupId, e: Envelope | tuple[DeviceId, DeviceId, int, int, bytes]) -> bytes:
    if isinstance(e, Envelope):
        e = (e.sender, e.recipient, e.issued_at, e.expires_at, e.eph)
    sender, recipient, issued, expires, eph = e
    return encoding.encode([VERSION, bytes(group), sender, recipient, issued, expires, eph])


def seal_for(
    announcement: Announcement,
    *,
    group: GroupId,
    recipient: DeviceId,
    prekey_id: int,
    prekey: X25519PublicKey,
    signer: SigningKey,
    rng: Rng,
) -> bytes:
    """Sign ``announcement`` (a location or a stop) and encrypt it to ``recipient``'s prekey."""
    a = announcement
    if a.kind not in _LOCATION_KINDS:
        raise ValueError("only a location or a stop is sent to one viewer")
    if bytes(signer.public) != a.device:
        raise ValueError("the signer must be the sharing device")
    eph = X25519SecretKey.generate(rng)
    eph_public = bytes(eph.public)
    body = a.body()
    unpadded = len(encoding.encode([body, b""]))
    inner = encoding.encode([body, bytes(-(unpadded + 2) % _PAD)])
    nonce = rng(_NONCE)
    clear = (a.device, recipient, a.issued_at, a.expires_at, eph_public)
    key = _key(eph.exchange(prekey), eph_public, bytes(prekey))
    ciphertext = key.encrypt(nonce, inner, _ad(group, clear))
    fields: list[encoding.Value] = [VERSION, a.device, bytes(recipient), a.issued_at]
    fields += [a.expires_at, prekey_id, eph_public, nonce, ciphertext]
    signature = signer.sign(labels.VIEWER_LOCATION_SIGNATURE, encoding.encode([group, fields]))
    return encoding.encode([*fields, signature])


def read_envelope(data: bytes, *, group: GroupId) -> Envelope:
    """Parse ``data`` and check its signature (by the sender it names). Raises
    :class:`DecodeError` (malformed) or :class:`~microsync.errors.BadSignature`."""
    if len(data) > MAX_ENVELOPE:
        raise DecodeError("envelope too large")
    items = expect_list(encoding.decode(data, max_size=MAX_ENVELOPE), "envelope", 10)
    if items[0] != VERSION:
        raise DecodeError("envelope: unknown version")
    e = Envelope(
        sender=DeviceId(expect_bytes(items[1], "sender", 32)),
        recipient=DeviceId(expect_bytes(items[2], "recipient", 32)),
        issued_at=expect_int(items[3], "issued_at"),
        expires_at=expect_int(items[4], "expires_at"),
        prekey_id=expect_int(items[5], "prekey id"),
        eph=expect_bytes(items[6], "eph", 32),
        nonce=expect_bytes(items[7], "nonce", _NONCE),
        ciphertext=expect_bytes(items[8], "ciphertext", max_size=MAX_ENVELOPE),
        data=bytes(data),
    )
    if not e.issued_at < e.expires_at <= e.issued_at + MAX_TTL_MS:
        raise DecodeError("envelope: bad lifetime")
    signature = expect_bytes(items[9], "signature", 64)
    signed = encoding.encode([group, items[:9]])
    VerifyKey(e.sender).verify(labels.VIEWER_LOCATION_SIGNATURE, signed, signature)
    return e


def open_envelope(
    envelope: Envelope, *, group: GroupId, prekeys: dict[int, X25519SecretKey]
) -> Announcement:
    """Decrypt an envelope addressed to this device (holding ``prekeys``): the location or
    stop inside. Any failure to open is one :class:`DecryptionError`; a body that does not
    match the clear fields is a :class:`DecodeError`."""
    e = envelope
    secret = prekeys.get(e.prekey_id)
    if secret is None:
        raise DecryptionError()
    shared = secret.exchange(X25519PublicKey(e.eph))
    inner = _key(shared, e.eph, bytes(secret.public)).decrypt(e.nonce, e.ciphertext, _ad(group, e))
    body, _padding = expect_list(encoding.decode(inner, max_size=MAX_ENVELOPE), "inner", 2)
    a = open_body(e.sender, expect_bytes(body, "body", max_size=1024))
    if a.kind not in _LOCATION_KINDS or (a.issued_at, a.expires_at) != (
        e.issued_at,
        e.expires_at,
    ):
        raise DecodeError("envelope: the body does not match its envelope")
    return a
