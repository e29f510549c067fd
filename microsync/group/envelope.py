"""The envelope of a membership entry: the key bundles it carries and the sealed operation.

Wire form (CBOR, unchanged since version 1): ``[1, [[purpose, epoch, bundle], ...], sealed]``,
at most :data:`MAX_BUNDLES` bundles. The ``sealed`` operation is encrypted under the control key
of the entry's epoch; its first bytes are the ref of that key (:func:`sealed_ref`).
Decoding is strict: an unknown version or purpose, or too many bundles, is a ``DecodeError``.

A membership entry's body is decoded several times on its way in (the view reads its bundles,
then the content fold its sealed op), and a removal's body in a large group is a few hundred
KiB: :func:`decode_envelope` keeps the last :data:`RECENT_ENVELOPES` bodies it decoded, keyed by
their bytes, so the second read of the same body is a dictionary lookup. The bodies are
ciphertext (no secret is kept) and the answer is the one decoding gives.
"""

from __future__ import annotations

from typing import Final

from microsync import encoding
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError
from microsync.group.keys import Purpose, body_ref

__all__ = ["MAX_BUNDLES", "Bundle", "decode_envelope", "encode_envelope", "sealed_ref"]

ENVELOPE_VERSION: Final = 1
MAX_BUNDLES: Final = 4
RECENT_ENVELOPES: Final = 4
"""How many decoded bodies :func:`decode_envelope` keeps (the newest)."""

Bundle = tuple[Purpose, int, Value]
"""One key bundle: its purpose, the epoch it names, and the sealed wraps."""


def encode_envelope(bundles: list[Bundle], sealed: bytes) -> bytes:
    """The body of a membership entry carrying ``bundles`` and the ``sealed`` operation."""
    return encoding.encode([ENVELOPE_VERSION, [[int(p), e, b] for p, e, b in bundles], sealed])


def decode_envelope(body: bytes) -> tuple[list[Bundle], bytes]:
    """The bundles and the sealed operation of a membership entry's body (``DecodeError``).
    The bundles' values are shared with later calls for the same body: read, never change,
    them."""
    recent = _recent.get(body)
    if recent is None:
        recent = _decode(body)
        _recent[body] = recent
        while len(_recent) > RECENT_ENVELOPES:
            del _recent[next(iter(_recent))]
    bundles, sealed = recent
    return list(bundles), sealed


_recent: dict[bytes, tuple[tuple[Bundle, ...], bytes]] = {}  # body -> decoded, oldest first


def _decode(body: bytes) -> tuple[tuple[Bundle, ...], bytes]:
    version, bundles, sealed = expect_list(
        encoding.decode(body, max_size=len(body) + 1), "envelope", 3
    )
    if expect_int(version, "envelope version") != ENVELOPE_VERSION:
        raise DecodeError("unknown envelope version")
    items = expect_list(bundles, "bundles")
    if len(items) > MAX_BUNDLES:
        raise DecodeError("too many bundles")
    parsed: list[Bundle] = []
    for item in items:
        purpose, epoch, bundle = expect_list(item, "bundle entry", 3)
        try:
            kind = Purpose(expect_int(purpose, "purpose"))
        except ValueError:
            raise DecodeError("unknown bundle purpose") from None
        parsed.append((kind, expect_int(epoch, "epoch"), bundle))
    return tuple(parsed), expect_bytes(sealed, "sealed", max_size=len(body))


def sealed_ref(body: bytes) -> bytes:
    """The ref of the key sealing a membership entry's operation (``DecodeError`` or
    ``DecryptionError`` when the body does not hold one)."""
    return body_ref(decode_envelope(body)[1])
