"""Checking many Ed25519 signatures in one call.

A receiver checks each entry's signature, about 50 µs of C per entry: the largest part of
ingesting a batch. :func:`verify_many` checks a whole batch in one plain loop (no key objects,
no exception per valid entry), and its answers are exactly
:meth:`VerifyKey.verify <microsync.crypto.keys.VerifyKey.verify>`'s: ``True`` where it would
return, ``False`` where it would raise ``BadSignature`` (``tests/test_feed_batch_verify.py``
holds the two to that).

PyNaCl releases the GIL while libsodium runs, so a layer that may start threads can split a
batch into shares and call :func:`verify_many` on each in its own thread
(:func:`microsync.node.parallel.verify_in_threads`); anything of the :data:`BatchVerify` shape
can be handed to the feed layer (``ingest_many(..., verify=...)``), which stays sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions

from microsync.crypto.keys import KEY_SIZE, SIGNATURE_SIZE
from microsync.crypto.labels import Label, frame

__all__ = ["PARALLEL_AT", "BatchVerify", "Signed", "verify_many"]

Signed = tuple[bytes, bytes, bytes]
"""``(public key, message, signature)``."""
BatchVerify = Callable[[Label, Sequence[Signed]], Sequence[bool]]
"""Check a batch under one label; answers in order (:func:`verify_many`'s contract), which
may be worked out as they are read (``microsync.node.parallel.Verdicts``)."""
PARALLEL_AT: Final = 32
"""Batches smaller than this are not worth handing to several threads (a thread start costs
about as much as two checks); the feed layer checks them one by one as it places them."""


def verify_many(label: Label, items: Sequence[Signed]) -> list[bool]:
    """For each ``(public key, message, signature)``: does ``signature`` sign ``message``
    under ``label`` with that key? Answers in order. A key that is not 32 bytes is a
    ``ValueError``, as for :class:`~microsync.crypto.keys.VerifyKey`."""
    if any(len(key) != KEY_SIZE for key, _, _ in items):
        raise ValueError(f"an Ed25519 public key must be {KEY_SIZE} bytes")
    prefix = frame(label)
    out: list[bool] = []
    append = out.append
    open_signed = sodium.crypto_sign_open
    errors = (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError)
    for key, message, signature in items:
        if len(signature) != SIGNATURE_SIZE:
            append(False)
            continue
        try:
            open_signed(signature + prefix + message, key)
        except errors:
            append(False)
        else:
            append(True)
    return out
