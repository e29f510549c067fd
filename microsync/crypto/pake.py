"""SPAKE2 over Ed25519 (the ``spake2`` package), typed, fed by our ``Rng``, failing in our types.

Theory of operation
-------------------
Two parties that share a low-entropy password (a short invite code read aloud) each call
:meth:`Spake2.start`, swap the 33-byte messages, and call :meth:`Spake2.finish` with the
other's message. Both get the same 32-byte key exactly when both used the same password and the
same pair of identities ``(id_a, id_b)``; a party that guessed wrong learns nothing it can test
offline, so every wrong guess costs an online attempt. The key is NOT confirmed here: callers
prove possession with labelled MACs (see :mod:`microsync.group.invite`).

Invariants
----------
* Randomness comes only from the caller's ``rng``: the same ``rng`` gives the same message.
* One instance runs once: ``start`` then ``finish``, each once (:class:`LocalProtocolError`).
* A peer message is accepted only if it is 33 bytes, comes from the other side, is the canonical
  encoding of a point in the prime-order subgroup (not the identity) and is not our own message
  reflected back. Everything else is a :class:`DecodeError`; nothing from the library escapes.
"""

from __future__ import annotations

import enum
from typing import Final

from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError  # type: ignore[import-untyped]
from spake2.ed25519_basic import NotOnCurve  # type: ignore[import-untyped]
from spake2.parameters.ed25519 import ParamsEd25519  # type: ignore[import-untyped]

from microsync.crypto.random import Rng
from microsync.errors import DecodeError, LocalProtocolError

__all__ = ["PAKE_KEY_SIZE", "PAKE_MESSAGE_SIZE", "PakeSide", "Spake2"]

PAKE_MESSAGE_SIZE: Final = 33
"""One side byte (``A`` or ``B``) and a 32-byte Ed25519 point."""
PAKE_KEY_SIZE: Final = 32
_ELEMENT_SIZE: Final = 32
# the library reports bad input with its own errors, ValueError, and sometimes ``assert``
_LIBRARY_ERRORS = (SPAKEError, NotOnCurve, ValueError, TypeError, ArithmeticError, AssertionError)


class PakeSide(enum.Enum):
    """Which side of asymmetric SPAKE2 this party plays (the two must differ)."""

    A = b"A"
    B = b"B"


class Spake2:
    """One run of SPAKE2 for one side. Never shows the password."""

    __slots__ = ("_finished", "_outbound", "_side", "_spake")

    def __init__(
        self, *, side: PakeSide, password: bytes, id_a: bytes, id_b: bytes, rng: Rng
    ) -> None:
        if not all(isinstance(v, bytes) for v in (password, id_a, id_b)):
            raise TypeError("password and identities must be bytes")
        if not password:
            raise ValueError("the password must not be empty")
        cls = SPAKE2_A if side is PakeSide.A else SPAKE2_B
        self._side = side
        self._spake = cls(password, idA=id_a, idB=id_b, entropy_f=_entropy(rng))
        self._outbound: bytes | None = None
        self._finished = False

    def __repr__(self) -> str:
        return f"Spake2(side={self._side.name})"

    def start(self) -> bytes:
        """Our 33-byte message for the other side."""
        if self._outbound is not None:
            raise LocalProtocolError("SPAKE2 start() may only be called once")
        self._outbound = bytes(self._spake.start())
        return self._outbound

    def finish(self, inbound: bytes) -> bytes:
        """The 32-byte shared key, given the other side's message (unconfirmed: see module)."""
        if self._outbound is None:
            raise LocalProtocolError("SPAKE2 finish() needs start() first")
        if self._finished:
            raise LocalProtocolError("SPAKE2 finish() may only be called once, even after failing")
        self._finished = True
        _check_message(inbound, expected_side=_other(self._side), ours=self._outbound)
        try:
            key = self._spake.finish(bytes(inbound))
        except _LIBRARY_ERRORS:
            raise DecodeError("not a valid SPAKE2 message") from None
        if not isinstance(key, bytes) or len(key) != PAKE_KEY_SIZE:  # pragma: no cover
            raise DecodeError("SPAKE2 produced no key")
        return key


def _other(side: PakeSide) -> PakeSide:
    return PakeSide.B if side is PakeSide.A else PakeSide.A


def _entropy(rng: Rng) -> Rng:
    def entropy(n: int) -> bytes:
        out = rng(n)
        if len(out) != n:
            raise ValueError("the rng returned the wrong number of bytes")
        return bytes(out)

    return entropy


def _check_message(inbound: bytes, *, expected_side: PakeSide, ours: bytes) -> None:
    """Shape checks the library leaves to ``assert`` or does not make (canonical encoding)."""
    if not isinstance(inbound, bytes | bytearray) or len(inbound) != PAKE_MESSAGE_SIZE:
        raise DecodeError(f"a SPAKE2 message is {PAKE_MESSAGE_SIZE} bytes")
    if bytes(inbound[:1]) != expected_side.value:
        raise DecodeError("the SPAKE2 message is not from the other side")
    if bytes(inbound[1:]) == ours[1:]:
        raise DecodeError("our own SPAKE2 message came back")
    element = bytes(inbound[1:])
    try:
        canonical = ParamsEd25519.group.bytes_to_element(element).to_bytes()
    except _LIBRARY_ERRORS:
        raise DecodeError("not a valid SPAKE2 message") from None
    if canonical != element or len(canonical) != _ELEMENT_SIZE:
        raise DecodeError("not the canonical encoding of a SPAKE2 element")
