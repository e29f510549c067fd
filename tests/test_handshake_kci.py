"""Key-compromise impersonation (KCI) against the microsync handshake (issue 13).

The attacker has stolen everything device A holds: its transport (Noise static) key, its
device key and its person key. It can of course pose as A. The claim tested here is that it
cannot pose as another device B *to A*: A never finishes a handshake whose peer is B unless the
other end holds B's transport secret.

Why this holds (docs/protocol.md, "Key-compromise impersonation"): in Noise XX each side is
authenticated by a DH between its static key and the *other side's ephemeral* key (``es`` in
message 2 for the responder, ``se`` in message 3 for the initiator). The one DH value with B's
key that A's secret gives the attacker is ``DH(a, B) = DH(b, A)``, the static-static ``ss``,
which XX never uses. The certificate chain then binds the authenticated static key to B.

The attacker below is as strong as the stolen key makes it: :class:`ClaimsKey` announces B's
public key as its Noise static and answers every DH "with B's key" as well as it can (with
``DH(a, B)`` when asked against A's static, with A's secret otherwise). As a control, the same
attacker does break the first message of Noise IK, whose initiator is authenticated by ``ss``
(Noise's payload property "sender authentication vulnerable to KCI").
"""

from __future__ import annotations

import dataclasses

import pytest

from microsync.crypto import SigningKey, X25519PublicKey, X25519SecretKey
from microsync.errors import HandshakeError
from microsync.identity import LocalIdentity, TransportCertificate
from microsync.protocol.handshake import Handshake, Purpose, Step, pump
from microsync.protocol.noise import HandshakeState
from tests.conftest import make_identity, make_rng

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000

ALICE = make_identity("kci-alice")  # the victim, whose secrets were stolen
BOB = make_identity("kci-bob")  # the device the attacker wants to pose as
MALLORY_KEY = X25519SecretKey(make_rng("kci-mallory")(32))  # a key the attacker made
MALLORY_DEVICE = SigningKey(make_rng("kci-mallory-device")(32))


class ClaimsKey(X25519SecretKey):
    """A Noise static key that claims ``claimed`` as its public half while its owner knows
    only ``stolen`` (A's secret): every DH is answered with what the owner can compute."""

    __slots__ = ("_claimed", "_stolen")

    def __init__(self, stolen: X25519SecretKey, claimed: X25519PublicKey) -> None:
        super().__init__(stolen.secret_bytes())
        self._stolen, self._claimed = stolen, claimed

    @property
    def public(self) -> X25519PublicKey:
        return self._claimed

    def exchange(self, peer: X25519PublicKey) -> bytes:
        if peer == self._stolen.public:
            return self._stolen.exchange(self._claimed)  # DH(a, B) = DH(b, A): the ss value
        return self._stolen.exchange(peer)  # DH(a, peer): all it has for anything else


class AttackerHandshake(Handshake):
    """The attacker's side runs modified code: it skips the "connected to itself" check (which
    would stop it using Alice's own static key against Alice)."""

    def _check_not_self(self) -> None:
        return None


def posing_as_bob(transport_key: X25519SecretKey) -> LocalIdentity:
    """The attacker's identity: Bob's (public) certificates over ``transport_key``. (Its own
    device key only keeps its side's "connected to itself" check out of the way; it signs
    nothing.)"""
    return dataclasses.replace(
        ALICE,
        device_key=MALLORY_DEVICE,
        certificate=BOB.certificate,
        transport_certificate=BOB.transport_certificate,
        transport_key=transport_key,
    )


def sides(attacker: LocalIdentity, alice_initiates: bool) -> tuple[Handshake, Handshake, Handshake]:
    """``(Alice's handshake, initiator, responder)`` with Alice in the given role."""
    victim_rng, attacker_rng = make_rng("kci-victim"), make_rng("kci-attacker")
    if alice_initiates:
        alice = Handshake.initiator(ALICE, Purpose.SYNC, now=NOW, rng=victim_rng)
        return alice, alice, AttackerHandshake.responder(attacker, now=NOW, rng=attacker_rng)
    alice = Handshake.responder(ALICE, now=NOW, rng=victim_rng)
    other = AttackerHandshake.initiator(attacker, Purpose.SYNC, now=NOW, rng=attacker_rng)
    return alice, other, alice


def run(attacker: LocalIdentity, alice_initiates: bool) -> Handshake:
    """Alice's handshake after a full exchange with ``attacker`` (errors propagate)."""
    alice, initiator, responder = sides(attacker, alice_initiates)
    pump(initiator, responder)
    return alice


def expect_refused(attacker: LocalIdentity, alice_initiates: bool, match: str) -> None:
    """Alice refuses: the handshake fails on HER side, she learns no peer and sends nothing
    more (no transport record, so nothing of hers is encrypted to the attacker)."""
    alice, initiator, responder = sides(attacker, alice_initiates)
    with pytest.raises(HandshakeError, match=match):
        pump(initiator, responder)
    assert alice.step is Step.FAILED
    assert alice.peer is None and alice.bytes_to_send() == b""


ROLES = pytest.mark.parametrize("alice_initiates", [True, False], ids=["A-connects", "A-accepts"])


# --- controls: the harness is able to succeed -------------------------------------------------


@ROLES
def test_control_the_real_bob_is_accepted(alice_initiates: bool) -> None:
    alice = run(BOB, alice_initiates)
    assert alice.done and alice.peer == BOB.certificate


@ROLES
def test_control_an_attacker_holding_bobs_transport_key_passes(alice_initiates: bool) -> None:
    """What KCI resistance does NOT cover: Bob's own transport secret is Bob's identity."""
    alice = run(posing_as_bob(BOB.transport_key), alice_initiates)
    assert alice.done and alice.peer == BOB.certificate


def test_control_the_same_attacker_breaks_noise_ik_message_1() -> None:
    """Noise IK authenticates its initiator in message 1 by ``ss`` alone: with A's secret the
    attacker makes A read a payload "from B". The attacker model is strong enough to find KCI
    where the pattern has it."""
    claims_bob = ClaimsKey(ALICE.transport_key, BOB.transport_key.public)
    name = "Noise_IK_25519_ChaChaPoly_BLAKE2b"
    attacker = HandshakeState(
        name,
        initiator=True,
        static=claims_bob,
        remote_static=ALICE.transport_key.public,
        rng=make_rng("ik-attacker"),
    )
    victim = HandshakeState(name, initiator=False, static=ALICE.transport_key)
    payload = victim.read_message(attacker.write_message(b"hello, this is Bob"))
    assert payload == b"hello, this is Bob"
    assert victim.remote_static == BOB.transport_key.public


# --- the attacks ------------------------------------------------------------------------------


@ROLES
def test_kci_claiming_bobs_static_key_with_alices_secret_fails(alice_initiates: bool) -> None:
    """Bob's public key as the Noise static, every DH answered with A's stolen secret: the
    ``es`` (A connects) or ``se`` (A accepts) that authenticates the peer does not match."""
    attacker = posing_as_bob(ClaimsKey(ALICE.transport_key, BOB.transport_key.public))
    expect_refused(attacker, alice_initiates, "does not authenticate")


@ROLES
def test_bobs_chain_over_a_key_of_the_attackers_is_refused(alice_initiates: bool) -> None:
    expect_refused(posing_as_bob(MALLORY_KEY), alice_initiates, "not the key of this session")


@ROLES
def test_bobs_chain_over_alices_stolen_static_is_refused(alice_initiates: bool) -> None:
    expect_refused(posing_as_bob(ALICE.transport_key), alice_initiates, "connected to itself")


@ROLES
def test_a_transport_key_certified_by_alices_stolen_device_key_is_not_bobs(
    alice_initiates: bool,
) -> None:
    forged = TransportCertificate.issue(ALICE.device_key, MALLORY_KEY.public, NOW, DAY)
    attacker = dataclasses.replace(posing_as_bob(MALLORY_KEY), transport_certificate=forged)
    expect_refused(attacker, alice_initiates, "names another device")


@ROLES
def test_alices_stolen_person_key_only_makes_devices_of_alice(alice_initiates: bool) -> None:
    """With A's person key the attacker can certify a new device and name it "Bob"; the
    handshake completes, but A sees a device of A's own person (the sync layer's ``accept``
    hook decides membership by person and revocation), never Bob."""
    assert ALICE.person_key is not None
    fake = LocalIdentity.for_person(ALICE.person_key, "Bob", make_rng("kci-fake-bob"), NOW)
    alice = run(fake, alice_initiates)
    assert alice.done and alice.peer is not None
    assert alice.peer.person == ALICE.person_id != BOB.person_id
    assert alice.peer.device != BOB.device_id
