"""The microsync transport profile: preamble, Noise XX, certificate chains (sans-IO).

Theory of operation
-------------------
Every line below is one frame (:mod:`microsync.protocol.framing`)::

    I -> R  preamble_I                 } both sent at once: neither waits for the other
    R -> I  preamble_R                 }
    I -> R  Noise message 1: e                   payload empty
    R -> I  Noise message 2: e, ee, s, es        payload empty (nothing identifying)
    I -> R  Noise message 3: s, se               payload: the initiator's certificate chain
    R -> I  transport record 0                   the responder's certificate chain
            transport records both ways          (SecureChannel)

``preamble = "MSYN" || u8 n || n versions (u8, ascending) || u8 m || m purposes (u8,
ascending)``. The initiator lists the one purpose it wants; the responder lists those it
accepts. The Noise prologue is ``frame(preamble_I) || frame(preamble_R)``, so a preamble
altered in flight (a downgrade) makes message 2 fail to decrypt. The suite is
``Noise_XX_25519_ChaChaPoly_BLAKE2b``.

A certificate chain is the canonical CBOR ``[1, DeviceCertificate, TransportCertificate]``.
The receiver checks: both signatures (person -> device -> transport key), that the transport
certificate names the same device, that ``now`` is before its expiry (and not too far before
its issue), that the certified key IS the Noise remote static key, and that the peer is not
this device. Then the caller's ``accept(DeviceCertificate) -> bool`` decides (membership).
The responder sends its own chain only after accepting the initiator's.

The machine is one transition table, :data:`TRANSITIONS`: each step waits for one frame. Any
error fails the handshake for good and is raised as :class:`~microsync.errors.HandshakeError`
(an ``accept`` callback's own errors pass through unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum, auto
from typing import Final

from microsync import encoding
from microsync.crypto import Rng, X25519PublicKey
from microsync.errors import (
    DecodeError,
    DecryptionError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    VerificationError,
)
from microsync.identity import DeviceCertificate, LocalIdentity, TransportCertificate
from microsync.protocol.framing import (
    DEFAULT_MAX_RECORD_SIZE,
    FrameDecoder,
    SecureChannel,
    encode_frame,
)
from microsync.protocol.noise import HandshakeState

__all__ = [
    "MAGIC",
    "PROTOCOL_NAME",
    "SUPPORTED_VERSIONS",
    "TRANSITIONS",
    "CertificateChain",
    "Handshake",
    "Preamble",
    "Purpose",
    "Step",
    "pump",
]

PROTOCOL_NAME: Final = "Noise_XX_25519_ChaChaPoly_BLAKE2b"
MAGIC: Final = b"MSYN"
SUPPORTED_VERSIONS: Final = (1,)
MAX_HANDSHAKE_FRAME: Final = 4096
MAX_LIST: Final = 16
CLOCK_TOLERANCE: Final = 5 * 60 * 1000  # ms a certificate may be issued "in the future"
CHAIN_VERSION: Final = 1

Accept = Callable[[DeviceCertificate], bool]


class Purpose(IntEnum):
    """Why the initiator connects."""

    SYNC = 1
    INVITE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Preamble:
    """The cleartext hello each side sends before Noise."""

    versions: tuple[int, ...]
    purposes: tuple[int, ...]

    def to_bytes(self) -> bytes:
        return (
            MAGIC
            + bytes((len(self.versions), *self.versions))
            + bytes((len(self.purposes), *self.purposes))
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Preamble:
        """Strict: magic, 1 to 16 ascending distinct values per list, no trailing bytes."""
        if data[:4] != MAGIC:
            raise HandshakeError("the peer is not speaking microsync")
        versions, rest = _byte_list(data[4:])
        purposes, rest = _byte_list(rest)
        if rest:
            raise HandshakeError("malformed preamble")
        return cls(versions=versions, purposes=purposes)


def _byte_list(data: bytes) -> tuple[tuple[int, ...], bytes]:
    if not data or not 0 < data[0] <= MAX_LIST or len(data) < 1 + data[0]:
        raise HandshakeError("malformed preamble")
    values = tuple(data[1 : 1 + data[0]])
    if list(values) != sorted(set(values)):
        raise HandshakeError("malformed preamble")
    return values, data[1 + data[0] :]


def negotiate(initiator: Preamble, responder: Preamble) -> tuple[int, Purpose]:
    """The highest common version and the initiator's purpose, which the responder accepts."""
    common = set(initiator.versions) & set(responder.versions) & set(SUPPORTED_VERSIONS)
    if not common:
        raise HandshakeError("no common protocol version")
    if len(initiator.purposes) != 1 or initiator.purposes[0] not in responder.purposes:
        raise HandshakeError("the purpose is not accepted")
    try:
        return max(common), Purpose(initiator.purposes[0])
    except ValueError:
        raise HandshakeError("unknown purpose") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateChain:
    """A device's certificate (signed by its person) and transport certificate (by itself)."""

    device: DeviceCertificate
    transport: TransportCertificate

    def to_bytes(self) -> bytes:
        return encoding.encode([CHAIN_VERSION, self.device.to_bytes(), self.transport.to_bytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> CertificateChain:
        try:
            items = encoding.expect_list(encoding.decode(data, max_size=4096), "chain", 3)
            if encoding.expect_int(items[0], "version") != CHAIN_VERSION:
                raise HandshakeError("unknown certificate chain version")
            return cls(
                device=DeviceCertificate.from_bytes(encoding.expect_bytes(items[1], "device")),
                transport=TransportCertificate.from_bytes(encoding.expect_bytes(items[2], "key")),
            )
        except (DecodeError, VerificationError, ValueError):
            raise HandshakeError("malformed certificate chain") from None

    def verify(self, *, remote_static: X25519PublicKey | None, now: int) -> None:
        """Raise :class:`HandshakeError` unless this chain certifies ``remote_static`` now."""
        try:
            self.device.verify()
            self.transport.verify()
        except VerificationError:
            raise HandshakeError("a certificate signature does not verify") from None
        if self.transport.device != self.device.device:
            raise HandshakeError("the transport certificate names another device")
        if now >= self.transport.expires_at:
            raise HandshakeError("the transport certificate has expired")
        if self.transport.issued_at > now + CLOCK_TOLERANCE:
            raise HandshakeError("the transport certificate is not valid yet")
        if remote_static is None or self.transport.key != remote_static:
            raise HandshakeError("the certified key is not the key of this session")


class Role(Enum):
    INITIATOR = auto()
    RESPONDER = auto()


class Step(Enum):
    """What the handshake waits for next."""

    PREAMBLE = auto()
    MESSAGE_1 = auto()
    MESSAGE_2 = auto()
    MESSAGE_3 = auto()
    PEER_CHAIN = auto()
    DONE = auto()
    FAILED = auto()


class Handshake:
    """One side of the microsync handshake. Feed it bytes, send what it gives you.

    ``receive(data)`` takes any slice of the stream; ``bytes_to_send()`` drains what to write.
    Once ``done``, send ``bytes_to_send()`` a last time (the responder's chain is there), then
    use ``transport``; call ``transport.feed(b"")`` once for records that arrived early.
    """

    def __init__(
        self,
        identity: LocalIdentity,
        *,
        initiator: bool,
        purposes: Sequence[Purpose],
        now: int,
        rng: Rng,
        accept: Accept | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        self._identity, self._now, self._accept = identity, now, accept
        self._role = Role.INITIATOR if initiator else Role.RESPONDER
        self._preamble = Preamble(versions=SUPPORTED_VERSIONS, purposes=tuple(sorted(purposes)))
        self._noise: HandshakeState | None = None
        self._rng, self._max_record_size = rng, max_record_size
        self._decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._outgoing = [encode_frame(self._preamble.to_bytes())]
        self._step = Step.PREAMBLE
        self._channel: SecureChannel | None = None
        self.peer: DeviceCertificate | None = None
        """The verified peer's device certificate, once known."""
        self.peer_chain: CertificateChain | None = None
        self.version: int | None = None
        self.purpose: Purpose | None = None

    @classmethod
    def initiator(
        cls,
        identity: LocalIdentity,
        purpose: Purpose,
        *,
        now: int,
        rng: Rng,
        accept: Accept | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> Handshake:
        """The connecting side, asking for ``purpose``."""
        return cls(
            identity,
            initiator=True,
            purposes=[purpose],
            now=now,
            rng=rng,
            accept=accept,
            max_record_size=max_record_size,
        )

    @classmethod
    def responder(
        cls,
        identity: LocalIdentity,
        purposes: Sequence[Purpose] = (Purpose.SYNC,),
        *,
        now: int,
        rng: Rng,
        accept: Accept | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> Handshake:
        """The accepting side, accepting any of ``purposes``."""
        return cls(
            identity,
            initiator=False,
            purposes=purposes,
            now=now,
            rng=rng,
            accept=accept,
            max_record_size=max_record_size,
        )

    @property
    def step(self) -> Step:
        return self._step

    @property
    def done(self) -> bool:
        return self._step is Step.DONE

    @property
    def transport(self) -> SecureChannel:
        """The secure channel, once ``done``."""
        if self._step is not Step.DONE or self._channel is None:
            raise LocalProtocolError("the handshake is not done")
        return self._channel

    def bytes_to_send(self) -> bytes:
        """Everything to write to the stream now (possibly nothing)."""
        out, self._outgoing = b"".join(self._outgoing), []
        return out

    def receive(self, data: bytes) -> None:
        """Take bytes from the stream and advance as far as they allow."""
        if self._step is Step.FAILED:
            raise LocalProtocolError("the handshake already failed")
        try:
            self._decoder.append(data)
            while self._step is not Step.DONE and (item := self._next_item()) is not None:
                handler, after = TRANSITIONS[(self._role, self._step)]
                handler(self, item)
                self._step = after
        except DecryptionError:
            self._fail()
            raise HandshakeError("a handshake message does not authenticate") from None
        except (DecodeError, ProtocolError, VerificationError):
            self._fail()
            raise HandshakeError("the peer broke the handshake protocol") from None
        except BaseException:
            self._fail()
            raise

    def _fail(self) -> None:
        self._step, self._outgoing = Step.FAILED, []
        if self._channel is not None:
            self._channel.close()

    def _next_item(self) -> bytes | None:
        if self._step is Step.PEER_CHAIN:
            assert self._channel is not None
            return self._channel.next_record()
        return self._decoder.next_frame()

    # --- handlers: one per (role, step) in TRANSITIONS ---------------------------------------

    def _on_preamble(self, frame: bytes) -> None:
        peer = Preamble.from_bytes(frame)
        ours = self._preamble
        pair = (ours, peer) if self._role is Role.INITIATOR else (peer, ours)
        self.version, self.purpose = negotiate(*pair)
        self._noise = HandshakeState(
            PROTOCOL_NAME,
            initiator=self._role is Role.INITIATOR,
            prologue=encode_frame(pair[0].to_bytes()) + encode_frame(pair[1].to_bytes()),
            static=self._identity.transport_key,
            rng=self._rng,
        )
        if self._role is Role.INITIATOR:
            self._write(b"")

    def _on_message_1(self, frame: bytes) -> None:
        self._read_empty(frame)
        self._write(b"")

    def _on_message_2(self, frame: bytes) -> None:
        self._read_empty(frame)
        self._check_not_self()
        self._write(self._own_chain())
        self._open_channel()

    def _on_message_3(self, frame: bytes) -> None:
        self._verify_peer(self._handshake_state().read_message(frame))
        channel = self._open_channel()
        self._outgoing.append(channel.encrypt_record(self._own_chain()))

    def _on_peer_chain(self, record: bytes) -> None:
        self._verify_peer(record)

    # --- helpers ------------------------------------------------------------------------------

    def _handshake_state(self) -> HandshakeState:
        assert self._noise is not None
        return self._noise

    def _write(self, payload: bytes) -> None:
        self._outgoing.append(encode_frame(self._handshake_state().write_message(payload)))

    def _read_empty(self, frame: bytes) -> None:
        if self._handshake_state().read_message(frame):
            raise HandshakeError("an early handshake message carries a payload")

    def _own_chain(self) -> bytes:
        identity = self._identity
        return CertificateChain(
            device=identity.certificate, transport=identity.transport_certificate
        ).to_bytes()

    def _check_not_self(self) -> None:
        if self._handshake_state().remote_static == self._identity.transport_key.public:
            raise HandshakeError("connected to itself")

    def _verify_peer(self, payload: bytes) -> None:
        self._check_not_self()
        chain = CertificateChain.from_bytes(payload)
        chain.verify(remote_static=self._handshake_state().remote_static, now=self._now)
        if chain.device.device == self._identity.device_id:
            raise HandshakeError("connected to itself")
        if self._accept is not None and not self._accept(chain.device):
            raise HandshakeError("the peer is not accepted")
        self.peer, self.peer_chain = chain.device, chain

    def _open_channel(self) -> SecureChannel:
        noise = self._handshake_state()
        send, receive = noise.split()
        self._channel = SecureChannel(
            send,
            receive,
            handshake_hash=noise.handshake_hash,
            decoder=self._decoder,
            max_record_size=self._max_record_size,
        )
        return self._channel

    def __repr__(self) -> str:
        role = self._role.name.lower()
        return f"Handshake({role}, {self._step.name.lower()})"


Handler = Callable[[Handshake, bytes], None]

TRANSITIONS: Final[dict[tuple[Role, Step], tuple[Handler, Step]]] = {
    # (role, waiting for): (what to do with it, what to wait for next)
    (Role.INITIATOR, Step.PREAMBLE): (Handshake._on_preamble, Step.MESSAGE_2),
    (Role.INITIATOR, Step.MESSAGE_2): (Handshake._on_message_2, Step.PEER_CHAIN),
    (Role.INITIATOR, Step.PEER_CHAIN): (Handshake._on_peer_chain, Step.DONE),
    (Role.RESPONDER, Step.PREAMBLE): (Handshake._on_preamble, Step.MESSAGE_1),
    (Role.RESPONDER, Step.MESSAGE_1): (Handshake._on_message_1, Step.MESSAGE_3),
    (Role.RESPONDER, Step.MESSAGE_3): (Handshake._on_message_3, Step.DONE),
}
"""The whole state machine: any (role, step) not here is a state that takes no input."""


def pump(
    initiator: Handshake,
    responder: Handshake,
    *,
    tamper: Callable[[bool, bytes], bytes] | None = None,
    rounds: int = 8,
) -> None:
    """An in-memory driver for tests: move bytes both ways until nothing moves.

    ``tamper(from_initiator, data)`` may rewrite bytes in flight. Errors propagate.
    """
    for _ in range(rounds):
        moved = False
        for sender, receiver, direction in (
            (initiator, responder, True),
            (responder, initiator, False),
        ):
            data = sender.bytes_to_send()
            if data:
                moved = True
                receiver.receive(tamper(direction, data) if tamper else data)
        if not moved:
            return
