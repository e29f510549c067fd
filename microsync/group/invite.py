"""One-time pairing for group invites and for linking a new device: two sans-IO state machines.

Theory of operation
-------------------
An issuer draws an :class:`Invite`: a 32-byte :class:`InviteSecret` (published to the group only
as its hash, the :class:`InviteId`), a short code such as ``7-ocean-violin`` for reading aloud,
a purpose (``invite`` a person into a group, or ``link`` a new device of the same person), an
expiry and where to reach the host. A guest redeems it in one of two modes, always talking to a
:class:`PairingHost` through a :class:`PairingGuest`. Messages are canonical CBOR arrays
``[version, kind, ...]``; the transport around them (Noise) is not this module's business::

    link mode                                code mode (SPAKE2, guest = A, host = B)
    guest -> LINK_HELLO  [purpose, secret,   guest -> CODE_HELLO   [purpose, nameplate, pake_A]
                          request]           host  -> CODE_REPLY   [pake_B]
    host  -> LINK_ADMIT  [purpose, response] guest -> CODE_CONFIRM [confirm_G, nonce, sealed req]
                                             host  -> CODE_ADMIT   [confirm_H, nonce, sealed resp]
    host  -> ABORT [reason]   instead of any reply, when the host refuses (see abort_message)

The host hashes a presented secret to its id, so an admin device that knows only the id can
serve a link. A code is the SPAKE2 password; the purpose is bound into the SPAKE2 identities,
the session key's transcript and every AEAD's associated data. The confirmations and the
payload key come from ``session = derive_key(INVITE_SESSION_KEY, spake_key,
CBOR[v, purpose, nameplate, pake_A, pake_B])``.

Invariants
----------
* The host enforces, through the group layer's callbacks, single use, revocation and purpose,
  and expiry by its own ``now`` with :data:`INVITE_CLOCK_TOLERANCE_MS` of grace.
* Code mode: once the host has answered with its SPAKE2 message, every outcome but admission
  calls ``burn(invite_id)``: one wrong guess burns the invite. At CODE_CONFIRM the host checks
  the invite's state *before* the confirmation, so parallel sessions test at most one guess.
* Each machine's transitions are one table; any message not in it, any malformed message and any
  refused invite raise :class:`InviteError` or :class:`DecodeError` and leave the machine FAILED
  (input after DONE is refused too). Nothing else escapes for any input bytes.
* No ``repr`` or error message shows a secret, a code or a link.
"""

from __future__ import annotations

import base64
import enum
import hmac
import ipaddress
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cache
from typing import Final, NewType

from mnemonic import Mnemonic

from microsync.crypto import SymmetricKey, derive_key, fingerprint, labelled_hash, labels
from microsync.crypto.keys import AEAD_NONCE_SIZE
from microsync.crypto.pake import PAKE_MESSAGE_SIZE, PakeSide, Spake2
from microsync.crypto.random import Rng
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
    DecodeError,
    DecryptionError,
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteProtocolError,
    InviteRefused,
    InviteRevoked,
    InviteUnknown,
    LocalProtocolError,
    MalformedInvite,
    WrongCode,
    WrongPurpose,
)
from microsync.group.membership import INVITE_CLOCK_TOLERANCE_MS
from microsync.group.ops import Role

__all__ = [
    "DEFAULT_CODE_WORDS",
    "DEFAULT_INVITE_TTL_MS",
    "INVITE_CLOCK_TOLERANCE_MS",
    "MAX_PAYLOAD_SIZE",
    "SECRET_SIZE",
    "AbortReason",
    "GuestState",
    "HostState",
    "Invite",
    "InviteId",
    "InviteLink",
    "InvitePurpose",
    "InviteRecord",
    "InviteSecret",
    "InviteState",
    "PairingGuest",
    "PairingHost",
    "ShortCode",
    "format_link",
    "invite_id",
    "invite_rendezvous",
    "parse_code",
    "parse_link",
]

PROTOCOL_VERSION: Final = 1
LINK_VERSION: Final = 1
SECRET_SIZE: Final = 32
DEFAULT_INVITE_TTL_MS: Final = 24 * 3600 * 1000
MAX_PAYLOAD_SIZE: Final = 32 * 1024
"""Largest request or response payload, in bytes."""
MAX_MESSAGE_SIZE: Final = MAX_PAYLOAD_SIZE + 256
MAX_NAMEPLATE: Final = 999
MIN_CODE_WORDS: Final = 2
MAX_CODE_WORDS: Final = 8
DEFAULT_CODE_WORDS: Final = 2
MAX_ADDRESSES: Final = 8
MAX_LINK_LENGTH: Final = 2048
_MAX_CODE_TEXT: Final = 128
_CONFIRM_SIZE: Final = 32
_AEAD_TAG_SIZE: Final = 16

InviteId = NewType("InviteId", bytes)
"""``labelled_hash(INVITE_ID, secret)``: public, safe to publish to the group."""


class InvitePurpose(enum.StrEnum):
    """What redeeming the invite does. Bound into every message, so one cannot pass as the other."""

    INVITE = "invite"  # a person joins a group
    LINK = "link"  # a new device of the same person


# --------------------------------------------------------------------------- secrets and ids


class InviteSecret:
    """A one-time 32-byte secret. Its ``repr`` shows only a fingerprint of its public id."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            raise MalformedInvite(f"an invite secret is {SECRET_SIZE} bytes")
        self._secret = secret

    @classmethod
    def generate(cls, rng: Rng) -> InviteSecret:
        """A fresh secret from ``rng``."""
        return cls(rng(SECRET_SIZE))

    def secret_bytes(self) -> bytes:
        """The raw secret: only for the link and the LINK_HELLO message."""
        return self._secret

    @property
    def invite_id(self) -> InviteId:
        """The public id of this secret."""
        return invite_id(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InviteSecret) and hmac.compare_digest(other._secret, self._secret)

    def __hash__(self) -> int:
        return hash(self.invite_id)

    def __repr__(self) -> str:
        return f"InviteSecret(id={fingerprint(self.invite_id)})"

    __str__ = __repr__


def invite_id(secret: InviteSecret | bytes) -> InviteId:
    """The public id of ``secret``: ``labelled_hash(INVITE_ID, secret)``."""
    raw = secret.secret_bytes() if isinstance(secret, InviteSecret) else secret
    return InviteId(labelled_hash(labels.INVITE_ID, raw))


# --------------------------------------------------------------------------- links

_LINK_PREFIX: Final = "microsync:join?"
_LINK_KEYS: Final = frozenset({"v", "s", "at", "r", "p"})
_SECRET_TEXT_LENGTH: Final = 52  # ceil(256 / 5) base32 characters, no padding
_BASE32_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DIGITS = re.compile(r"[0-9]+")
_RELAY = re.compile(r"[a-z][a-z0-9+.-]*://[A-Za-z0-9._~:\[\]-]+(?:/[A-Za-z0-9._~/-]*)?")


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteLink:
    """What a link or QR code carries. Construction validates every field's shape.

    Its ``repr`` and ``str`` show only the secret's fingerprint; :func:`format_link` gives the
    link itself.
    """

    secret: InviteSecret
    purpose: InvitePurpose
    addresses: tuple[str, ...] = ()
    relay: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.secret, InviteSecret) or type(self.purpose) is not InvitePurpose:
            raise MalformedInvite("an invite link needs a secret and a purpose")
        _check_reachability(self.addresses, self.relay)


def invite_rendezvous(secret: InviteSecret) -> bytes:
    """The 32-byte relay rendezvous id of an invite link: only holders of the link (its issuer
    and the guest) can compute it; it says nothing about the group."""
    return derive_key(labels.INVITE_RENDEZVOUS, secret.secret_bytes())


def format_link(link: InviteLink) -> str:
    """``microsync:join?v=1&s=<secret>&at=<host:port>...[&r=<relay>]&p=<purpose>``."""
    secret = base64.b32encode(link.secret.secret_bytes()).decode("ascii").rstrip("=").lower()
    params = [f"v={LINK_VERSION}", f"s={secret}"]
    params += [f"at={address}" for address in link.addresses]
    params += [f"r={link.relay}"] if link.relay is not None else []
    params.append(f"p={link.purpose.value}")
    return _LINK_PREFIX + "&".join(params)


def parse_link(text: str) -> InviteLink:
    """The link ``text`` encodes, accepting only the canonical form :func:`format_link` writes.

    Raises :class:`MalformedInvite` for anything else (never echoing the input).
    """
    if not isinstance(text, str) or len(text) > MAX_LINK_LENGTH or not text.isascii():
        raise MalformedInvite("not an invite link")
    if not text.startswith(_LINK_PREFIX):
        raise MalformedInvite("not an invite link")
    values: dict[str, list[str]] = {}
    for param in text[len(_LINK_PREFIX) :].split("&"):
        key, sep, value = param.partition("=")
        if not sep or key not in _LINK_KEYS:
            raise MalformedInvite("unknown or malformed link parameter")
        values.setdefault(key, []).append(value)
    if _one(values, "v") != str(LINK_VERSION):
        raise MalformedInvite("unsupported invite link version")
    relays = values.get("r", [])
    if len(relays) > 1:
        raise MalformedInvite("an invite link names at most one relay")
    link = InviteLink(
        secret=InviteSecret(_decode_secret(_one(values, "s"))),
        purpose=_parse_purpose(_one(values, "p"), MalformedInvite),
        addresses=tuple(values.get("at", [])),
        relay=relays[0] if relays else None,
    )
    if format_link(link) != text:
        raise MalformedInvite("not the canonical form of the link")
    return link


def _check_reachability(addresses: tuple[str, ...], relay: str | None) -> None:
    """Raise :class:`MalformedInvite` unless there are 1 to 8 well-formed ways to the host."""
    if not isinstance(addresses, tuple) or (not addresses and relay is None):
        raise MalformedInvite("an invite link needs an address or a relay")
    if len(addresses) > MAX_ADDRESSES:
        raise MalformedInvite(f"an invite link has at most {MAX_ADDRESSES} addresses")
    for address in addresses:
        _check_address(address)
    if relay is not None and not (
        isinstance(relay, str) and len(relay) <= 256 and _RELAY.fullmatch(relay)
    ):
        raise MalformedInvite("the relay is not a URL of the expected shape")


def _one(values: dict[str, list[str]], key: str) -> str:
    found = values.get(key, [])
    if len(found) != 1:
        raise MalformedInvite(f"an invite link needs exactly one '{key}'")
    return found[0]


def _decode_secret(text: str) -> bytes:
    if len(text) != _SECRET_TEXT_LENGTH or not set(text) <= _BASE32_LOWER:
        raise MalformedInvite(f"the secret must be {_SECRET_TEXT_LENGTH} base32 characters")
    raw = base64.b32decode(text.upper() + "====")  # cannot fail: alphabet and length checked
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != text:
        raise MalformedInvite("the secret is not canonically encoded")
    return raw


def _check_address(address: str) -> None:
    """Raise :class:`MalformedInvite` unless ``address`` is ``host:port`` or ``[ipv6]:port``."""
    if not isinstance(address, str) or not 0 < len(address) <= 262 or not address.isascii():
        raise MalformedInvite("an address must be host:port")
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep or "%" in host:
            raise MalformedInvite("an address must be host:port")
        _parse_ip(host, ipaddress.IPv6Address)
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            raise MalformedInvite("an address must be host:port")
        _check_hostname(host)
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise MalformedInvite("a port must be 1 to 65535")


def _check_hostname(host: str) -> None:
    parts = host.split(".")
    if all(_DIGITS.fullmatch(part) for part in parts):
        _parse_ip(host, ipaddress.IPv4Address)
    elif len(host) > 253 or not all(_HOST_LABEL.fullmatch(part) for part in parts):
        raise MalformedInvite("not a host name")


def _parse_ip(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
    try:
        kind(text)
    except ValueError:
        raise MalformedInvite("not an IP address") from None


def _parse_purpose(value: str, error: type[MalformedInvite | DecodeError]) -> InvitePurpose:
    try:
        return InvitePurpose(value)
    except ValueError:
        raise error("unknown invite purpose") from None


# --------------------------------------------------------------------------- short codes

_CODE_SEPARATORS = re.compile(r"[\s\-_.,/:]+")


@cache
def _wordlist() -> tuple[str, ...]:
    return tuple(Mnemonic("english").wordlist)


@cache
def _wordset() -> frozenset[str]:
    return frozenset(_wordlist())


@dataclass(frozen=True, slots=True)
class ShortCode:
    """A code for reading aloud: a public nameplate (1..999) and secret BIP39 words.

    ``repr`` and ``str`` show only the nameplate; :attr:`text` is the code itself.
    """

    nameplate: int
    words: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.nameplate) is not int or not 1 <= self.nameplate <= MAX_NAMEPLATE:
            raise MalformedInvite(f"a nameplate is 1 to {MAX_NAMEPLATE}")
        if not MIN_CODE_WORDS <= len(self.words) <= MAX_CODE_WORDS:
            raise MalformedInvite(f"a code has {MIN_CODE_WORDS} to {MAX_CODE_WORDS} words")
        if not all(isinstance(w, str) and w in _wordset() for w in self.words):
            raise MalformedInvite("a code word is not in the BIP39 English list")

    @classmethod
    def generate(
        cls, rng: Rng, *, words: int = DEFAULT_CODE_WORDS, avoid: Collection[int] = ()
    ) -> ShortCode:
        """A fresh code; its nameplate is not in ``avoid`` (the host's open nameplates)."""
        if len(set(avoid) & set(range(1, MAX_NAMEPLATE + 1))) >= MAX_NAMEPLATE:
            raise InviteError("every nameplate is in use")
        nameplate = 0
        while not 1 <= nameplate <= MAX_NAMEPLATE or nameplate in avoid:
            nameplate = (int.from_bytes(rng(2), "big") & 0x3FF) + 1  # 1..1024, rejected > 999
        chosen = tuple(_wordlist()[int.from_bytes(rng(2), "big") & 0x7FF] for _ in range(words))
        return cls(nameplate, chosen)

    @property
    def text(self) -> str:
        """The canonical spelling, such as ``7-ocean-violin``. Secret: show it only to people."""
        return "-".join((str(self.nameplate), *self.words))

    def password(self) -> bytes:
        """The SPAKE2 password: the canonical spelling."""
        return self.text.encode("ascii")

    def __str__(self) -> str:
        return f"ShortCode(nameplate={self.nameplate}, words=<hidden>)"

    __repr__ = __str__


def parse_code(text: str) -> ShortCode:
    """Normalise a typed or spoken code (case, spaces, ``-_.,/:`` separators) and validate it.

    Raises :class:`MalformedInvite` (never echoing the input) unless it is a nameplate without
    leading zeros followed by 2 to 8 BIP39 English words.
    """
    if not isinstance(text, str) or len(text) > _MAX_CODE_TEXT or not text.isascii():
        raise MalformedInvite("not a short code")
    parts = _CODE_SEPARATORS.split(text.strip().lower())
    if not _DIGITS.fullmatch(parts[0]) or parts[0].startswith("0") or len(parts[0]) > 3:
        raise MalformedInvite("a short code starts with a number from 1 to 999")
    return ShortCode(int(parts[0]), tuple(parts[1:]))


# --------------------------------------------------------------------------- the issuer's invite


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Invite:
    """An invite as its issuer holds it. ``repr`` never shows the secret, link or code."""

    secret: InviteSecret
    short_code: ShortCode
    purpose: InvitePurpose
    role: Role | None
    expires_at: int
    addresses: tuple[str, ...] = ()
    relay: str | None = None

    def __post_init__(self) -> None:
        if (self.role is None) != (self.purpose is InvitePurpose.LINK):
            raise ValueError("a group invite needs a role; a device link has none")
        if type(self.expires_at) is not int:
            raise TypeError("expires_at is an integer number of milliseconds")
        _check_reachability(self.addresses, self.relay)

    @classmethod
    def issue(
        cls,
        *,
        rng: Rng,
        now: int,
        purpose: InvitePurpose,
        role: Role | None = None,
        addresses: tuple[str, ...] = (),
        relay: str | None = None,
        ttl_ms: int = DEFAULT_INVITE_TTL_MS,
        code_words: int = DEFAULT_CODE_WORDS,
        taken_nameplates: Collection[int] = (),
    ) -> Invite:
        """A fresh invite expiring ``ttl_ms`` after ``now`` (ms). A group invite defaults to
        ``Role.MEMBER``; the nameplate avoids ``taken_nameplates``."""
        if purpose is InvitePurpose.INVITE and role is None:
            role = Role.MEMBER
        secret = InviteSecret.generate(rng)
        code = ShortCode.generate(rng, words=code_words, avoid=taken_nameplates)
        return cls(
            secret=secret,
            short_code=code,
            purpose=purpose,
            role=role,
            expires_at=now + ttl_ms,
            addresses=addresses,
            relay=relay,
        )

    @property
    def invite_id(self) -> InviteId:
        return self.secret.invite_id

    @property
    def link_payload(self) -> InviteLink:
        return InviteLink(
            secret=self.secret, purpose=self.purpose, addresses=self.addresses, relay=self.relay
        )

    @property
    def link(self) -> str:
        """The link / QR payload (secret!)."""
        return format_link(self.link_payload)

    @property
    def code(self) -> str:
        """The short code to read aloud (secret!)."""
        return self.short_code.text

    @property
    def record(self) -> InviteRecord:
        """The public terms a host checks against: publish these, not the invite."""
        return InviteRecord(
            invite_id=self.invite_id, purpose=self.purpose, expires_at=self.expires_at
        )

    def __repr__(self) -> str:
        role = f", role={self.role}" if self.role is not None else ""
        return (
            f"Invite(id={fingerprint(self.invite_id)}, purpose={self.purpose.value}{role}, "
            f"expires_at={self.expires_at}, nameplate={self.short_code.nameplate})"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------- the host's view


class InviteState(enum.Enum):
    """What the group layer knows of an invite."""

    OPEN = "open"
    CONSUMED = "consumed"
    REVOKED = "revoked"
    BURNED = "burned"


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord:
    """The public terms of an invite and its state, as the group layer reports them."""

    invite_id: InviteId
    purpose: InvitePurpose
    expires_at: int
    state: InviteState = InviteState.OPEN


CheckInvite = Callable[[InviteId], InviteRecord | None]
"""``check(invite_id)``: the invite's terms and state, or ``None`` when unknown."""
FindCode = Callable[[int], Invite | None]
"""``find_code(nameplate)``: the open invite this host issued with that nameplate, if any."""
Admit = Callable[[InviteId, bytes], bytes]
"""``admit(invite_id, request) -> response``: record the redemption (so ``check`` reports it
CONSUMED from now on) and answer; raise :class:`InviteError` to refuse."""
Burn = Callable[[InviteId], None]
"""``burn(invite_id)``: a short-code session failed; ``check`` must report BURNED from now on."""


def _admissible(
    record: InviteRecord | None, *, invite: InviteId, purpose: InvitePurpose, now: int
) -> None:
    """Raise the :class:`InviteError` for the first rule ``record`` breaks, if any."""
    if record is None or record.invite_id != invite:
        raise InviteUnknown("no such invite")
    if record.purpose is not purpose:
        raise WrongPurpose("the invite is for another purpose")
    refusal = _STATE_ERRORS.get(record.state)
    if refusal is not None:
        raise refusal(f"the invite is {record.state.value}")
    if now > record.expires_at + INVITE_CLOCK_TOLERANCE_MS:
        raise InviteExpired("the invite has expired")


_STATE_ERRORS: Final[dict[InviteState, type[InviteError]]] = {
    InviteState.CONSUMED: InviteConsumed,
    InviteState.REVOKED: InviteRevoked,
    InviteState.BURNED: InviteBurned,
}


# --------------------------------------------------------------------------- messages


class Kind(enum.IntEnum):
    """The second item of every pairing message."""

    LINK_HELLO = 1
    LINK_ADMIT = 2
    CODE_HELLO = 3
    CODE_REPLY = 4
    CODE_CONFIRM = 5
    CODE_ADMIT = 6
    ABORT = 7


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
}


def _reason_for(error: Exception) -> AbortReason:
    for reason, cls in _REASON_ERRORS.items():
        if type(error) is cls:
            return reason
    if isinstance(error, InviteError) and not isinstance(error, MalformedInvite):
        return AbortReason.REFUSED  # a plain InviteError from the admit callback
    return AbortReason.PROTOCOL


def _message(kind: Kind, *fields: Value) -> bytes:
    return encode([PROTOCOL_VERSION, int(kind), *fields])


def _read(data: bytes) -> tuple[Kind, list[Value]]:
    """Split a message into its kind and fields; version and kind are checked here."""
    items = expect_list(decode(data, max_size=MAX_MESSAGE_SIZE), "pairing message")
    if len(items) < 2:
        raise DecodeError("a pairing message starts with a version and a kind")
    if expect_int(items[0], "version") != PROTOCOL_VERSION:
        raise InviteProtocolError("unsupported pairing protocol version")
    try:
        return Kind(expect_int(items[1], "kind")), items[2:]
    except ValueError:
        raise InviteProtocolError("unknown pairing message kind") from None


def _fields(fields: list[Value], kind: Kind, count: int) -> list[Value]:
    return expect_list(fields, kind.name, count)


def _purpose_field(value: Value) -> InvitePurpose:
    return _parse_purpose(expect_str(value, "purpose", 16), DecodeError)


def _payload(value: Value, name: str, extra: int = 0) -> bytes:
    return expect_bytes(value, name, max_size=MAX_PAYLOAD_SIZE + extra)


# --------------------------------------------------------------------------- code-mode crypto


def _pake(side: PakeSide, code: ShortCode, purpose: InvitePurpose, rng: Rng) -> Spake2:
    tag = purpose.value.encode("ascii")
    guest = labels.frame(labels.INVITE_PAKE_GUEST) + tag
    host = labels.frame(labels.INVITE_PAKE_HOST) + tag
    return Spake2(side=side, password=code.password(), id_a=guest, id_b=host, rng=rng)


@dataclass(frozen=True, slots=True, repr=False)
class _SessionKeys:
    guest_confirm: bytes
    host_confirm: bytes
    payload: SymmetricKey
    purpose: InvitePurpose

    @classmethod
    def derive(
        cls, pake_key: bytes, purpose: InvitePurpose, nameplate: int, pake_a: bytes, pake_b: bytes
    ) -> _SessionKeys:
        transcript = encode([PROTOCOL_VERSION, purpose.value, nameplate, pake_a, pake_b])
        session = derive_key(labels.INVITE_SESSION_KEY, pake_key, transcript)
        return cls(
            derive_key(labels.INVITE_CONFIRM_GUEST, session),
            derive_key(labels.INVITE_CONFIRM_HOST, session),
            SymmetricKey(derive_key(labels.INVITE_PAYLOAD, session)),
            purpose,
        )

    def _ad(self, kind: Kind) -> bytes:
        return encode([PROTOCOL_VERSION, int(kind), self.purpose.value])

    def seal(self, kind: Kind, payload: bytes, rng: Rng) -> tuple[bytes, bytes]:
        nonce = rng(AEAD_NONCE_SIZE)
        return nonce, self.payload.encrypt(nonce, payload, self._ad(kind))

    def open(self, kind: Kind, nonce: bytes, sealed: bytes) -> bytes:
        try:
            return self.payload.decrypt(nonce, sealed, self._ad(kind))
        except DecryptionError:
            raise InviteProtocolError("the sealed payload does not open") from None


def _confirm_fields(fields: list[Value], kind: Kind) -> tuple[bytes, bytes, bytes]:
    confirm, nonce, sealed = _fields(fields, kind, 3)
    return (
        expect_bytes(confirm, "confirm", _CONFIRM_SIZE),
        expect_bytes(nonce, "nonce", AEAD_NONCE_SIZE),
        _payload(sealed, "sealed", _AEAD_TAG_SIZE),
    )


# --------------------------------------------------------------------------- the host


class HostState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_CODE_CONFIRM = "await-code-confirm"
    DONE = "done"
    FAILED = "failed"


class PairingHost:
    """The inviting side: answers one guest, admitting it at most once.

    Feed every message from the guest to :meth:`receive` and send back what it returns. When it
    raises, send :attr:`abort_message` (if not ``None``) and close.
    """

    def __init__(
        self,
        *,
        check: CheckInvite,
        admit: Admit,
        burn: Burn,
        rng: Rng,
        find_code: FindCode | None = None,
    ) -> None:
        self._check, self._admit, self._burn, self._rng = check, admit, burn, rng
        self._find_code = find_code
        self._state = HostState.AWAIT_HELLO
        self._invite_id: InviteId | None = None
        self._purpose: InvitePurpose | None = None
        self._abort: bytes | None = None
        self._pending: _SessionKeys | None = None

    @property
    def state(self) -> HostState:
        return self._state

    @property
    def invite_id(self) -> InviteId | None:
        """The invite the guest is redeeming, once known."""
        return self._invite_id

    @property
    def purpose(self) -> InvitePurpose | None:
        return self._purpose

    @property
    def abort_message(self) -> bytes | None:
        """An ABORT message telling the guest why, after :meth:`receive` raised."""
        return self._abort

    def __repr__(self) -> str:
        return f"PairingHost(state={self._state.value})"

    def receive(self, data: bytes, *, now: int) -> bytes:
        """Handle one guest message at ``now`` (ms); return the reply to send.

        Raises :class:`InviteError` or :class:`DecodeError`, leaving the host FAILED (and, in
        code mode after the SPAKE2 reply, the invite burned).
        """
        state = self._state
        if state in (HostState.DONE, HostState.FAILED):
            raise InviteProtocolError("the pairing session is over")
        self._state = HostState.FAILED
        try:
            kind, fields = _read(data)
            handler = _HOST_TRANSITIONS.get((state, kind))
            if handler is None:
                raise InviteProtocolError(f"unexpected {kind.name} in {state.value}")
            reply, self._state = handler(self, fields, now)
        except (InviteError, DecodeError) as error:
            self._fail(error, burn=state is HostState.AWAIT_CODE_CONFIRM)
            raise
        return reply

    def _fail(self, error: Exception, *, burn: bool) -> None:
        self._pending = None
        self._abort = _message(Kind.ABORT, int(_reason_for(error)))
        if burn and self._invite_id is not None:
            self._burn(self._invite_id)

    def _on_link_hello(self, fields: list[Value], now: int) -> tuple[bytes, HostState]:
        purpose_field, secret_field, request_field = _fields(fields, Kind.LINK_HELLO, 3)
        purpose = _purpose_field(purpose_field)
        secret = expect_bytes(secret_field, "secret", SECRET_SIZE)
        request = _payload(request_field, "request")
        self._invite_id, self._purpose = invite_id(secret), purpose
        self._vet(now)
        response = self._admit_request(request)
        return _message(Kind.LINK_ADMIT, purpose.value, response), HostState.DONE

    def _on_code_hello(self, fields: list[Value], now: int) -> tuple[bytes, HostState]:
        purpose_field, nameplate_field, pake_field = _fields(fields, Kind.CODE_HELLO, 3)
        purpose = _purpose_field(purpose_field)
        nameplate = expect_int(nameplate_field, "nameplate", 1, MAX_NAMEPLATE)
        pake_a = expect_bytes(pake_field, "pake", PAKE_MESSAGE_SIZE)
        invite = self._find_code(nameplate) if self._find_code is not None else None
        if invite is None or invite.short_code.nameplate != nameplate:
            raise InviteUnknown("no open invite has that nameplate")
        self._invite_id, self._purpose = invite.invite_id, purpose
        self._vet(now)
        pake = _pake(PakeSide.B, invite.short_code, purpose, self._rng)
        pake_b = pake.start()
        keys = _SessionKeys.derive(pake.finish(pake_a), purpose, nameplate, pake_a, pake_b)
        self._pending = keys
        return _message(Kind.CODE_REPLY, pake_b), HostState.AWAIT_CODE_CONFIRM

    def _on_code_confirm(self, fields: list[Value], now: int) -> tuple[bytes, HostState]:
        confirm, nonce, sealed = _confirm_fields(fields, Kind.CODE_CONFIRM)
        keys = self._pending
        assert keys is not None
        # state first, so a session racing a burn cannot learn whether its guess was right
        self._vet(now)
        if not hmac.compare_digest(confirm, keys.guest_confirm):
            raise WrongCode("the code does not match")
        response = self._admit_request(keys.open(Kind.CODE_CONFIRM, nonce, sealed))
        reply_nonce, reply = keys.seal(Kind.CODE_ADMIT, response, self._rng)
        self._pending = None
        return _message(Kind.CODE_ADMIT, keys.host_confirm, reply_nonce, reply), HostState.DONE

    def _vet(self, now: int) -> None:
        """Ask the group layer about the invite and apply every rule to its answer."""
        assert self._invite_id is not None and self._purpose is not None
        record = self._check(self._invite_id)
        _admissible(record, invite=self._invite_id, purpose=self._purpose, now=now)

    def _admit_request(self, request: bytes) -> bytes:
        assert self._invite_id is not None
        response = self._admit(self._invite_id, request)
        if not isinstance(response, bytes) or len(response) > MAX_PAYLOAD_SIZE:
            raise InviteRefused("the response is not at most MAX_PAYLOAD_SIZE bytes")
        return response


_HostHandler = Callable[[PairingHost, list[Value], int], tuple[bytes, HostState]]
_HOST_TRANSITIONS: Final[dict[tuple[HostState, Kind], _HostHandler]] = {
    (HostState.AWAIT_HELLO, Kind.LINK_HELLO): PairingHost._on_link_hello,
    (HostState.AWAIT_HELLO, Kind.CODE_HELLO): PairingHost._on_code_hello,
    (HostState.AWAIT_CODE_CONFIRM, Kind.CODE_CONFIRM): PairingHost._on_code_confirm,
}


# --------------------------------------------------------------------------- the guest


class GuestState(enum.Enum):
    READY = "ready"
    AWAIT_LINK_ADMIT = "await-link-admit"
    AWAIT_CODE_REPLY = "await-code-reply"
    AWAIT_CODE_ADMIT = "await-code-admit"
    DONE = "done"
    FAILED = "failed"


class PairingGuest:
    """The redeeming side. Call :meth:`start`, send its bytes, then feed each reply to
    :meth:`receive` and send what it returns until it returns ``None``; read :attr:`response`."""

    def __init__(
        self,
        *,
        purpose: InvitePurpose,
        request: bytes,
        link: InviteLink | None = None,
        code: ShortCode | None = None,
        rng: Rng | None = None,
    ) -> None:
        if (link is None) == (code is None) or (code is not None and rng is None):
            raise ValueError("give either a link, or a code and an rng")
        if not isinstance(request, bytes) or len(request) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"the request must be at most {MAX_PAYLOAD_SIZE} bytes")
        self._purpose, self._request, self._link, self._code = purpose, request, link, code
        self._rng = rng
        self._state = GuestState.READY
        self._pake: Spake2 | None = None
        self._pake_a = b""
        self._keys: _SessionKeys | None = None
        self._response: bytes | None = None

    @classmethod
    def for_link(cls, link: InviteLink | str, *, request: bytes) -> PairingGuest:
        """Redeem a link (parsed strictly if given as text); the purpose comes from the link."""
        parsed = parse_link(link) if isinstance(link, str) else link
        return cls(purpose=parsed.purpose, request=request, link=parsed)

    @classmethod
    def for_code(
        cls, code: ShortCode | str, *, purpose: InvitePurpose, request: bytes, rng: Rng
    ) -> PairingGuest:
        """Redeem a short code (normalised strictly if given as text) for ``purpose``."""
        parsed = parse_code(code) if isinstance(code, str) else code
        return cls(purpose=purpose, request=request, code=parsed, rng=rng)

    @property
    def state(self) -> GuestState:
        return self._state

    @property
    def response(self) -> bytes:
        """The host's response payload, once DONE."""
        if self._response is None:
            raise LocalProtocolError("the pairing is not done")
        return self._response

    def __repr__(self) -> str:
        return f"PairingGuest(purpose={self._purpose.value}, state={self._state.value})"

    def start(self) -> bytes:
        """The first message to send to the host."""
        if self._state is not GuestState.READY:
            raise LocalProtocolError("start() may only be called once")
        if self._link is not None:
            self._state = GuestState.AWAIT_LINK_ADMIT
            secret = self._link.secret.secret_bytes()
            return _message(Kind.LINK_HELLO, self._purpose.value, secret, self._request)
        assert self._code is not None and self._rng is not None
        self._pake = _pake(PakeSide.A, self._code, self._purpose, self._rng)
        self._pake_a = self._pake.start()
        self._state = GuestState.AWAIT_CODE_REPLY
        return _message(Kind.CODE_HELLO, self._purpose.value, self._code.nameplate, self._pake_a)

    def receive(self, data: bytes) -> bytes | None:
        """Handle one host message; return the next message to send, or ``None`` when DONE.

        Raises :class:`InviteError` or :class:`DecodeError`, leaving the guest FAILED.
        """
        state = self._state
        if state in (GuestState.READY, GuestState.DONE, GuestState.FAILED):
            raise InviteProtocolError(f"no message is expected in {state.value}")
        self._state = GuestState.FAILED
        kind, fields = _read(data)
        handler = _GUEST_TRANSITIONS.get((state, kind))
        if handler is None:
            raise InviteProtocolError(f"unexpected {kind.name} in {state.value}")
        reply, self._state = handler(self, fields)
        return reply

    def _on_abort(self, fields: list[Value]) -> tuple[bytes | None, GuestState]:
        (reason_field,) = _fields(fields, Kind.ABORT, 1)
        try:
            reason = AbortReason(expect_int(reason_field, "reason"))
        except ValueError:
            raise DecodeError("unknown abort reason") from None
        raise _REASON_ERRORS[reason]("the inviter refused the invite: " + _REASON_TEXT[reason])

    def _on_link_admit(self, fields: list[Value]) -> tuple[bytes | None, GuestState]:
        purpose_field, response_field = _fields(fields, Kind.LINK_ADMIT, 2)
        if _purpose_field(purpose_field) is not self._purpose:
            raise WrongPurpose("the host admitted for another purpose")
        self._response = _payload(response_field, "response")
        return None, GuestState.DONE

    def _on_code_reply(self, fields: list[Value]) -> tuple[bytes | None, GuestState]:
        (pake_field,) = _fields(fields, Kind.CODE_REPLY, 1)
        pake_b = expect_bytes(pake_field, "pake", PAKE_MESSAGE_SIZE)
        assert self._pake is not None and self._code is not None and self._rng is not None
        key = self._pake.finish(pake_b)
        keys = _SessionKeys.derive(key, self._purpose, self._code.nameplate, self._pake_a, pake_b)
        self._keys, self._pake = keys, None
        nonce, sealed = keys.seal(Kind.CODE_CONFIRM, self._request, self._rng)
        confirm = _message(Kind.CODE_CONFIRM, keys.guest_confirm, nonce, sealed)
        return confirm, GuestState.AWAIT_CODE_ADMIT

    def _on_code_admit(self, fields: list[Value]) -> tuple[bytes | None, GuestState]:
        confirm, nonce, sealed = _confirm_fields(fields, Kind.CODE_ADMIT)
        keys, self._keys = self._keys, None
        assert keys is not None
        if not hmac.compare_digest(confirm, keys.host_confirm):
            raise WrongCode("the host does not know the code")
        self._response = keys.open(Kind.CODE_ADMIT, nonce, sealed)
        return None, GuestState.DONE


_GuestHandler = Callable[[PairingGuest, list[Value]], tuple[bytes | None, GuestState]]
_GUEST_TRANSITIONS: Final[dict[tuple[GuestState, Kind], _GuestHandler]] = {
    (GuestState.AWAIT_LINK_ADMIT, Kind.LINK_ADMIT): PairingGuest._on_link_admit,
    (GuestState.AWAIT_CODE_REPLY, Kind.CODE_REPLY): PairingGuest._on_code_reply,
    (GuestState.AWAIT_CODE_ADMIT, Kind.CODE_ADMIT): PairingGuest._on_code_admit,
    **{
        (state, Kind.ABORT): PairingGuest._on_abort
        for state in (
            GuestState.AWAIT_LINK_ADMIT,
            GuestState.AWAIT_CODE_REPLY,
            GuestState.AWAIT_CODE_ADMIT,
        )
    },
}
