"""An invite's terms: what its issuer holds (:class:`Invite`) and what a host checks.

The issuer keeps the whole :class:`Invite` (secret, short code, purpose, role, expiry, ways to
reach it); the group sees only its :class:`InviteRecord`: id, purpose, expiry and
:class:`InviteState`. A pairing host asks the group layer through the four callbacks below and
applies :func:`admissible`, the one place that says which record may be redeemed now.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from microsync.crypto import fingerprint
from microsync.crypto.random import Rng
from microsync.errors import (
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteRevoked,
    InviteUnknown,
    WrongPurpose,
)
from microsync.group.invite.link import (
    InviteId,
    InviteLink,
    InvitePurpose,
    InviteSecret,
    check_reachability,
    format_link,
)
from microsync.group.invite.shortcode import DEFAULT_CODE_WORDS, ShortCode
from microsync.group.membership import INVITE_CLOCK_TOLERANCE_MS
from microsync.group.ops import Role

__all__ = [
    "DEFAULT_INVITE_TTL_MS",
    "INVITE_CLOCK_TOLERANCE_MS",
    "Admit",
    "Burn",
    "CheckInvite",
    "FindCode",
    "Invite",
    "InviteRecord",
    "InviteState",
    "admissible",
]

DEFAULT_INVITE_TTL_MS: Final = 24 * 3600 * 1000


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
        check_reachability(self.addresses, self.relay)

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


class InviteState(enum.StrEnum):
    """What the group layer knows of an invite (a ``StrEnum``: ``state == "open"`` holds)."""

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


def admissible(
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
