"""asyncio adapters: byte streams (TCP, relay channels), connections running the Noise
handshake and the sync session over them, LAN discovery and the relay. With ``storage``, the
only layer below ``node`` that does I/O."""

from microsync.net.connection import SecureStream, SyncConnection, handshake
from microsync.net.discovery import LanDiscovery
from microsync.net.limits import ServeLimits
from microsync.net.relay import RelayLimits, RelayServer, RelayStats, run_relay
from microsync.net.relay_client import RelayChannel, RelayClient
from microsync.net.stream import Stream, TcpStream, open_tcp

__all__ = [
    "LanDiscovery",
    "RelayChannel",
    "RelayClient",
    "RelayLimits",
    "RelayServer",
    "RelayStats",
    "SecureStream",
    "ServeLimits",
    "Stream",
    "SyncConnection",
    "TcpStream",
    "handshake",
    "open_tcp",
    "run_relay",
]
