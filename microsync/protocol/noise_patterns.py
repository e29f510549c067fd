"""Noise handshake patterns (revision 34, sections 7 and 9) and protocol names (section 8).

:data:`PATTERNS` holds the fundamental, one-way and deferred patterns in the spec's own
notation, parsed by :meth:`HandshakePattern.parse`; ``pskN`` modifiers are applied by
:meth:`HandshakePattern.with_psks`. :meth:`NoiseProtocol.from_name` reads a name such as
``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`` into a pattern and a hash; other suites are refused
with ``ValueError``. Pure data: :mod:`microsync.protocol.noise` runs a pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from microsync.crypto.noise import NOISE_HASHES, NoiseHash

__all__ = ["PATTERNS", "HandshakePattern", "Message", "NoiseProtocol", "Token"]


class Token(Enum):
    """A token of a handshake pattern."""

    E = "e"
    S = "s"
    EE = "ee"
    ES = "es"
    SE = "se"
    SS = "ss"
    PSK = "psk"


Message = tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """Pre-messages and messages; even message indexes go initiator -> responder."""

    name: str
    initiator_pre: Message
    responder_pre: Message
    messages: tuple[Message, ...]
    one_way: bool

    @classmethod
    def parse(cls, name: str, notation: str) -> HandshakePattern:
        """Read the spec's notation, lines separated by ``/``: ``"<- s / ... / -> e, es"``."""
        lines = [line.strip() for line in notation.split("/")]
        split = lines.index("...") if "..." in lines else -1
        pre, messages = lines[: max(split, 0)], lines[split + 1 :]
        pre_by_arrow = {arrow: _tokens(line) for line in pre for arrow in (line[:2],)}
        for index, line in enumerate(messages):
            if line[:2] != ("->" if index % 2 == 0 else "<-"):
                raise ValueError(f"pattern {name}: messages must alternate from the initiator")
        return cls(
            name=name,
            initiator_pre=pre_by_arrow.get("->", ()),
            responder_pre=pre_by_arrow.get("<-", ()),
            messages=tuple(_tokens(line) for line in messages),
            one_way=len(messages) == 1,
        )

    def with_psks(self, positions: Sequence[int]) -> HandshakePattern:
        """Apply ``pskN`` modifiers: psk0 opens message 0, pskN (N >= 1) ends message N-1."""
        messages = [list(message) for message in self.messages]
        for position in positions:
            if position == 0:
                messages[0].insert(0, Token.PSK)
            elif position <= len(messages):
                messages[position - 1].append(Token.PSK)
            else:
                raise ValueError(f"psk{position} is beyond the last message of {self.name}")
        return HandshakePattern(
            name=self.name + "+".join(f"psk{p}" for p in positions),
            initiator_pre=self.initiator_pre,
            responder_pre=self.responder_pre,
            messages=tuple(tuple(m) for m in messages),
            one_way=self.one_way,
        )


def _tokens(line: str) -> Message:
    return tuple(Token(token.strip()) for token in line[2:].split(","))


# Noise revision 34, sections 7.4 (one-way), 7.5 (interactive) and 7.6 (deferred).
_NOTATION: Final = {
    "N": "<- s / ... / -> e, es",
    "K": "-> s / <- s / ... / -> e, es, ss",
    "X": "<- s / ... / -> e, es, s, ss",
    "NN": "-> e / <- e, ee",
    "NK": "<- s / ... / -> e, es / <- e, ee",
    "NX": "-> e / <- e, ee, s, es",
    "KN": "-> s / ... / -> e / <- e, ee, se",
    "KK": "-> s / <- s / ... / -> e, es, ss / <- e, ee, se",
    "KX": "-> s / ... / -> e / <- e, ee, se, s, es",
    "XN": "-> e / <- e, ee / -> s, se",
    "XK": "<- s / ... / -> e, es / <- e, ee / -> s, se",
    "XX": "-> e / <- e, ee, s, es / -> s, se",
    "IN": "-> e, s / <- e, ee, se",
    "IK": "<- s / ... / -> e, es, s, ss / <- e, ee, se",
    "IX": "-> e, s / <- e, ee, se, s, es",
    "NK1": "<- s / ... / -> e / <- e, ee, es",
    "NX1": "-> e / <- e, ee, s / -> es",
    "X1N": "-> e / <- e, ee / -> s / <- se",
    "X1K": "<- s / ... / -> e, es / <- e, ee / -> s / <- se",
    "XK1": "<- s / ... / -> e / <- e, ee, es / -> s, se",
    "X1K1": "<- s / ... / -> e / <- e, ee, es / -> s / <- se",
    "X1X": "-> e / <- e, ee, s, es / -> s / <- se",
    "XX1": "-> e / <- e, ee, s / -> es, s, se",
    "X1X1": "-> e / <- e, ee, s / -> es, s / <- se",
    "K1N": "-> s / ... / -> e / <- e, ee / -> se",
    "K1K": "-> s / <- s / ... / -> e, es / <- e, ee / -> se",
    "KK1": "-> s / <- s / ... / -> e / <- e, ee, se, es",
    "K1K1": "-> s / <- s / ... / -> e / <- e, ee, es / -> se",
    "K1X": "-> s / ... / -> e / <- e, ee, s, es / -> se",
    "KX1": "-> s / ... / -> e / <- e, ee, se, s / -> es",
    "K1X1": "-> s / ... / -> e / <- e, ee, s / -> se, es",
    "I1N": "-> e, s / <- e, ee / -> se",
    "I1K": "<- s / ... / -> e, es, s / <- e, ee / -> se",
    "IK1": "<- s / ... / -> e, s / <- e, ee, se, es",
    "I1K1": "<- s / ... / -> e, s / <- e, ee, es / -> se",
    "I1X": "-> e, s / <- e, ee, s, es / -> se",
    "IX1": "-> e, s / <- e, ee, se, s / -> es",
    "I1X1": "-> e, s / <- e, ee, s / -> se, es",
}
PATTERNS: Final = {name: HandshakePattern.parse(name, text) for name, text in _NOTATION.items()}
_NAME: Final = re.compile(r"Noise_([A-Z0-9]+)((?:psk\d+)(?:\+psk\d+)*)?_([^_]+)_([^_]+)_([^_]+)")


@dataclass(frozen=True, slots=True)
class NoiseProtocol:
    """A parsed protocol name: the (modified) pattern and the hash; DH and cipher are fixed."""

    name: bytes
    pattern: HandshakePattern
    hash: NoiseHash

    @property
    def has_psk(self) -> bool:
        return any(Token.PSK in message for message in self.pattern.messages)

    @classmethod
    def from_name(cls, name: str) -> NoiseProtocol:
        """Parse ``Noise_<pattern>_25519_ChaChaPoly_<BLAKE2b|SHA256>``; ``ValueError`` if not."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError("not a supported Noise protocol name")
        base, modifiers, dh_name, cipher, hash_name = match.groups()
        if base not in PATTERNS or dh_name != "25519" or cipher != "ChaChaPoly":
            raise ValueError("unsupported Noise pattern, DH or cipher")
        if hash_name not in NOISE_HASHES:
            raise ValueError("unsupported Noise hash")
        pattern = PATTERNS[base]
        if modifiers:
            pattern = pattern.with_psks([int(m) for m in modifiers[3:].split("+psk")])
        return cls(name=name.encode("ascii"), pattern=pattern, hash=NOISE_HASHES[hash_name])
