"""Known-answer vectors for the entry and record encodings (tests/vectors/feed-v1.json).

The checks recompute every value independently of microsync's helpers (PyNaCl's own
VerifyKey, hashlib directly), so a change to the format, a label or the framing fails here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cbor2
import nacl.signing
import pytest

from microsync.feed import Header, parse_entry
from microsync.identity import (
    DeviceCertificate,
    DeviceRevocation,
    PrekeyCertificate,
    TransportCertificate,
)
from tests.vectors.make_feed_vectors import vectors

VECTORS = json.loads((Path(__file__).parent / "vectors" / "feed-v1.json").read_text())


def framed(label: bytes) -> bytes:
    return bytes([len(label)]) + label


def test_code_reproduces_the_vectors_exactly() -> None:
    assert vectors() == VECTORS


@pytest.mark.parametrize("index", [0, 1])
def test_entry_vector_independently(index: int) -> None:
    v = VECTORS["entries"][index]
    header, signature, body = (bytes.fromhex(v[k]) for k in ("header", "signature", "body"))
    # signature: plain Ed25519 over framed label || header, checked with PyNaCl directly
    nacl.signing.VerifyKey(bytes.fromhex(VECTORS["device_public"])).verify(
        framed(b"microsync/v1/entry") + header, signature
    )
    expected_id = hashlib.blake2b(
        framed(b"microsync/v1/entry-id") + header + signature, digest_size=32
    )
    assert expected_id.hexdigest() == v["id"]
    expected_body = hashlib.blake2b(framed(b"microsync/v1/body-hash") + body, digest_size=32)
    assert expected_body.hexdigest() == v["body_hash"]
    # the header is the 11-element array documented in docs/feeds.md
    fields = cbor2.loads(header)
    assert fields[0] == 1 and len(fields) == 11
    assert fields[3] == index + 1 and fields[9].hex() == v["body_hash"] and fields[10] == len(body)
    assert fields[4] == (None if index == 0 else bytes.fromhex(VECTORS["entries"][0]["id"]))
    entry = parse_entry(header + signature)
    assert entry.id.hex() == v["id"] and Header.from_bytes(header) == entry.header


RECORDS = {
    "device_certificate": (DeviceCertificate, b"microsync/v1/device-certificate", "person_public"),
    "device_revocation": (DeviceRevocation, b"microsync/v1/device-revocation", "person_public"),
    "transport_certificate": (
        TransportCertificate,
        b"microsync/v1/transport-key-certificate",
        "device_public",
    ),
    "prekey_certificate": (PrekeyCertificate, b"microsync/v1/prekey-certificate", "device_public"),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_vector_independently(name: str) -> None:
    cls, label, signer = RECORDS[name]
    data = bytes.fromhex(VECTORS["records"][name])
    items = cbor2.loads(data)
    unsigned = cbor2.dumps(items[:-1], canonical=True)
    nacl.signing.VerifyKey(bytes.fromhex(VECTORS[signer])).verify(
        framed(label) + unsigned, items[-1]
    )
    record = cls.from_bytes(data)
    record.verify()
    assert record.to_bytes() == data
