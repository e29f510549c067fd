"""Known-answer tests: every vector in tests/vectors/noise/ (cacophony, snow, noise-c).

Each vector is one test id ``<file>:<index>:<protocol name>``. A vector whose suite this
implementation does not speak is skipped with the reason in its id, never silently dropped; the
trimmed files hold only 25519/ChaChaPoly/BLAKE2b|SHA256 suites, so today every vector runs,
including the deferred patterns and multi-PSK modifiers. Checked for each: every handshake
message byte for byte in both directions, the payload the reader recovers, the handshake hash
(when the file has one) on both sides, then every transport message after Split().
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from microsync.crypto import X25519PublicKey, X25519SecretKey
from microsync.protocol.noise import (
    PATTERNS,
    CipherState,
    HandshakeState,
    NoiseProtocol,
)

VECTORS = Path(__file__).parent / "vectors" / "noise"
FILES = sorted(VECTORS.glob("*.json"))


def _skip_reason(name: str) -> str | None:
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        return "not a Noise protocol name"
    _, pattern, dh, cipher, hash_name = parts
    base = pattern.split("psk")[0]
    if dh != "25519":
        return f"DH {dh} not implemented (microsync uses 25519 only)"
    if cipher != "ChaChaPoly":
        return f"cipher {cipher} not implemented (microsync uses ChaChaPoly only)"
    if hash_name not in ("BLAKE2b", "SHA256"):
        return f"hash {hash_name} not implemented"
    if base not in PATTERNS:
        return f"pattern {base} not in revision 34's table"
    if "fallback" in pattern or "hfs" in pattern:
        return "fallback/hfs modifiers not implemented"
    return None


def _cases() -> list[Any]:
    cases = []
    for path in FILES:
        for index, vector in enumerate(json.loads(path.read_text())["vectors"]):
            name = vector.get("protocol_name") or vector["name"]
            reason = _skip_reason(name)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            case_id = f"{path.stem.split('-')[0]}:{index}:{name}" + (
                f" [skip: {reason}]" * bool(reason)
            )
            cases.append(pytest.param(vector, id=case_id, marks=marks))
    return cases


CASES = _cases()


def _secret(vector: dict[str, Any], field: str) -> X25519SecretKey | None:
    return X25519SecretKey(bytes.fromhex(vector[field])) if field in vector else None


def _public(vector: dict[str, Any], field: str) -> X25519PublicKey | None:
    return X25519PublicKey(bytes.fromhex(vector[field])) if field in vector else None


def _side(vector: dict[str, Any], prefix: str, protocol: NoiseProtocol) -> HandshakeState:
    return HandshakeState(
        protocol,
        initiator=prefix == "init",
        prologue=bytes.fromhex(vector.get(f"{prefix}_prologue", "")),
        static=_secret(vector, f"{prefix}_static"),
        remote_static=_public(vector, f"{prefix}_remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(f"{prefix}_psks", [])],
        ephemeral=_secret(vector, f"{prefix}_ephemeral"),
    )


def _transport(
    messages: list[dict[str, str]], one_way: bool, start: int, pairs: dict[bool, tuple[Any, Any]]
) -> None:
    """Transport messages: alternating for interactive patterns, initiator-only for one-way."""
    for offset, message in enumerate(messages):
        from_initiator = one_way or (start + offset) % 2 == 0
        send, receive = pairs[from_initiator]
        payload, ciphertext = (
            bytes.fromhex(message["payload"]),
            bytes.fromhex(message["ciphertext"]),
        )
        assert send.encrypt_with_ad(b"", payload) == ciphertext
        assert receive.decrypt_with_ad(b"", ciphertext) == payload


@pytest.mark.parametrize("vector", CASES)
def test_vector(vector: dict[str, Any]) -> None:
    protocol = NoiseProtocol.from_name(vector.get("protocol_name") or vector["name"])
    initiator, responder = _side(vector, "init", protocol), _side(vector, "resp", protocol)
    count = len(protocol.pattern.messages)
    messages = vector["messages"]
    for index, message in enumerate(messages[:count]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        payload, ciphertext = (
            bytes.fromhex(message["payload"]),
            bytes.fromhex(message["ciphertext"]),
        )
        assert writer.write_message(payload) == ciphertext, f"handshake message {index}"
        assert reader.read_message(ciphertext) == payload
    assert initiator.finished and responder.finished
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash == bytes.fromhex(vector["handshake_hash"])
    i_send, i_receive = initiator.split()
    r_send, r_receive = responder.split()
    pairs: dict[bool, tuple[CipherState, CipherState]] = {
        True: (i_send, r_receive),
        False: (r_send, i_receive),
    }
    _transport(messages[count:], protocol.pattern.one_way, count, pairs)


def test_the_required_suites_are_covered() -> None:
    """XX and XXpsk3 (both hashes) run from every file that has them; nothing is skipped."""
    ran = {
        case.id.split(":", 1)[0] + ":" + case.id.rsplit(":", 1)[1]
        for case in CASES
        if not case.marks
    }
    for source in ("cacophony", "snow", "noise"):
        for hash_name in ("BLAKE2b", "SHA256"):
            assert f"{source}:Noise_XX_25519_ChaChaPoly_{hash_name}" in ran
    for hash_name in ("BLAKE2b", "SHA256"):
        assert f"cacophony:Noise_XXpsk3_25519_ChaChaPoly_{hash_name}" in ran
    assert len(CASES) == 250
    assert not [case.id for case in CASES if case.marks]


def test_unsupported_suites_are_refused() -> None:
    for name in (
        "Noise_XX_448_ChaChaPoly_BLAKE2b",
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_XX_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXfallback_25519_ChaChaPoly_BLAKE2b",
        "Noise_XXpsk9_25519_ChaChaPoly_BLAKE2b",
        "Noise_ZZ_25519_ChaChaPoly_BLAKE2b",
    ):
        with pytest.raises(ValueError):
            NoiseProtocol.from_name(name)
