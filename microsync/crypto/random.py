"""The randomness port. Core code takes an ``Rng``; only I/O layers pass :func:`system_rng`."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["Rng", "system_rng"]

Rng = Callable[[int], bytes]
"""A function that returns ``n`` random bytes."""


def system_rng(n: int) -> bytes:
    """The operating system's CSPRNG."""
    return os.urandom(n)
