"""Recovery words: a 32-byte person-key seed as 24 BIP39 English words, and back."""

from __future__ import annotations

from functools import cache

from mnemonic import Mnemonic

from microsync.errors import DecodeError

__all__ = ["WORD_COUNT", "seed_from_words", "words_from_seed"]

WORD_COUNT = 24


@cache
def _bip39() -> Mnemonic:
    return Mnemonic("english")


def words_from_seed(seed: bytes) -> list[str]:
    """The 24 words that encode ``seed`` (32 bytes) with BIP39's checksum."""
    if len(seed) != 32:
        raise ValueError("a recovery seed is 32 bytes")
    return str(_bip39().to_mnemonic(seed)).split()


def seed_from_words(words: list[str] | str) -> bytes:
    """The seed encoded by ``words``; :class:`DecodeError` if they are not a valid phrase."""
    text = words if isinstance(words, str) else " ".join(words)
    phrase = " ".join(text.split()).lower()
    if len(phrase.split()) != WORD_COUNT:
        raise DecodeError(f"a recovery phrase has {WORD_COUNT} words")
    try:
        return bytes(_bip39().to_entropy(phrase))
    except (ValueError, LookupError):
        raise DecodeError(
            "recovery words are not a valid phrase (unknown word or checksum)"
        ) from None
