"""The pairing messages: one frozen dataclass per kind, and their strict codec.

Every message is the canonical CBOR array ``[version, kind, field...]``::

    kind  message       fields                                   sent by
    1     LinkHello     purpose, secret (32), request            guest, link mode
    2     LinkAdmit     purpose, response                        host,  link mode
    3     CodeHello     purpose, nameplate (1..999), pake_A (33) guest, code mode
    4     CodeReply     pake_B (33)                              host,  code mode
    5     CodeConfirm   confirm_G (32), nonce (24), sealed req   guest, code mode
    6     CodeAdmit     confirm_H (32), nonce (24), sealed resp  host,  code mode
    7     Abort         reason (AbortReason)                     host, instead of a reply
    8     RecoverHello  request, proof (64), certificate         guest, recovery
    9     RecoverAdmit  response                                 host,  recovery

A recovery (:mod:`microsync.group.recovery`) has no secret: the guest proves its person by a
person-key signature over the session's handshake hash (``proof``), and its right to be
taken back by the recovery key's certificate of the device (``certificate``, made from the
words).

Reading is two steps, so that a state machine can refuse a kind it does not expect before it
looks at the fields: :func:`split_message` checks the envelope (size, canonical CBOR, version,
kind) and :func:`parse_message` the fields of one kind (count, types, sizes). A malformed
envelope or unknown version or kind is an :class:`InviteProtocolError` or a
:class:`DecodeError`; malformed fields are a :class:`DecodeError`. A message that parses
re-encodes (:meth:`to_bytes`) to the same bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypeAlias

from microsync.crypto.keys import AEAD_NONCE_SIZE
from microsync.crypto.pake import PAKE_MESSAGE_SIZE
from microsync.encoding import (
    Value,
    decode,
    encode,
    expect_bytes,
    expect_int,
    expect_list,
    expect_str,
)
from microsync.errors import (
    AlreadyAMember,
    DecodeError,
    GroupFull,
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteProtocolError,
    InviteRefused,
    InviteRevoked,
    InviteUnknown,
    MalformedInvite,
    RecoveryRefused,
    StillHasDevices,
    WrongCode,
    WrongPurpose,
)
from microsync.group.invite.link import SECRET_SIZE, InvitePurpose, InviteSecret, parse_purpose
from microsync.group.invite.shortcode import MAX_NAMEPLATE

__all__ = [
    "CONFIRM_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_PAYLOAD_SIZE",
    "PROTOCOL_VERSION",
    "Abort",
    "AbortReason",
    "CodeAdmit",
    "CodeConfirm",
    "CodeHello",
    "CodeReply",
    "GuestMessage",
    "HostMessage",
    "Kind",
    "LinkAdmit",
    "LinkHello",
    "Message",
    "RecoverAdmit",
    "RecoverHello",
    "decode_message",
    "parse_message",
    "split_message",
]

PROTOCOL_VERSION: Final = 1
MAX_PAYLOAD_SIZE: Final = 32 * 1024
"""Largest request or response payload, in bytes."""
MAX_MESSAGE_SIZE: Final = MAX_PAYLOAD_SIZE + 256
CONFIRM_SIZE: Final = 32
AEAD_TAG_SIZE: Final = 16


class Kind(enum.IntEnum):
    """The second item of every pairing message."""

    LINK_HELLO = 1
    LINK_ADMIT = 2
    CODE_HELLO = 3
    CODE_REPLY = 4
    CODE_CONFIRM = 5
    CODE_ADMIT = 6
    ABORT = 7
    RECOVER_HELLO = 8
    RECOVER_ADMIT = 9


class AbortReason(enum.IntEnum):
    """Why the host refused, sent to the guest in ABORT; each maps to one error class."""

    UNKNOWN = 1
    EXPIRED = 2
    CONSUMED = 3
    REVOKED = 4
    BURNED = 5
    WRONG_PURPOSE = 6
    WRONG_CODE = 7
    REFUSED = 8
    PROTOCOL = 9
    ALREADY_MEMBER = 10
    NOT_RECOVERABLE = 11
    HAS_DEVICES = 12
    GROUP_FULL = 13


_REASON_ERRORS: Final[dict[AbortReason, type[InviteError]]] = {
    AbortReason.UNKNOWN: InviteUnknown,
    AbortReason.EXPIRED: InviteExpired,
    AbortReason.CONSUMED: InviteConsumed,
    AbortReason.REVOKED: InviteRevoked,
    AbortReason.BURNED: InviteBurned,
    AbortReason.WRONG_PURPOSE: WrongPurpose,
    AbortReason.WRONG_CODE: WrongCode,
    AbortReason.REFUSED: InviteRefused,
    AbortReason.PROTOCOL: InviteProtocolError,
    AbortReason.ALREADY_MEMBER: AlreadyAMember,
    AbortReason.NOT_RECOVERABLE: RecoveryRefused,
    AbortReason.HAS_DEVICES: StillHasDevices,
    AbortReason.GROUP_FULL: GroupFull,
}

_REASON_TEXT: Final[dict[AbortReason, str]] = {
    AbortReason.UNKNOWN: "it does not know this invite",
    AbortReason.EXPIRED: "it has expired",
    AbortReason.CONSUMED: "it was already used (invites are single-use)",
    AbortReason.REVOKED: "it was revoked",
    AbortReason.BURNED: "a wrong code was tried, which burned it",
    AbortReason.WRONG_PURPOSE: "it is for something else (a group invite vs. a device link)",
    AbortReason.WRONG_CODE: "wrong code (the code is now burned)",
    AbortReason.REFUSED: "the group refused it",
    AbortReason.PROTOCOL: "a protocol error",
    AbortReason.ALREADY_MEMBER: (
        "you are a member of this group already; to add a new device of yours, link it from "
        "one of your devices (`microsync devices add` there, `microsync link` here) or "
        "restore it from your recovery words"
    ),
    AbortReason.NOT_RECOVERABLE: "this person is a member of none of its groups",
    AbortReason.HAS_DEVICES: (
        "this person still has a device in each of its groups there: link this device from "
        "that one instead (`microsync devices add` there, `microsync link` here)"
    ),
    AbortReason.GROUP_FULL: "the group is full (it holds as many members as its cap allows)",
}


# --------------------------------------------------------------------------- the messages


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkHello:
    """Link mode, guest -> host: the secret from the link and the request payload (in the
    clear: the Noise transport protects it). ``repr`` shows only the secret's fingerprint."""

    kind: ClassVar[Kind] = Kind.LINK_HELLO
    purpose: InvitePurpose
    secret: InviteSecret
    request: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.purpose.value, self.secret.secret_bytes(), self.request)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkAdmit:
    """Link mode, host -> guest: admitted, with the response payload."""

    kind: ClassVar[Kind] = Kind.LINK_ADMIT
    purpose: InvitePurpose
    response: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.purpose.value, self.response)


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeHello:
    """Code mode, guest -> host: the public nameplate and the guest's SPAKE2 message."""

    kind: ClassVar[Kind] = Kind.CODE_HELLO
    purpose: InvitePurpose
    nameplate: int
    pake: bytes

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.purpose.value, self.nameplate, self.pake)


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeReply:
    """Code mode, host -> guest: the host's SPAKE2 message."""

    kind: ClassVar[Kind] = Kind.CODE_REPLY
    pake: bytes

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.pake)


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeConfirm:
    """Code mode, guest -> host: the guest's key confirmation and the sealed request."""

    kind: ClassVar[Kind] = Kind.CODE_CONFIRM
    confirm: bytes
    nonce: bytes
    sealed: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.confirm, self.nonce, self.sealed)


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeAdmit:
    """Code mode, host -> guest: the host's key confirmation and the sealed response."""

    kind: ClassVar[Kind] = Kind.CODE_ADMIT
    confirm: bytes
    nonce: bytes
    sealed: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.confirm, self.nonce, self.sealed)


@dataclass(frozen=True, slots=True, kw_only=True)
class Abort:
    """Host -> guest, instead of a reply: the host refused, and why."""

    kind: ClassVar[Kind] = Kind.ABORT
    reason: AbortReason

    def to_bytes(self) -> bytes:
        return _encode(self.kind, int(self.reason))

    @classmethod
    def for_error(cls, error: Exception) -> Abort:
        """The ABORT telling the guest about ``error``, raised while the host handled input."""
        for reason, error_class in _REASON_ERRORS.items():
            if type(error) is error_class:
                return cls(reason=reason)
        if isinstance(error, InviteError) and not isinstance(error, MalformedInvite):
            return cls(reason=AbortReason.REFUSED)  # a plain InviteError from the admit callback
        return cls(reason=AbortReason.PROTOCOL)

    def error(self) -> InviteError:
        """The error the guest raises on reading this ABORT."""
        text = _REASON_TEXT[self.reason]
        if self.reason in (AbortReason.NOT_RECOVERABLE, AbortReason.HAS_DEVICES):
            return _REASON_ERRORS[self.reason]("the member's device refused the recovery: " + text)
        return _REASON_ERRORS[self.reason]("the inviter refused the invite: " + text)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverHello:
    """Recovery, guest -> host: the device to take back (a join request), the proof (a
    person-key signature over this session's handshake hash) and the recovery certificate
    (the recovery key's, of this device: :class:`~microsync.identity.RecoveryCertificate`)."""

    kind: ClassVar[Kind] = Kind.RECOVER_HELLO
    request: bytes = field(repr=False)
    proof: bytes = field(repr=False)
    certificate: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.request, self.proof, self.certificate)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverAdmit:
    """Recovery, host -> guest: the groups the device was taken back into."""

    kind: ClassVar[Kind] = Kind.RECOVER_ADMIT
    response: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _encode(self.kind, self.response)


GuestMessage: TypeAlias = LinkHello | CodeHello | CodeConfirm | RecoverHello
"""What a guest sends."""
HostMessage: TypeAlias = LinkAdmit | CodeReply | CodeAdmit | Abort | RecoverAdmit
"""What a host sends."""
Message: TypeAlias = GuestMessage | HostMessage


# --------------------------------------------------------------------------- the codec


def _encode(kind: Kind, *fields: Value) -> bytes:
    return encode([PROTOCOL_VERSION, int(kind), *fields])


def split_message(data: bytes) -> tuple[Kind, list[Value]]:
    """The kind of the message ``data`` and its fields, not yet checked: the envelope only."""
    items = expect_list(decode(data, max_size=MAX_MESSAGE_SIZE), "pairing message")
    if len(items) < 2:
        raise DecodeError("a pairing message starts with a version and a kind")
    if expect_int(items[0], "version") != PROTOCOL_VERSION:
        raise InviteProtocolError("unsupported pairing protocol version")
    try:
        return Kind(expect_int(items[1], "kind")), items[2:]
    except ValueError:
        raise InviteProtocolError("unknown pairing message kind") from None


def parse_message(kind: Kind, fields: list[Value]) -> Message:
    """The message of ``kind`` with these ``fields``, every field checked."""
    parse, count = _PARSERS[kind]
    return parse(expect_list(fields, kind.name, count))


def decode_message(data: bytes) -> Message:
    """The message ``data`` encodes (:func:`split_message`, then :func:`parse_message`)."""
    return parse_message(*split_message(data))


def _purpose(value: Value) -> InvitePurpose:
    return parse_purpose(expect_str(value, "purpose", 16), DecodeError)


def _payload(value: Value, name: str, extra: int = 0) -> bytes:
    return expect_bytes(value, name, max_size=MAX_PAYLOAD_SIZE + extra)


def _pake(value: Value) -> bytes:
    return expect_bytes(value, "pake", PAKE_MESSAGE_SIZE)


def _link_hello(f: list[Value]) -> LinkHello:
    purpose, secret = _purpose(f[0]), expect_bytes(f[1], "secret", SECRET_SIZE)
    return LinkHello(
        purpose=purpose, secret=InviteSecret(secret), request=_payload(f[2], "request")
    )


def _link_admit(f: list[Value]) -> LinkAdmit:
    return LinkAdmit(purpose=_purpose(f[0]), response=_payload(f[1], "response"))


def _code_hello(f: list[Value]) -> CodeHello:
    purpose, nameplate = _purpose(f[0]), expect_int(f[1], "nameplate", 1, MAX_NAMEPLATE)
    return CodeHello(purpose=purpose, nameplate=nameplate, pake=_pake(f[2]))


def _code_reply(f: list[Value]) -> CodeReply:
    return CodeReply(pake=_pake(f[0]))


def _confirmation(f: list[Value]) -> tuple[bytes, bytes, bytes]:
    return (
        expect_bytes(f[0], "confirm", CONFIRM_SIZE),
        expect_bytes(f[1], "nonce", AEAD_NONCE_SIZE),
        _payload(f[2], "sealed", AEAD_TAG_SIZE),
    )


def _code_confirm(f: list[Value]) -> CodeConfirm:
    confirm, nonce, sealed = _confirmation(f)
    return CodeConfirm(confirm=confirm, nonce=nonce, sealed=sealed)


def _code_admit(f: list[Value]) -> CodeAdmit:
    confirm, nonce, sealed = _confirmation(f)
    return CodeAdmit(confirm=confirm, nonce=nonce, sealed=sealed)


def _abort(f: list[Value]) -> Abort:
    try:
        return Abort(reason=AbortReason(expect_int(f[0], "reason")))
    except ValueError:
        raise DecodeError("unknown abort reason") from None


def _recover_hello(f: list[Value]) -> RecoverHello:
    return RecoverHello(
        request=_payload(f[0], "request"),
        proof=expect_bytes(f[1], "proof", 64),
        certificate=expect_bytes(f[2], "certificate", max_size=1024),
    )


def _recover_admit(f: list[Value]) -> RecoverAdmit:
    return RecoverAdmit(response=_payload(f[0], "response"))


_PARSERS: Final[dict[Kind, tuple[Callable[[list[Value]], Message], int]]] = {
    Kind.LINK_HELLO: (_link_hello, 3),
    Kind.LINK_ADMIT: (_link_admit, 2),
    Kind.CODE_HELLO: (_code_hello, 3),
    Kind.CODE_REPLY: (_code_reply, 1),
    Kind.CODE_CONFIRM: (_code_confirm, 3),
    Kind.CODE_ADMIT: (_code_admit, 3),
    Kind.ABORT: (_abort, 1),
    Kind.RECOVER_HELLO: (_recover_hello, 3),
    Kind.RECOVER_ADMIT: (_recover_admit, 1),
}
