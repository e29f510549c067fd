"""Typed key values over PyNaCl's bindings.

Key objects never show secret bytes: ``repr`` and ``str`` give a short fingerprint of the public
half (or of the key itself, through a one-way hash, for symmetric keys). Secret bytes leave an
object only through an explicitly named method (``secret_bytes()``), for storage.

Signatures are Ed25519 over ``frame(label) || message`` so a signature made for one purpose can
never be replayed as another.
"""

from __future__ import annotations

import hmac
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions

from microsync.crypto.hashing import labelled_hash
from microsync.crypto.labels import FINGERPRINT, Label, frame
from microsync.crypto.random import Rng
from microsync.errors import BadSignature, DecryptionError

__all__ = [
    "SIGNATURE_SIZE",
    "SigningKey",
    "SymmetricKey",
    "VerifyKey",
    "X25519PublicKey",
    "X25519SecretKey",
    "fingerprint",
]

SIGNATURE_SIZE: Final = 64
KEY_SIZE: Final = 32
AEAD_NONCE_SIZE: Final = 24
AEAD_TAG_SIZE: Final = 16


def fingerprint(public_bytes: bytes) -> str:
    """A short, stable, non-secret name for a public value: 16 hex digits."""
    return labelled_hash(FINGERPRINT, public_bytes)[:8].hex()


def _check_size(name: str, value: bytes, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")
    return bytes(value)


class VerifyKey:
    """An Ed25519 public key. Equal keys compare equal and hash alike."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = _check_size("an Ed25519 public key", key, KEY_SIZE)

    def __bytes__(self) -> bytes:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"VerifyKey({fingerprint(self._key)})"

    def verify(self, label: Label, message: bytes, signature: bytes) -> None:
        """Raise :class:`BadSignature` unless ``signature`` signs ``message`` under ``label``."""
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignature("signature has the wrong length")
        try:
            sodium.crypto_sign_open(signature + frame(label) + message, self._key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise BadSignature("signature does not verify") from exc


class SigningKey:
    """An Ed25519 secret key, built from a 32-byte seed."""

    __slots__ = ("_public", "_secret", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = _check_size("an Ed25519 seed", seed, KEY_SIZE)
        public, self._secret = sodium.crypto_sign_seed_keypair(self._seed)
        self._public = VerifyKey(public)

    @classmethod
    def generate(cls, rng: Rng) -> SigningKey:
        """A fresh key from ``rng`` (a function returning that many random bytes)."""
        return cls(rng(KEY_SIZE))

    @property
    def public(self) -> VerifyKey:
        return self._public

    def secret_bytes(self) -> bytes:
        """The 32-byte seed. Only for sealing the key into storage or recovery words."""
        return self._seed

    def sign(self, label: Label, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``frame(label) || message``."""
        signed = sodium.crypto_sign(frame(label) + message, self._secret)
        return bytes(signed[:SIGNATURE_SIZE])

    def __repr__(self) -> str:
        return f"SigningKey(public={fingerprint(bytes(self._public))})"

    __str__ = __repr__


class X25519PublicKey:
    """An X25519 public key (transport keys and prekeys)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = _check_size("an X25519 public key", key, KEY_SIZE)

    def __bytes__(self) -> bytes:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519PublicKey) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"X25519PublicKey({fingerprint(self._key)})"


class X25519SecretKey:
    """An X25519 secret key."""

    __slots__ = ("_public", "_secret")

    def __init__(self, secret: bytes) -> None:
        self._secret = _check_size("an X25519 secret key", secret, KEY_SIZE)
        self._public = X25519PublicKey(sodium.crypto_scalarmult_base(self._secret))

    @classmethod
    def generate(cls, rng: Rng) -> X25519SecretKey:
        return cls(rng(KEY_SIZE))

    @property
    def public(self) -> X25519PublicKey:
        return self._public

    def secret_bytes(self) -> bytes:
        """The 32 secret bytes. Only for sealing the key into storage."""
        return self._secret

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """The X25519 shared secret with ``peer``.

        A low-order ``peer`` key (whose result would be all zeros, contributing nothing secret)
        raises :class:`DecryptionError`, so a forged public key cannot force a known secret.
        """
        try:
            shared = bytes(sodium.crypto_scalarmult(self._secret, bytes(peer)))
        except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError):
            raise DecryptionError() from None
        if not any(shared):
            raise DecryptionError()
        return shared

    def __repr__(self) -> str:
        return f"X25519SecretKey(public={fingerprint(bytes(self._public))})"

    __str__ = __repr__


class SymmetricKey:
    """A 32-byte key for XChaCha20-Poly1305 (epoch keys, sealed profile secrets)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = _check_size("a symmetric key", key, KEY_SIZE)

    @classmethod
    def generate(cls, rng: Rng) -> SymmetricKey:
        return cls(rng(KEY_SIZE))

    def secret_bytes(self) -> bytes:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymmetricKey) and hmac.compare_digest(other._key, self._key)

    def __hash__(self) -> int:
        return hash(labelled_hash(FINGERPRINT, self._key))

    def __repr__(self) -> str:
        return f"SymmetricKey({fingerprint(self._key)})"

    __str__ = __repr__

    def encrypt(self, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        """XChaCha20-Poly1305 with a 24-byte nonce; returns ciphertext || 16-byte tag."""
        _check_size("an XChaCha20 nonce", nonce, AEAD_NONCE_SIZE)
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
                plaintext, associated_data, nonce, self._key
            )
        )

    def decrypt(self, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; any failure is one opaque :class:`DecryptionError`."""
        if len(nonce) != AEAD_NONCE_SIZE or len(ciphertext) < AEAD_TAG_SIZE:
            raise DecryptionError()
        try:
            return bytes(
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    ciphertext, associated_data, nonce, self._key
                )
            )
        except nacl.exceptions.CryptoError:
            raise DecryptionError() from None
