"""Argument types for the command line: each turns a word the user typed into a value, or
into one line that says what was expected (argparse prints it with the usage and exits 2)."""

from __future__ import annotations

import argparse
import re
from typing import Final

__all__ = ["DEFAULT_PORT", "peer_address", "port_number", "positive_count", "relay_url"]

DEFAULT_PORT: Final = 7425
"""``microsync.node.DEFAULT_PORT``, without importing the device stack to show ``--help``
(``tests/test_cli_startup.py`` holds them equal)."""

_RELAY_URL: Final = re.compile(r"wss?://[A-Za-z0-9._~\[\]:-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~/-]*)?")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (use 0 to 65535)")
    return int(text)


def positive_count(text: str) -> int:
    """A count of at least 1 (``--limit``, ``--max-connections``)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def peer_address(text: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6), returned as typed."""
    from microsync.node.runtime import split_address

    try:
        split_address(text)
    except ValueError:
        hint = " (the port is missing)" if ":" not in text else ""
        raise argparse.ArgumentTypeError(
            f"not a HOST:PORT address: {text!r}{hint}; for example 192.168.1.20:7425"
        ) from None
    return text


def relay_url(text: str) -> str:
    """A relay's URL, ``ws://HOST:PORT`` or ``wss://HOST[:PORT][/PATH]``."""
    if len(text) > 256 or not _RELAY_URL.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a relay URL: {text!r}; expected ws://HOST:PORT (or wss://...), "
            "as `microsync relay` prints it"
        )
    return text
