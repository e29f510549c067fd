"""Addresses in the user's words: ``host:port`` parsing, this machine's addresses, relay URLs,
and why a connection attempt failed."""

from __future__ import annotations

import re
import socket
from typing import Final

__all__ = [
    "DEFAULT_PORT",
    "RELAY_URL",
    "check_relay_url",
    "machine_addresses",
    "split_address",
    "why_unreachable",
]

DEFAULT_PORT: Final = 7425
"""The TCP port ``microsync serve`` listens on unless told otherwise (and a LAN device's
port when it is free, so the port does not single a device out)."""

RELAY_URL: Final = re.compile(r"wss?://[A-Za-z0-9._~\[\]:-]+(?:/[A-Za-z0-9._~/-]*)?")


def check_relay_url(relay: str) -> None:
    """``ValueError`` unless ``relay`` looks like ``ws://HOST:PORT`` or ``wss://...``."""
    if not RELAY_URL.fullmatch(relay):
        raise ValueError(f"not a relay URL: {relay!r} (expected ws://HOST:PORT or wss://...)")


def machine_addresses(limit: int = 8) -> list[str]:
    """This machine's IPv4 addresses (no link-local ones), loopback last, at most ``limit``."""
    import ifaddr

    found = {
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and not ip.ip.startswith("169.254.")
    }
    ordered = sorted(found, key=lambda a: (a.startswith("127."), a))
    return ordered[:limit] or ["127.0.0.1"]


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) -> ``(host, port)``; ``ValueError`` if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def why_unreachable(error: BaseException) -> str:
    """A failed connection attempt in the user's words."""
    if isinstance(error, ConnectionRefusedError):
        return "nothing is listening there"
    if isinstance(error, TimeoutError):
        return "no answer (a firewall, or the wrong address?)"
    if isinstance(error, socket.gaierror):
        return "no such host"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
