"""Membership operations and the envelope that carries them in a feed entry. Sans-IO.

A membership operation is the body of an entry of type :data:`MEMBERSHIP_TYPE`::

    body   = canonical CBOR [1, bundles, sealed]
    bundles= [[purpose, bundle], ...]            key wraps (see ``group/keys.py``), readable
                                                 only by the devices they are wrapped to
    sealed = key ref || nonce || XChaCha20-Poly1305(control key of the header's epoch,
                                                    canonical CBOR op map, AD = entry binding)

The op map is decoded strictly (unknown keys, wrong types and oversize values are
:class:`~microsync.errors.DecodeError`); which fields a kind needs is checked by
:meth:`Op.from_bytes` as well, so a decoded :class:`Op` is always well-formed for its kind.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from itertools import pairwise
from typing import Final, TypeVar

from microsync import encoding
from microsync.crypto import labelled_hash, labels
from microsync.encoding import Value, expect_bytes, expect_int, expect_list, expect_str
from microsync.errors import DecodeError
from microsync.group.settings import SettingsChange
from microsync.identity import MAX_NAME_LENGTH, DeviceId, PersonId

__all__ = [
    "MAX_MEMBERS_CAP",
    "MEMBERSHIP_TYPE",
    "DeviceGrant",
    "EpochAnnouncement",
    "History",
    "Op",
    "OpKind",
    "Role",
    "recipients_digest",
]

MEMBERSHIP_TYPE: Final = 1
MAX_OP_SIZE: Final = 256 * 1024
MAX_GROUP_NAME: Final = 128
MAX_MEMBERS_CAP: Final = 4000
"""The largest member cap a group may set (one device each: ``state.MAX_GROUP_DEVICES``)."""
_ID = 32
_T = TypeVar("_T")


class OpKind(enum.IntEnum):
    CREATE = 1
    ADD = 2
    REMOVE = 3
    LEAVE = 4
    SET_ROLE = 5
    ADD_DEVICE = 6
    REVOKE_DEVICE = 7
    PREKEY = 8
    ROTATE = 9
    INVITE = 10
    REVOKE_INVITE = 11
    SETTINGS = 12
    """Admins change group settings (keepers, ...): :mod:`microsync.group.settings`."""


class Role(enum.StrEnum):
    """A member's role. It is the string apps compare (``role == "admin"``); on the wire it
    is the number :attr:`code` (member 1, admin 2), as it always was (``int(role)`` too)."""

    MEMBER = "member"
    ADMIN = "admin"

    @property
    def code(self) -> int:
        """The number that stands for this role in encoded operations and invites."""
        return _ROLE_CODES[self]

    def __int__(self) -> int:
        return self.code

    @classmethod
    def from_code(cls, code: int) -> Role:
        """The role numbered ``code`` (``ValueError`` if none is)."""
        for role, number in _ROLE_CODES.items():
            if number == code:
                return role
        raise ValueError(f"no role is numbered {code}")

    @classmethod
    def _missing_(cls, value: object) -> Role | None:
        """``Role(2)``, as with the integer enum this was, is the role numbered 2."""
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls.from_code(value)
            except ValueError:
                return None
        return None

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"role must be 'member' or 'admin', not {value!r}") from None


_ROLE_CODES: Final = {Role.MEMBER: 1, Role.ADMIN: 2}


class History(enum.StrEnum):
    """Whether a group's joiners read what was written before they joined (``"shared"``)
    or only from their add on (``"none"``). The string on the wire, as it always was."""

    SHARED = "shared"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    """A device's certificate and its current prekey certificate, as encoded records."""

    certificate: bytes
    prekey_certificate: bytes

    def to_value(self) -> Value:
        return [self.certificate, self.prekey_certificate]

    @classmethod
    def from_value(cls, value: Value) -> DeviceGrant:
        cert, prekey = expect_list(value, "device", 2)
        return cls(
            expect_bytes(cert, "certificate", max_size=1024),
            expect_bytes(prekey, "prekey_certificate", max_size=1024),
        )


@dataclass(frozen=True, slots=True)
class EpochAnnouncement:
    """A new epoch: its number, the commitment to its key, and a digest of the sorted device
    ids it is wrapped to (every member checks that these are exactly the entitled devices)."""

    number: int
    commitment: bytes
    recipients_digest: bytes

    def to_value(self) -> Value:
        return [self.number, self.commitment, self.recipients_digest]

    @classmethod
    def from_value(cls, value: Value) -> EpochAnnouncement:
        number, digest, recipients = expect_list(value, "epoch", 3)
        return cls(
            expect_int(number, "number"),
            expect_bytes(digest, "commitment", _ID),
            expect_bytes(recipients, "recipients_digest", _ID),
        )


def recipients_digest(devices: Iterable[DeviceId]) -> bytes:
    """The digest an :class:`EpochAnnouncement` carries for a set of recipient devices."""
    return labelled_hash(labels.EPOCH_RECIPIENTS, *sorted(set(devices)))


# which optional fields each kind requires (beyond "k"); any other field must be absent
_FIELDS: dict[OpKind, frozenset[str]] = {
    OpKind.CREATE: frozenset({"g", "h", "o", "n", "d", "e"}),
    OpKind.ADD: frozenset({"p", "n", "r", "d"}),
    OpKind.REMOVE: frozenset({"p", "e"}),
    OpKind.LEAVE: frozenset(),
    OpKind.SET_ROLE: frozenset({"p", "r"}),
    OpKind.ADD_DEVICE: frozenset({"d"}),
    OpKind.REVOKE_DEVICE: frozenset({"x", "c", "e"}),
    OpKind.PREKEY: frozenset({"d"}),
    OpKind.ROTATE: frozenset({"e"}),
    OpKind.INVITE: frozenset({"i", "t", "r"}),
    OpKind.REVOKE_INVITE: frozenset({"i"}),
    OpKind.SETTINGS: frozenset({"m"}),
}
_OPTIONAL: dict[OpKind, frozenset[str]] = {
    # "q": the member's recovery public key (creator, joiner); "y": a recovery certificate
    # (an add of another member's device, by the words: then "e" too, and "s" covers the
    # person's other devices, which it revokes)
    # "m": the member cap (absent: none beyond MAX_GROUP_DEVICES)
    OpKind.CREATE: frozenset({"m", "q"}),
    # invite id + redemption time; epoch when history=none; positions of the added devices
    OpKind.ADD: frozenset({"i", "t", "e", "s", "q"}),
    OpKind.REMOVE: frozenset({"s"}),
    OpKind.LEAVE: frozenset({"s"}),
    OpKind.SET_ROLE: frozenset({"s"}),
    OpKind.ADD_DEVICE: frozenset({"s", "y", "e"}),
}
_MAX_POSITIONS: Final = 64
HISTORY_SETTINGS: Final = tuple(h.value for h in History)
"""The history settings by name (``("shared", "none")``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One membership operation. Fields unused by ``kind`` are ``None`` / empty."""

    kind: OpKind
    person: PersonId | None = None
    name: str | None = None
    role: Role | None = None
    devices: tuple[DeviceGrant, ...] = ()
    revocation: bytes | None = None
    cutoff: int | None = None
    invite_id: bytes | None = None
    time: int | None = None
    history: History | None = None
    nonce: bytes | None = None
    group_name: str | None = None
    max_members: int | None = None
    """For a CREATE: at most this many members, ever at once (``None``: no cap but the device
    limit). Every replica voids the add that would exceed it (``docs/membership.md``)."""
    epoch: EpochAnnouncement | None = None
    positions: tuple[tuple[DeviceId, int], ...] = ()
    """For an op that admits or cuts off devices (add, add device, remove, leave, promote,
    demote): the feed head ``seq`` of each such device in this group as the author saw it,
    sorted by device. It fixes the cut-off (or the start of a new admission) in the op itself,
    so every replica draws the same line (``docs/membership.md``, rule 4)."""
    recovery_key: bytes | None = None
    """CREATE, ADD: the public recovery key of the member (``docs/devices.md``)."""
    recovery: bytes | None = None
    """ADD_DEVICE of another member's device: the encoded :class:`RecoveryCertificate`."""
    settings: SettingsChange | None = None
    """For ``SETTINGS``: what it changes (:class:`~microsync.group.settings.SettingsChange`)."""
    _encoded: bytes = field(default=b"", compare=False, repr=False)

    def to_bytes(self) -> bytes:
        """The op's encoding, refused (``DecodeError``) where a peer's decoding would be."""
        data = self._encode()
        if not _plain_rotation(self, len(data)):
            Op.from_bytes(data)  # refuse to write what a peer would reject
        return data

    def _encode(self) -> bytes:
        value: dict[str | int, Value] = {"k": int(self.kind)}
        if self.person is not None:
            value["p"] = self.person
        if self.name is not None:
            value["n"] = self.name
        if self.role is not None:
            value["r"] = Role(self.role).code
        if self.devices:
            value["d"] = [d.to_value() for d in self.devices]
        if self.revocation is not None:
            value["x"] = self.revocation
        if self.cutoff is not None:
            value["c"] = self.cutoff
        if self.invite_id is not None:
            value["i"] = self.invite_id
        if self.time is not None:
            value["t"] = self.time
        if self.history is not None:
            value["h"] = str(self.history)
        if self.nonce is not None:
            value["o"] = self.nonce
        if self.group_name is not None:
            value["g"] = self.group_name
        if self.max_members is not None:
            value["m"] = self.max_members
        if self.epoch is not None:
            value["e"] = self.epoch.to_value()
        if self.positions:
            value["s"] = [[device, seq] for device, seq in self.positions]
        if self.recovery_key is not None:
            value["q"] = self.recovery_key
        if self.recovery is not None:
            value["y"] = self.recovery
        if self.settings is not None:
            value["m"] = self.settings.to_value()
        return encoding.encode(value)

    @classmethod
    def from_bytes(cls, data: bytes) -> Op:
        value = encoding.decode(data, max_size=MAX_OP_SIZE)
        if type(value) is not dict:
            raise DecodeError("op: expected a map")
        try:
            kind = OpKind(expect_int(value.get("k"), "kind"))
        except ValueError:
            raise DecodeError("op: unknown kind") from None
        keys = {k for k in value if k != "k"}
        if any(type(k) is not str for k in keys):
            raise DecodeError("op: keys must be text")
        required = _FIELDS[kind]
        allowed = required | _OPTIONAL.get(kind, frozenset())
        if not required <= keys or not keys <= allowed:
            raise DecodeError(f"op {kind.name}: wrong fields {sorted(map(str, keys))}")
        if kind is OpKind.ADD and ("i" in value) != ("t" in value):
            raise DecodeError("op ADD: an invite id needs its redemption time")
        if kind is OpKind.ADD_DEVICE and ("y" in value) != ("e" in value):
            raise DecodeError("op ADD_DEVICE: a recovery starts an epoch, and only a recovery")
        return cls(
            kind=kind,
            person=_opt(value, "p", lambda v: PersonId(expect_bytes(v, "person", _ID))),
            name=_opt(value, "n", _name),
            role=_opt(value, "r", _role),
            devices=tuple(DeviceGrant.from_value(d) for d in _opt_list(value, "d", 64)),
            revocation=_opt(value, "x", lambda v: expect_bytes(v, "revocation", max_size=1024)),
            cutoff=_opt(value, "c", lambda v: expect_int(v, "cutoff")),
            invite_id=_opt(value, "i", lambda v: expect_bytes(v, "invite_id", _ID)),
            time=_opt(value, "t", lambda v: expect_int(v, "time")),
            history=_opt(value, "h", _history),
            nonce=_opt(value, "o", lambda v: expect_bytes(v, "nonce", _ID)),
            group_name=_opt(value, "g", _group_name),
            max_members=_opt(value, "m", _max_members) if kind is OpKind.CREATE else None,
            epoch=_opt(value, "e", EpochAnnouncement.from_value),
            positions=_positions(_opt_list(value, "s", _MAX_POSITIONS)),
            recovery_key=_opt(value, "q", lambda v: expect_bytes(v, "recovery key", _ID)),
            recovery=_opt(value, "y", lambda v: expect_bytes(v, "recovery", max_size=1024)),
            # "m" is the kind's own map: CREATE's member cap, SETTINGS' changes (_FIELDS)
            settings=_opt(value, "m", SettingsChange.from_value)
            if kind is OpKind.SETTINGS
            else None,
            _encoded=bytes(data),
        )


_INT63: Final = 2**63 - 1


def _plain_rotation(op: Op, size: int) -> bool:
    """Would :meth:`Op.from_bytes` accept the ``size`` bytes :meth:`Op.to_bytes` encoded from
    ``op``, a REMOVE or ROTATE whose every field is what that kind holds, within the bounds
    decoding checks? Sound, not complete: ``False`` only means decode back as before
    (``tests/test_rekey_op_check.py``: whenever this says yes, decoding gives ``op`` back)."""
    epoch = op.epoch
    if type(epoch) is not EpochAnnouncement or size > MAX_OP_SIZE:
        return False
    number = epoch.number
    if type(number) is not int or not 0 <= number <= _INT63:
        return False
    if not (_is_id(epoch.commitment) and _is_id(epoch.recipients_digest)):
        return False
    if op.kind is OpKind.ROTATE:
        named = op.person is None and not op.positions
    elif op.kind is OpKind.REMOVE:
        named = _is_id(op.person) and _plain_positions(op.positions)
    else:
        return False
    # nothing else set (every other field of Op, a new one too, at its default)
    return named and all(getattr(op, name) == default for name, default in _UNSET)


_UNSET: Final = tuple(
    (f.name, f.default)
    for f in fields(Op)
    if f.name not in {"kind", "person", "epoch", "positions", "_encoded"}
)


def _is_id(value: object) -> bool:
    return type(value) is bytes and len(value) == _ID


def _plain_positions(positions: tuple[tuple[DeviceId, int], ...]) -> bool:
    """Positions that decode as they are: at most the limit, sorted by device, each once."""
    if type(positions) is not tuple or len(positions) > _MAX_POSITIONS:
        return False
    for item in positions:
        if type(item) is not tuple or len(item) != 2 or not _is_id(item[0]):
            return False
        if type(item[1]) is not int or not 0 <= item[1] <= _INT63:
            return False
    return all(a[0] < b[0] for a, b in pairwise(positions))


def _opt(value: dict[str | int, Value], key: str, parse: Callable[[Value], _T]) -> _T | None:
    return parse(value[key]) if key in value else None


def _opt_list(value: dict[str | int, Value], key: str, limit: int) -> list[Value]:
    if key not in value:
        return []
    items = expect_list(value[key], key)
    if not 0 < len(items) <= limit:
        raise DecodeError(f"op: {key} must hold 1 to {limit} items")
    return items


def _positions(items: list[Value]) -> tuple[tuple[DeviceId, int], ...]:
    out = []
    for item in items:
        device, seq = expect_list(item, "position", 2)
        out.append((DeviceId(expect_bytes(device, "device", _ID)), expect_int(seq, "seq")))
    if [d for d, _ in out] != sorted({d for d, _ in out}):
        raise DecodeError("op: positions must be sorted by device, each device once")
    return tuple(out)


def _name(value: Value) -> str:
    name = expect_str(value, "name", MAX_NAME_LENGTH)
    if not name:
        raise DecodeError("name: empty")
    return name


def _group_name(value: Value) -> str:
    name = expect_str(value, "group name", MAX_GROUP_NAME)
    if not name:
        raise DecodeError("group name: empty")
    return name


def _max_members(value: Value) -> int:
    return expect_int(value, "max_members", 1, MAX_MEMBERS_CAP)


def _role(value: Value) -> Role:
    try:
        return Role.from_code(expect_int(value, "role"))
    except ValueError:
        raise DecodeError("role: unknown") from None


def _history(value: Value) -> History:
    history = expect_str(value, "history", 16)
    if history not in HISTORY_SETTINGS:
        raise DecodeError("history: unknown setting")
    return History(history)
