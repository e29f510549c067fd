"""Sans-IO protocols: the Noise transport (handshake, framing) and the sync session.

Each name below is re-exported from its submodule; append new ones to ``__all__``.
"""

from microsync.protocol import messages
from microsync.protocol.forks import ForkHost
from microsync.protocol.framing import FrameDecoder, SecureChannel
from microsync.protocol.handshake import Handshake, Purpose
from microsync.protocol.noise import CipherState, HandshakeState, NoiseProtocol
from microsync.protocol.session import (
    GroupPhase,
    GroupProof,
    SessionState,
    SessionStats,
    SyncHost,
    SyncOptions,
    SyncSession,
)

__all__ = [
    "CipherState",
    "ForkHost",
    "FrameDecoder",
    "GroupPhase",
    "GroupProof",
    "Handshake",
    "HandshakeState",
    "NoiseProtocol",
    "Purpose",
    "SecureChannel",
    "SessionState",
    "SessionStats",
    "SyncHost",
    "SyncOptions",
    "SyncSession",
    "messages",
]
