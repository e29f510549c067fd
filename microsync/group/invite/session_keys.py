"""Code mode's keys: SPAKE2 over the short code, then confirmations and a payload key.

The guest is SPAKE2 side A and the host side B; the purpose is bound into both identities.
From the SPAKE2 key::

    session   = derive_key(INVITE_SESSION_KEY, spake_key, CBOR[v, purpose, nameplate, A, B])
    confirm_G = derive_key(INVITE_CONFIRM_GUEST, session)
    confirm_H = derive_key(INVITE_CONFIRM_HOST, session)
    payload   = derive_key(INVITE_PAYLOAD, session)   AEAD key, ad = CBOR[v, kind, purpose]

so a confirmation proves knowledge of the code for this very exchange, and a sealed payload
opens only in the message kind and for the purpose it was sealed for.
"""

from __future__ import annotations

from dataclasses import dataclass

from microsync.crypto import SymmetricKey, derive_key, labels
from microsync.crypto.keys import AEAD_NONCE_SIZE
from microsync.crypto.pake import PakeSide, Spake2
from microsync.crypto.random import Rng
from microsync.encoding import encode
from microsync.errors import DecryptionError, InviteProtocolError
from microsync.group.invite.link import InvitePurpose
from microsync.group.invite.messages import PROTOCOL_VERSION, Kind
from microsync.group.invite.shortcode import ShortCode

__all__ = ["SessionKeys", "code_pake"]


def code_pake(side: PakeSide, code: ShortCode, purpose: InvitePurpose, rng: Rng) -> Spake2:
    """One side's SPAKE2 over ``code``, for ``purpose``."""
    tag = purpose.value.encode("ascii")
    guest = labels.frame(labels.INVITE_PAKE_GUEST) + tag
    host = labels.frame(labels.INVITE_PAKE_HOST) + tag
    return Spake2(side=side, password=code.password(), id_a=guest, id_b=host, rng=rng)


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """What both sides derive once SPAKE2 is done. ``repr`` is ``object``'s: no key shows."""

    guest_confirm: bytes
    host_confirm: bytes
    payload: SymmetricKey
    purpose: InvitePurpose

    @classmethod
    def derive(
        cls, pake_key: bytes, purpose: InvitePurpose, nameplate: int, pake_a: bytes, pake_b: bytes
    ) -> SessionKeys:
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
        """A fresh nonce and ``payload`` sealed for a message of ``kind``."""
        nonce = rng(AEAD_NONCE_SIZE)
        return nonce, self.payload.encrypt(nonce, payload, self._ad(kind))

    def open(self, kind: Kind, nonce: bytes, sealed: bytes) -> bytes:
        """The payload sealed in a message of ``kind``; :class:`InviteProtocolError` if not."""
        try:
            return self.payload.decrypt(nonce, sealed, self._ad(kind))
        except DecryptionError:
            raise InviteProtocolError("the sealed payload does not open") from None
