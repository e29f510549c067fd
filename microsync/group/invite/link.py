"""Invite secrets, their public ids and the invite link format (``microsync:join?...``).

A link carries a 32-byte :class:`InviteSecret` (base32, lower case, no padding), the purpose
and 1 to 8 ways to reach the host: ``host:port`` / ``[ipv6]:port`` addresses and at most one
relay URL::

    microsync:join?v=1&s=<secret>&at=<host:port>...[&r=<relay>]&p=<invite|link>

:func:`parse_link` accepts only the canonical spelling :func:`format_link` writes (it re-formats
and compares), and never echoes its input in an error. The group learns only the secret's hash,
the :data:`InviteId`; no ``repr`` shows a secret or a link.
"""

from __future__ import annotations

import base64
import enum
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Final, NewType

from microsync.crypto import derive_key, fingerprint, labelled_hash, labels
from microsync.crypto.random import Rng
from microsync.errors import DecodeError, MalformedInvite

__all__ = [
    "LINK_SCHEME",
    "LINK_VERSION",
    "MAX_ADDRESSES",
    "MAX_LINK_LENGTH",
    "SECRET_SIZE",
    "InviteId",
    "InviteLink",
    "InvitePurpose",
    "InviteSecret",
    "check_reachability",
    "format_link",
    "invite_id",
    "invite_rendezvous",
    "parse_link",
    "parse_purpose",
]

LINK_VERSION: Final = 1
SECRET_SIZE: Final = 32
MAX_ADDRESSES: Final = 8
MAX_LINK_LENGTH: Final = 2048

InviteId = NewType("InviteId", bytes)
"""``labelled_hash(INVITE_ID, secret)``: public, safe to publish to the group."""


class InvitePurpose(enum.StrEnum):
    """What redeeming the invite does. Bound into every message, so one cannot pass as the other."""

    INVITE = "invite"  # a person joins a group
    LINK = "link"  # a new device of the same person


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


LINK_SCHEME: Final = "microsync:"
"""What every invite link starts with (a short code never does)."""
_LINK_PREFIX: Final = LINK_SCHEME + "join?"
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
        check_reachability(self.addresses, self.relay)


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
        purpose=parse_purpose(_one(values, "p"), MalformedInvite),
        addresses=tuple(values.get("at", [])),
        relay=relays[0] if relays else None,
    )
    if format_link(link) != text:
        raise MalformedInvite("not the canonical form of the link")
    return link


def check_reachability(addresses: tuple[str, ...], relay: str | None) -> None:
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


def parse_purpose(value: str, error: type[MalformedInvite | DecodeError]) -> InvitePurpose:
    try:
        return InvitePurpose(value)
    except ValueError:
        raise error("unknown invite purpose") from None
