"""microsync's cryptography: the only package that imports PyNaCl or cryptography.

Everything above this package works with the typed keys and labelled functions re-exported
here; every label lives in :mod:`microsync.crypto.labels`.
"""

from microsync.crypto import labels
from microsync.crypto.hashing import HASH_SIZE, derive_key, labelled_hash
from microsync.crypto.keys import (
    AEAD_NONCE_SIZE,
    SIGNATURE_SIZE,
    SigningKey,
    SymmetricKey,
    VerifyKey,
    X25519PublicKey,
    X25519SecretKey,
    fingerprint,
)
from microsync.crypto.random import Rng, system_rng
from microsync.crypto.recovery import seed_from_words, words_from_seed

__all__ = [
    "AEAD_NONCE_SIZE",
    "HASH_SIZE",
    "SIGNATURE_SIZE",
    "Rng",
    "SigningKey",
    "SymmetricKey",
    "VerifyKey",
    "X25519PublicKey",
    "X25519SecretKey",
    "derive_key",
    "fingerprint",
    "labelled_hash",
    "labels",
    "seed_from_words",
    "system_rng",
    "words_from_seed",
]
