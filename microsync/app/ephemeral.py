"""Ephemeral announcements: presence and location, signed, encrypted, short-lived, never in a
feed. Sans-IO.

An announcement says "this device of this person is online" or "this person is about here"
for a limited time. It is not a feed entry: peers keep only the latest one per device and kind
(overwriting the previous), forget it when it expires, and pass the sealed bytes on to other
members (gossip) so it reaches devices the announcer is not connected to.

Wire format (canonical CBOR, at most :data:`MAX_ANNOUNCEMENT` bytes)::

    outer = [1, epoch number, key ref (16), nonce (24), ciphertext]
    ciphertext = XChaCha20-Poly1305(announcement key, nonce, inner, AD=[group, number, ref])
    inner = [device id, body, signature, padding]
    body = [kind, issued_at ms, expires_at ms, {field: value}]
    signature = Ed25519(device key, ANNOUNCEMENT_SIGNATURE || [group, number, ref, body])

The announcement key is derived from the epoch's *content* key, so only devices entitled to the
group's content can read where anyone is; the device id and signature are inside the
ciphertext, so the wire names nobody; ``inner`` is padded to a multiple of 256 bytes so a
location and a presence look alike. The signature binds group and epoch: an announcement cannot
be moved to another group, and a member cannot announce as another member's device.

Location coarsening (:func:`coarsen`) happens before any of this: with a precision coarser than
``"exact"``, the exact position is never encoded, encrypted or sent.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from microsync import encoding
from microsync.crypto import SigningKey, SymmetricKey, VerifyKey, derive_key, labels
from microsync.crypto.random import Rng
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError, DecryptionError, StaleAnnouncement
from microsync.feed.entry import GroupId
from microsync.group.keys import KEY_REF_SIZE, EpochKey
from microsync.identity import DeviceId

__all__ = [
    "GRID",
    "MAX_ANNOUNCEMENT",
    "MAX_FUTURE_MS",
    "MAX_LABEL",
    "MAX_TTL_MS",
    "Announcement",
    "AnnouncementKind",
    "Board",
    "coarsen",
    "open_announcement",
    "open_body",
    "seal_announcement",
]

_VERSION: Final = 1
MAX_ANNOUNCEMENT: Final = 2048
"""Largest sealed announcement accepted (bytes)."""
MAX_FUTURE_MS: Final = 5 * 60 * 1000
"""Clock tolerance: an announcement dated further ahead of the receiver's clock is refused."""
MAX_TTL_MS: Final = 7 * 24 * 3600 * 1000
"""Longest lifetime an announcement may claim."""
STATUSES: Final = ("online", "away", "offline")
MAX_LABEL: Final = 128
"""Longest place label on a location, in UTF-8 bytes."""
_PAD: Final = 256
_NONCE: Final = 24

GRID: Final[Mapping[str, int]] = {
    "exact": 1,  # 1 micro-degree: about 0.1 m
    "street": 1_000,  # 0.001 degree: about 110 m of latitude
    "city": 100_000,  # 0.1 degree: about 11 km
    "region": 1_000_000,  # 1 degree: about 110 km
}
"""Cell size of each precision, in micro-degrees."""


class AnnouncementKind(enum.IntEnum):
    PRESENCE = 1
    LOCATION = 2
    LOCATION_STOPPED = 3  # replaces an earlier location: "stopped sharing"

    @property
    def family(self) -> str:
        """Announcements of one family replace each other (per device)."""
        return "presence" if self is AnnouncementKind.PRESENCE else "location"


@dataclass(frozen=True, slots=True)
class Announcement:
    """An opened, signature-checked announcement (membership and freshness are checked by
    :class:`Board`). ``lat``/``lon`` are micro-degrees, already coarsened by the sender."""

    kind: AnnouncementKind
    device: DeviceId
    issued_at: int
    expires_at: int
    status: str | None = None
    lat: int | None = None
    lon: int | None = None
    precision: str | None = None
    label: str | None = None  # a place name the sharer gave (a location only)

    def body(self) -> bytes:
        fields: dict[str | int, Value] = {}
        if self.kind is AnnouncementKind.PRESENCE:
            fields["status"] = self.status
        elif self.kind is AnnouncementKind.LOCATION:
            fields.update(lat=self.lat, lon=self.lon, precision=self.precision)
            if self.label is not None:
                fields["label"] = self.label
        value: Value = [int(self.kind), self.issued_at, self.expires_at, fields]
        _check_body(value)
        return encoding.encode(value)


def coarsen(lat: float, lon: float, precision: str) -> tuple[int, int]:
    """Snap a position to the centre of its cell at ``precision``, in micro-degrees.

    Every position inside one cell gives the same result, so the output says nothing finer than
    the cell. ``ValueError`` for an unknown precision or a position off the globe.
    """
    if precision not in GRID:
        raise ValueError(f"precision is one of {', '.join(GRID)}")
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError("latitude and longitude must be finite numbers")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude is -90..90 and longitude -180..180")
    cell = GRID[precision]
    return (
        _snap(round(lat * 1_000_000), cell, 90_000_000),
        _snap(round(lon * 1_000_000), cell, 180_000_000),
    )


def _snap(micro: int, cell: int, limit: int) -> int:
    if cell == 1:
        return micro
    centre = (micro // cell) * cell + cell // 2
    # the cell at the edge of the range is cut short: keep its centre on the globe, still a
    # function of the cell alone
    return max(-limit, min(limit, centre))


def _announcement_key(epoch: EpochKey) -> SymmetricKey:
    content = epoch.content
    if content is None:
        raise DecryptionError()
    return SymmetricKey(derive_key(labels.ANNOUNCEMENT_KEY, content.secret_bytes()))


def _ad(group: GroupId, number: int, ref: bytes) -> bytes:
    return encoding.encode([bytes(group), number, ref])


def seal_announcement(
    announcement: Announcement,
    *,
    group: GroupId,
    epoch: EpochKey,
    signer: SigningKey,
    rng: Rng,
) -> bytes:
    """Sign and encrypt ``announcement`` for the members of ``group`` under ``epoch``."""
    if bytes(signer.public) != announcement.device:
        raise ValueError("the signer must be the announcing device")
    body = announcement.body()
    ref = epoch.ref
    signature = signer.sign(
        labels.ANNOUNCEMENT_SIGNATURE, encoding.encode([bytes(group), epoch.number, ref, body])
    )
    unpadded = len(encoding.encode([announcement.device, body, signature, b""]))
    padding = bytes(-(unpadded + 2) % _PAD)  # +2: the padding's own length header grows
    inner = encoding.encode([announcement.device, body, signature, padding])
    nonce = rng(_NONCE)
    sealed = _announcement_key(epoch).encrypt(nonce, inner, _ad(group, epoch.number, ref))
    return encoding.encode([_VERSION, epoch.number, ref, nonce, sealed])


def open_announcement(
    data: bytes, *, group: GroupId, key_for: Callable[[int, bytes], EpochKey | None]
) -> Announcement:
    """Decrypt and verify one sealed announcement.

    ``key_for(number, ref)`` finds the epoch key. Raises :class:`DecodeError` (malformed),
    :class:`DecryptionError` (no key, or not for this group), or
    :class:`~microsync.errors.BadSignature` (not signed by the device it names).
    """
    if len(data) > MAX_ANNOUNCEMENT:
        raise DecodeError("announcement too large")
    version, number, ref, nonce, sealed = expect_list(
        encoding.decode(data, max_size=MAX_ANNOUNCEMENT), "announcement", 5
    )
    if version != _VERSION:
        raise DecodeError("announcement: unknown version")
    number = expect_int(number, "epoch")
    ref = expect_bytes(ref, "key ref", KEY_REF_SIZE)
    nonce = expect_bytes(nonce, "nonce", _NONCE)
    sealed = expect_bytes(sealed, "ciphertext", max_size=MAX_ANNOUNCEMENT)
    epoch = key_for(number, ref)
    if epoch is None or epoch.content is None:
        raise DecryptionError()
    inner = _announcement_key(epoch).decrypt(nonce, sealed, _ad(group, number, ref))
    device, body, signature, _padding = expect_list(
        encoding.decode(inner, max_size=MAX_ANNOUNCEMENT), "announcement body", 4
    )
    device = DeviceId(expect_bytes(device, "device", 32))
    body = expect_bytes(body, "body", max_size=1024)
    signature = expect_bytes(signature, "signature", 64)
    VerifyKey(device).verify(
        labels.ANNOUNCEMENT_SIGNATURE,
        encoding.encode([bytes(group), number, ref, body]),
        signature,
    )
    return open_body(device, body)


def open_body(device: DeviceId, body: bytes) -> Announcement:
    """The announcement ``body`` (signature already checked) says, from ``device``.
    :class:`DecodeError` if it breaks a rule of the format."""
    value = encoding.decode(body, max_size=1024)
    _check_body(value)
    assert isinstance(value, list)
    kind, issued, expires, fields = value
    assert isinstance(fields, dict) and type(issued) is int and type(expires) is int
    assert type(kind) is int
    return Announcement(
        AnnouncementKind(kind),
        device,
        issued,
        expires,
        status=fields.get("status"),  # type: ignore[arg-type]
        lat=fields.get("lat"),  # type: ignore[arg-type]
        lon=fields.get("lon"),  # type: ignore[arg-type]
        precision=fields.get("precision"),  # type: ignore[arg-type]
        label=fields.get("label"),  # type: ignore[arg-type]
    )


def _check_body(value: Value) -> None:
    items = expect_list(value, "announcement body", 4)
    kind, issued, expires, fields = items
    if type(kind) is not int or kind not in AnnouncementKind._value2member_map_:
        raise DecodeError("announcement: unknown kind")
    issued = expect_int(issued, "issued_at")
    expires = expect_int(expires, "expires_at")
    if not issued < expires <= issued + MAX_TTL_MS:
        raise DecodeError("announcement: bad lifetime")
    if not isinstance(fields, dict) or not all(type(k) is str for k in fields):
        raise DecodeError("announcement: fields must be a map of names")
    parsed = AnnouncementKind(kind)
    if parsed is AnnouncementKind.PRESENCE:
        if set(fields) != {"status"} or fields["status"] not in STATUSES:
            raise DecodeError("presence: bad fields")
    elif parsed is AnnouncementKind.LOCATION:
        if not {"lat", "lon", "precision"} <= set(fields) <= {"lat", "lon", "precision", "label"}:
            raise DecodeError("location: bad fields")
        label = fields.get("label", "-")
        if not isinstance(label, str) or not 0 < len(label.encode()) <= MAX_LABEL:
            raise DecodeError("location: a label is 1 to 128 bytes of text")
        lat, lon, precision = fields["lat"], fields["lon"], fields["precision"]
        if precision not in GRID:
            raise DecodeError("location: bad precision")
        assert isinstance(precision, str)
        for v, limit in ((lat, 90_000_000), (lon, 180_000_000)):
            if type(v) is not int or not -limit <= v <= limit:
                raise DecodeError("location: bad coordinate")
            # a location must be exactly what coarsen() gives at its precision
            if GRID[precision] > 1 and _snap(v, GRID[precision], limit) != v:
                raise DecodeError("location: finer than its precision")
    elif fields:
        raise DecodeError("location stopped: no fields")


@dataclass(slots=True)
class _Held:
    announcement: Announcement
    sealed: bytes


class Board:
    """The latest announcement of each device, per family (presence, location).

    Pure: the caller says who is a member (``is_member_device``) and what time it is. Replays
    and older announcements never replace newer ones; expired ones are dropped for gossip but
    their time is remembered as "last seen".
    """

    def __init__(self) -> None:
        self._held: dict[tuple[DeviceId, str], _Held] = {}
        self.last_seen: dict[DeviceId, int] = {}

    def accept(self, announcement: Announcement, sealed: bytes, *, now: int) -> bool:
        """Keep ``announcement`` if it is the newest of its device and family.

        ``False`` for an exact duplicate of the one held; :class:`StaleAnnouncement` if it is
        expired, dated more than :data:`MAX_FUTURE_MS` ahead of ``now``, or older than (or as
        old as, but different from) the one held.
        """
        a = announcement
        if a.expires_at <= now:
            raise StaleAnnouncement("announcement expired")
        if a.issued_at > now + MAX_FUTURE_MS:
            raise StaleAnnouncement("announcement dated in the future")
        slot = (a.device, a.kind.family)
        held = self._held.get(slot)
        if held is not None:
            if held.sealed == sealed:
                return False
            if held.announcement.issued_at >= a.issued_at:
                raise StaleAnnouncement("an announcement at least as new is already held")
        self._held[slot] = _Held(a, sealed)
        if a.kind is AnnouncementKind.PRESENCE and a.status != "offline":
            self.last_seen[a.device] = max(self.last_seen.get(a.device, 0), a.issued_at)
        return True

    def expire(self, now: int) -> None:
        for slot in [s for s, h in self._held.items() if h.announcement.expires_at <= now]:
            del self._held[slot]

    def drop_device(self, device: DeviceId) -> None:
        """Forget a device that is no longer in the group."""
        for slot in [s for s in self._held if s[0] == device]:
            del self._held[slot]
        self.last_seen.pop(device, None)

    def current(self, family: str, now: int) -> list[Announcement]:
        """Unexpired announcements of ``family``, one per device."""
        return [
            h.announcement
            for (_, fam), h in sorted(self._held.items())
            if fam == family and h.announcement.expires_at > now
        ]

    def sealed(self, now: int, *, excluding: bytes | None = None) -> list[bytes]:
        """Every unexpired announcement held, sealed, for passing on to peers (leaving out
        those of device ``excluding``: a peer has its own)."""
        return [
            h.sealed
            for (device, _), h in sorted(self._held.items())
            if h.announcement.expires_at > now and device != excluding
        ]
