"""The Noise Protocol Framework, revision 34: CipherState, SymmetricState, HandshakeState.

Theory of operation
-------------------
This is the spec's section 5 written out, sans-IO: every method takes and returns bytes.
A protocol name such as ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b`` is parsed into a
:class:`NoiseProtocol`: a handshake pattern from :data:`PATTERNS` (the fundamental,
one-way and deferred patterns of the spec, written in the spec's own notation) with any
``pskN`` modifiers applied, DH ``25519``, cipher ``ChaChaPoly`` and hash ``BLAKE2b`` or
``SHA256``. Other suites (448, AESGCM, ``fallback``, ``hfs``) are refused with ``ValueError``.
The patterns and names are data, in :mod:`microsync.protocol.noise_patterns` (re-exported
here); this module runs them.

Invariants:

* a failed ``decrypt_with_ad`` raises :class:`~microsync.errors.DecryptionError` and leaves
  the nonce where it was; nonce ``2**64 - 1`` is never used (LocalProtocolError instead);
* a Noise message is at most 65,535 bytes, so a transport plaintext is at most 65,519;
* a DH with a low-order key raises :class:`~microsync.errors.HandshakeError`;
* a HandshakeState whose ``read_message`` failed is dead: any further call raises;
* ``repr`` shows roles and counters, never a key, and no error message carries key bytes.

Ephemeral keys come from the caller's ``rng``; tests may inject them (``ephemeral=``) to
reproduce the published vectors byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from microsync.crypto import Rng, X25519PublicKey, X25519SecretKey
from microsync.crypto.noise import DH_LEN, MAX_NONCE, TAG_SIZE, ChaChaPoly, NoiseHash
from microsync.crypto.noise import dh as _dh
from microsync.errors import LocalProtocolError, RemoteProtocolError
from microsync.protocol.noise_patterns import (
    PATTERNS,
    HandshakePattern,
    NoiseProtocol,
    Token,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_PLAINTEXT_SIZE",
    "PATTERNS",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "NoiseProtocol",
    "SymmetricState",
    "Token",
]

MAX_MESSAGE_SIZE: Final = 65535
MAX_PLAINTEXT_SIZE: Final = MAX_MESSAGE_SIZE - TAG_SIZE
PSK_SIZE: Final = 32


class CipherState:
    """A key (or none) and a 64-bit nonce counter (Noise 5.1)."""

    __slots__ = ("_cipher", "_nonce")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self._cipher = None if key is None else ChaChaPoly(key)
        self._nonce = nonce

    def has_key(self) -> bool:
        return self._cipher is not None

    @property
    def nonce(self) -> int:
        return self._nonce

    def set_nonce(self, nonce: int) -> None:
        self._nonce = nonce

    def encrypt_with_ad(self, associated_data: bytes, plaintext: bytes) -> bytes:
        """Encrypt and advance the nonce; without a key, return ``plaintext`` unchanged."""
        if self._cipher is None:
            return plaintext
        if len(plaintext) > MAX_PLAINTEXT_SIZE:
            raise LocalProtocolError(f"a Noise plaintext is at most {MAX_PLAINTEXT_SIZE} bytes")
        ciphertext = self._cipher.encrypt(self._use_nonce(), associated_data, plaintext)
        self._nonce += 1
        return ciphertext

    def decrypt_with_ad(self, associated_data: bytes, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt and advance the nonce; a failure raises and leaves the nonce unchanged."""
        if self._cipher is None:
            return bytes(ciphertext)
        if len(ciphertext) > MAX_MESSAGE_SIZE:
            raise RemoteProtocolError(f"a Noise message is at most {MAX_MESSAGE_SIZE} bytes")
        plaintext = self._cipher.decrypt(self._use_nonce(), associated_data, ciphertext)
        self._nonce += 1
        return plaintext

    def rekey(self) -> None:
        """Noise's Rekey(): replace the key by REKEY(k); the nonce is kept."""
        if self._cipher is not None:
            self._cipher = self._cipher.rekeyed()

    def _use_nonce(self) -> int:
        if self._nonce >= MAX_NONCE:
            raise LocalProtocolError("the Noise nonce is exhausted")
        return self._nonce

    def __repr__(self) -> str:
        keyed = "keyed" if self._cipher is not None else "empty"
        return f"CipherState({keyed}, nonce={self._nonce})"


class SymmetricState:
    """The chaining key ``ck`` and handshake hash ``h`` (Noise 5.2)."""

    __slots__ = ("_cipher", "_ck", "_h", "_hash")

    def __init__(self, protocol_name: bytes, hash_: NoiseHash) -> None:
        self._hash = hash_
        if len(protocol_name) <= hash_.hash_len:
            self._h = protocol_name.ljust(hash_.hash_len, b"\x00")
        else:
            self._h = hash_.hash(protocol_name)
        self._ck = self._h
        self._cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        """``h``: not secret, but unique to this session (use it for channel binding)."""
        return self._h

    def has_key(self) -> bool:
        return self._cipher.has_key()

    def mix_key(self, key_material: bytes) -> None:
        self._ck, temp_key = self._hash.hkdf(self._ck, key_material, 2)
        self._cipher = CipherState(temp_key[:32])

    def mix_hash(self, data: bytes) -> None:
        self._h = self._hash.hash(self._h + data)

    def mix_key_and_hash(self, key_material: bytes) -> None:
        self._ck, temp_h, temp_key = self._hash.hkdf(self._ck, key_material, 3)
        self.mix_hash(temp_h)
        self._cipher = CipherState(temp_key[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """The initiator-to-responder and responder-to-initiator CipherStates."""
        temp_k1, temp_k2 = self._hash.hkdf(self._ck, b"", 2)
        return CipherState(temp_k1[:32]), CipherState(temp_k2[:32])

    def __repr__(self) -> str:
        return f"SymmetricState({self._hash.name})"


class HandshakeState:
    """One side of a Noise handshake (Noise 5.3).

    ``static`` is our static key pair, ``remote_static`` the peer's public key if known in
    advance, ``psks`` the pre-shared keys in the order their tokens appear. ``ephemeral``
    injects our ephemeral key (for test vectors); otherwise it is drawn from ``rng``.
    """

    __slots__ = (
        "_dead",
        "_e",
        "_index",
        "_initiator",
        "_protocol",
        "_psks",
        "_re",
        "_rng",
        "_rs",
        "_s",
        "_symmetric",
    )

    def __init__(
        self,
        protocol: NoiseProtocol | str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: X25519SecretKey | None = None,
        remote_static: X25519PublicKey | None = None,
        psks: Sequence[bytes] = (),
        ephemeral: X25519SecretKey | None = None,
        rng: Rng | None = None,
    ) -> None:
        if isinstance(protocol, str):
            protocol = NoiseProtocol.from_name(protocol)
        self._protocol = protocol
        self._initiator = initiator
        self._s, self._rs, self._e, self._rng = static, remote_static, ephemeral, rng
        self._re: X25519PublicKey | None = None
        self._psks = _checked_psks(protocol.pattern, psks)
        self._index = 0
        self._dead = False
        self._symmetric = SymmetricState(protocol.name, protocol.hash)
        self._symmetric.mix_hash(prologue)
        pattern = protocol.pattern
        for pre, ours in (
            (pattern.initiator_pre, initiator),
            (pattern.responder_pre, not initiator),
        ):
            for token in pre:
                self._symmetric.mix_hash(bytes(self._pre_message_key(token, ours)))

    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def finished(self) -> bool:
        return self._index == len(self._protocol.pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> X25519PublicKey | None:
        """The peer's static public key, once known (pre-message or received)."""
        return self._rs

    def my_turn(self) -> bool:
        """Whether the next handshake message is ours to write."""
        return not self.finished and (self._index % 2 == 0) == self._initiator

    def write_message(self, payload: bytes) -> bytes:
        """The next handshake message, carrying ``payload``."""
        self._check_turn(writing=True)
        self._dead = True
        out = [self._write_token(token) for token in self._protocol.pattern.messages[self._index]]
        out.append(self._symmetric.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE_SIZE:
            raise LocalProtocolError(f"a Noise message is at most {MAX_MESSAGE_SIZE} bytes")
        self._dead = False
        self._index += 1
        return message

    def read_message(self, message: bytes) -> bytes:
        """The payload of the peer's next handshake message. Any failure kills this state."""
        self._check_turn(writing=False)
        self._dead = True
        if len(message) > MAX_MESSAGE_SIZE:
            raise RemoteProtocolError(f"a Noise message is at most {MAX_MESSAGE_SIZE} bytes")
        rest = memoryview(message)
        for token in self._protocol.pattern.messages[self._index]:
            rest = self._read_token(token, rest)
        payload = self._symmetric.decrypt_and_hash(bytes(rest))
        self._dead = False
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """After the last message: ``(send, receive)`` CipherStates for this side."""
        if not self.finished or self._dead:
            raise LocalProtocolError("the handshake is not finished")
        initiator_to_responder, responder_to_initiator = self._symmetric.split()
        if self._initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder

    def _check_turn(self, *, writing: bool) -> None:
        if self._dead:
            raise LocalProtocolError("the handshake already failed")
        if self.finished:
            raise LocalProtocolError("the handshake is finished")
        if self.my_turn() != writing:
            raise LocalProtocolError(
                "it is not this side's turn to " + ("write" if writing else "read")
            )

    def _write_token(self, token: Token) -> bytes:
        symmetric = self._symmetric
        match token:
            case Token.E:
                if self._e is None:
                    if self._rng is None:
                        raise LocalProtocolError("an ephemeral key needs an rng")
                    self._e = X25519SecretKey.generate(self._rng)
                public = bytes(self._e.public)
                symmetric.mix_hash(public)
                if self._protocol.has_psk:
                    symmetric.mix_key(public)
                return public
            case Token.S:
                return symmetric.encrypt_and_hash(bytes(self._own(self._s, "static").public))
            case Token.PSK:
                symmetric.mix_key_and_hash(self._psks.pop(0))
                return b""
            case _:
                symmetric.mix_key(self._dh(token))
                return b""

    def _read_token(self, token: Token, rest: memoryview) -> memoryview:
        symmetric = self._symmetric
        match token:
            case Token.E:
                if len(rest) < DH_LEN:
                    raise RemoteProtocolError("a Noise handshake message is truncated")
                public = bytes(rest[:DH_LEN])
                self._re = X25519PublicKey(public)
                symmetric.mix_hash(public)
                if self._protocol.has_psk:
                    symmetric.mix_key(public)
                return rest[DH_LEN:]
            case Token.S:
                size = DH_LEN + (TAG_SIZE if symmetric.has_key() else 0)
                if len(rest) < size:
                    raise RemoteProtocolError("a Noise handshake message is truncated")
                self._rs = X25519PublicKey(symmetric.decrypt_and_hash(bytes(rest[:size])))
                return rest[size:]
            case Token.PSK:
                symmetric.mix_key_and_hash(self._psks.pop(0))
                return rest
            case _:
                symmetric.mix_key(self._dh(token))
                return rest

    def _dh(self, token: Token) -> bytes:
        """ee, es, se, ss: the first letter is the initiator's key, the second the responder's."""
        initiator_key, responder_key = token.value[0], token.value[1]
        mine, theirs = (
            (initiator_key, responder_key) if self._initiator else (responder_key, initiator_key)
        )
        secret = self._own(
            self._e if mine == "e" else self._s, "ephemeral" if mine == "e" else "static"
        )
        public = self._re if theirs == "e" else self._rs
        if public is None:
            raise LocalProtocolError("the peer's key for a DH is not known")
        return _dh(secret, public)

    def _pre_message_key(self, token: Token, ours: bool) -> X25519PublicKey:
        if token is Token.S:
            key = self._own(self._s, "static").public if ours else self._rs
        elif token is Token.E:
            key = self._own(self._e, "ephemeral").public if ours else self._re
        else:
            raise ValueError("a pre-message holds only e and s")
        if key is None:
            raise LocalProtocolError("the pattern needs the peer's static key in advance")
        return key

    @staticmethod
    def _own(key: X25519SecretKey | None, what: str) -> X25519SecretKey:
        if key is None:
            raise LocalProtocolError(f"the pattern needs our {what} key")
        return key

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        name = self._protocol.name.decode()
        return f"HandshakeState({name}, {role}, message={self._index})"


def _checked_psks(pattern: HandshakePattern, psks: Sequence[bytes]) -> list[bytes]:
    needed = sum(message.count(Token.PSK) for message in pattern.messages)
    if len(psks) != needed:
        raise ValueError(f"pattern {pattern.name} needs {needed} PSKs")
    if any(len(psk) != PSK_SIZE for psk in psks):
        raise ValueError("a Noise PSK is 32 bytes")
    return list(psks)
