"""Short codes for reading an invite aloud: ``7-ocean-violin``.

A :class:`ShortCode` is a public nameplate (1 to 999, so the host can find the invite) and 2 to
8 secret words from the BIP39 English list (11 bits each): the default two words give 22 bits,
enough because the code is only a SPAKE2 password and one wrong guess burns the invite.
:func:`parse_code` normalises what a person types or says (case, spaces, ``-_.,/:``) and never
echoes it in an error; ``repr`` shows only the nameplate.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from mnemonic import Mnemonic

from microsync.crypto.random import Rng
from microsync.errors import InviteError, MalformedInvite

__all__ = [
    "DEFAULT_CODE_WORDS",
    "MAX_CODE_WORDS",
    "MAX_NAMEPLATE",
    "MIN_CODE_WORDS",
    "ShortCode",
    "parse_code",
]

MAX_NAMEPLATE: Final = 999
MIN_CODE_WORDS: Final = 2
MAX_CODE_WORDS: Final = 8
DEFAULT_CODE_WORDS: Final = 2
_MAX_CODE_TEXT: Final = 128
_DIGITS = re.compile(r"[0-9]+")
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
