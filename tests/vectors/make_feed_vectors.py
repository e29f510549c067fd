"""Regenerate tests/vectors/feed-v1.json (only when the format changes ON PURPOSE).

    python -m tests.vectors.make_feed_vectors > tests/vectors/feed-v1.json

Keys come from fixed seeds, and Ed25519 is deterministic, so every byte is reproducible.
"""

from __future__ import annotations

import json

from microsync.crypto import SigningKey, X25519SecretKey
from microsync.feed import GroupId, Header, body_hash, sign_entry
from microsync.identity import (
    DeviceCertificate,
    DeviceRevocation,
    PrekeyCertificate,
    TransportCertificate,
)

PERSON_SEED = bytes(range(32))
DEVICE_SEED = bytes(range(32, 64))
X25519_SECRET = bytes(range(64, 96))
GROUP = GroupId(bytes.fromhex("aa" * 32))
NOW = 1_763_769_600_000  # 2025-11-22T00:00:00Z in ms


def vectors() -> dict[str, object]:
    person, device = SigningKey(PERSON_SEED), SigningKey(DEVICE_SEED)
    body1, body2 = b"Landed in Oxford", b"Welcome back!"
    first = sign_entry(
        device,
        Header(
            group=GROUP,
            device=bytes(device.public),
            seq=1,
            prev=None,  # type: ignore[arg-type]
            epoch=0,
            type=1,
            hlc=NOW << 16,
            deps=(),
            body_hash=body_hash(body1),
            body_len=len(body1),
        ),
    )
    second = sign_entry(
        device,
        Header(
            group=GROUP,
            device=bytes(device.public),
            seq=2,
            prev=first.id,  # type: ignore[arg-type]
            epoch=0,
            type=1,
            hlc=(NOW << 16) + 1,
            deps=(first.id,),
            body_hash=body_hash(body2),
            body_len=len(body2),
        ),
    )
    x = X25519SecretKey(X25519_SECRET)
    records = {
        "device_certificate": DeviceCertificate.issue(person, device.public, "Alice's phone", NOW),
        "device_revocation": DeviceRevocation.issue(person, bytes(device.public), NOW + 1),  # type: ignore[arg-type]
        "transport_certificate": TransportCertificate.issue(device, x.public, NOW, 86_400_000),
        "prekey_certificate": PrekeyCertificate.issue(device, 7, x.public, NOW),
    }
    return {
        "person_seed": PERSON_SEED.hex(),
        "device_seed": DEVICE_SEED.hex(),
        "x25519_secret": X25519_SECRET.hex(),
        "person_public": bytes(person.public).hex(),
        "device_public": bytes(device.public).hex(),
        "entries": [
            {
                "body": body.hex(),
                "header": e.header_bytes.hex(),
                "signature": e.signature.hex(),
                "id": e.id.hex(),
                "body_hash": e.header.body_hash.hex(),
            }
            for e, body in ((first, body1), (second, body2))
        ],
        "records": {name: r.to_bytes().hex() for name, r in records.items()},
    }


if __name__ == "__main__":
    print(json.dumps(vectors(), indent=2))
