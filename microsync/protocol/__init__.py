"""Sans-IO protocols: the Noise transport (handshake, framing) and the sync session.

Each name below is re-exported from its submodule; append new ones to ``__all__``.
"""

from microsync.protocol.framing import FrameDecoder, SecureChannel
from microsync.protocol.handshake import Handshake, Purpose
from microsync.protocol.noise import CipherState, HandshakeState, NoiseProtocol

__all__ = [
    "CipherState",
    "FrameDecoder",
    "Handshake",
    "HandshakeState",
    "NoiseProtocol",
    "Purpose",
    "SecureChannel",
]
