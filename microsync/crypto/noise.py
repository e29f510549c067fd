"""The primitives the Noise Protocol Framework (revision 34) needs, and nothing else.

* DH: X25519 through :class:`~microsync.crypto.keys.X25519SecretKey` (libsodium). A result
  that is all zeros (the peer sent a low-order point, so the "secret" is known to anyone)
  raises :class:`~microsync.errors.HandshakeError` instead of being mixed into the keys.
* Cipher: ChaCha20-Poly1305 (IETF) from ``cryptography`` (OpenSSL), about 2.5 times faster
  than libsodium's binding on 64 KiB frames (see docs/protocol.md). The 96-bit nonce is Noise's:
  four zero bytes, then the 64-bit counter little-endian. One AEAD object per key, so a
  transport frame costs one OpenSSL call.
* Hashes: BLAKE2b (64-byte output, 128-byte block) and SHA256, with Noise's HMAC-based HKDF.

Noise does its own domain separation (the protocol name is the first thing hashed), so these
functions take no microsync label; nothing outside the Noise code may use them.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from microsync.crypto.keys import X25519PublicKey, X25519SecretKey
from microsync.errors import DecryptionError, HandshakeError

__all__ = [
    "BLAKE2B",
    "DH_LEN",
    "MAX_NONCE",
    "NOISE_HASHES",
    "SHA256",
    "TAG_SIZE",
    "ChaChaPoly",
    "NoiseHash",
    "dh",
]

DH_LEN: Final = 32
KEY_SIZE: Final = 32
TAG_SIZE: Final = 16
MAX_NONCE: Final = 2**64 - 1
_NONCE: Final = struct.Struct("<4xQ")


def dh(secret: X25519SecretKey, public: X25519PublicKey) -> bytes:
    """X25519(secret, public); a low-order ``public`` raises :class:`HandshakeError`."""
    try:
        return secret.exchange(public)
    except DecryptionError:
        raise HandshakeError("the peer's public key is of low order") from None


class ChaChaPoly:
    """ChaCha20-Poly1305 (IETF) under one key, with Noise's nonce encoding.

    ``repr`` never shows the key.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("a ChaChaPoly key is 32 bytes")
        self._aead = ChaCha20Poly1305(bytes(key))

    def encrypt(self, nonce: int, associated_data: bytes, plaintext: bytes) -> bytes:
        """``ciphertext || tag`` of ``plaintext`` under ``nonce`` (0 .. 2**64-1)."""
        return self._aead.encrypt(_NONCE.pack(nonce), plaintext, associated_data)

    def decrypt(self, nonce: int, associated_data: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Inverse of :meth:`encrypt`; every failure is one opaque :class:`DecryptionError`."""
        if len(ciphertext) < TAG_SIZE:
            raise DecryptionError()
        try:
            return self._aead.decrypt(_NONCE.pack(nonce), ciphertext, associated_data)
        except InvalidTag:
            raise DecryptionError() from None

    def rekeyed(self) -> ChaChaPoly:
        """Noise's REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, b"", 32 zero bytes)."""
        return ChaChaPoly(self.encrypt(MAX_NONCE, b"", bytes(KEY_SIZE))[:KEY_SIZE])

    def __repr__(self) -> str:
        return "ChaChaPoly(<key>)"


@dataclass(frozen=True, slots=True)
class NoiseHash:
    """One of Noise's hash functions, with its HMAC and HKDF."""

    name: str
    hash_len: int
    block_len: int
    hashlib_name: str

    def hash(self, data: bytes) -> bytes:
        """HASH(data), ``hash_len`` bytes."""
        return hashlib.new(self.hashlib_name, data).digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """HMAC-HASH(key, data) per RFC 2104, with this hash's own block length."""
        return hmac.digest(key, data, self.hashlib_name)

    def hkdf(self, chaining_key: bytes, key_material: bytes, outputs: int) -> tuple[bytes, ...]:
        """Noise's HKDF(chaining_key, input_key_material, num_outputs), 2 or 3 outputs."""
        if outputs not in (2, 3):
            raise ValueError("Noise's HKDF makes 2 or 3 outputs")
        temp_key = self.hmac(chaining_key, key_material)
        out = [self.hmac(temp_key, b"\x01")]
        for index in range(2, outputs + 1):
            out.append(self.hmac(temp_key, out[-1] + bytes((index,))))
        return tuple(out)


BLAKE2B: Final = NoiseHash("BLAKE2b", 64, 128, "blake2b")
SHA256: Final = NoiseHash("SHA256", 32, 64, "sha256")
NOISE_HASHES: Final = {hash_.name: hash_ for hash_ in (BLAKE2B, SHA256)}
