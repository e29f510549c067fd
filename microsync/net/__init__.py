"""asyncio adapters: byte streams (TCP, relay), connections running the Noise handshake and the
sync session over them, LAN discovery and the relay. The only layer besides ``storage`` that
does I/O."""

from microsync.net.stream import Stream, TcpStream, open_tcp

__all__ = ["Stream", "TcpStream", "open_tcp"]
