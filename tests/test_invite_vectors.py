"""Known answers for the pairing protocol and the group side of invites: the exact bytes of every
pairing message (link mode, code mode, each ABORT reason), of the join and link payloads and of
the issuer's stored invite book, all under seeded randomness. They pin the wire and stored
formats, so a refactoring of :mod:`microsync.group.invite` or :mod:`microsync.group.join` that
changes a byte fails here. Then the typed messages (each pinned message decodes to its class and
re-encodes to the same bytes) and the state objects each machine moves through."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microsync.encoding import Value, encode
from microsync.errors import (
    DecodeError,
    InviteBurned,
    InviteConsumed,
    InviteError,
    InviteExpired,
    InviteProtocolError,
    InviteRefused,
    InviteRevoked,
    InviteUnknown,
    WrongCode,
    WrongPurpose,
)
from microsync.feed.entry import EntryId, GroupId
from microsync.group.invite import (
    GUEST_TRANSITIONS,
    HOST_TRANSITIONS,
    INVITE_CLOCK_TOLERANCE_MS,
    MAX_NAMEPLATE,
    Abort,
    AbortReason,
    Admitted,
    AwaitingCodeAdmit,
    AwaitingCodeConfirm,
    AwaitingHello,
    Claim,
    CodeAdmit,
    CodeConfirm,
    CodeHello,
    CodeReply,
    Invite,
    InviteId,
    InvitePurpose,
    InviteRecord,
    InviteSecret,
    InviteState,
    Kind,
    LinkAdmit,
    LinkHello,
    Message,
    PairingGuest,
    PairingHost,
    RecoverAdmit,
    RecoverHello,
    Redeemed,
    Refused,
    decode_message,
)
from microsync.group.join import (
    DeviceCandidate,
    InviteBook,
    JoinRequest,
    LinkRequest,
    LinkResponse,
    Welcome,
)
from microsync.identity import DeviceCertificate
from microsync.storage.memory import MemoryStore
from tests.conftest import make_identity, make_rng

NOW = 1_700_000_000_000
GROUP = GroupId(bytes([0x11]) * 32)


def issue(purpose: InvitePurpose = InvitePurpose.INVITE, seed: str = "issuer") -> Invite:
    return Invite.issue(
        rng=make_rng(seed),
        now=NOW,
        purpose=purpose,
        addresses=("192.168.1.20:7400", "[fe80::1]:7400"),
        relay="wss://relay.example.net/r",
    )


class Registry:
    """The group layer's answers, as a dict of records; ``admit`` echoes the request."""

    def __init__(self, *invites: Invite) -> None:
        self.records: dict[InviteId, InviteRecord] = {i.invite_id: i.record for i in invites}
        self.codes = {i.short_code.nameplate: i for i in invites}
        self.refuse = False

    def check(self, ident: InviteId) -> InviteRecord | None:
        return self.records.get(ident)

    def admit(self, ident: InviteId, request: bytes) -> bytes:
        if self.refuse:
            raise InviteError("not today")
        self.records[ident] = replace(self.records[ident], state=InviteState.CONSUMED)
        return b"welcome " + request

    def burn(self, ident: InviteId) -> None:
        self.records[ident] = replace(self.records[ident], state=InviteState.BURNED)

    def host(self) -> PairingHost:
        return PairingHost(
            check=self.check,
            admit=self.admit,
            burn=self.burn,
            rng=make_rng("host"),
            find_code=self.codes.get,
        )


def converse(guest: PairingGuest, host: PairingHost, now: int = NOW) -> list[str]:
    """Every message of one pairing, in hex."""
    sent: list[bytes] = []
    message: bytes | None = guest.start()
    while message is not None:
        sent.append(message)
        message = host.receive(message, now=now) if len(sent) % 2 else guest.receive(message)
    return [m.hex() for m in sent]


def link_guest(invite: Invite, request: bytes = b"alice's device") -> PairingGuest:
    return PairingGuest.for_link(invite.link, request=request)


def code_guest(invite: Invite, code: str | None = None) -> PairingGuest:
    return PairingGuest.for_code(
        code or invite.code, purpose=invite.purpose, request=b"bob's phone", rng=make_rng("guest")
    )


# --------------------------------------------------------------------------- the issued invite

ISSUED_LINK = (
    "microsync:join?v=1&s=lgktiqckm3agcbxlrlpl6del434anhae7q3o6fzuavj7oal5jmka"
    "&at=192.168.1.20:7400&at=[fe80::1]:7400&r=wss://relay.example.net/r&p=invite"
)


def test_an_invite_issued_from_a_seed_has_the_known_link_and_code() -> None:
    invite = issue()
    assert invite.link == ISSUED_LINK
    assert invite.code == "780-curious-marble"


# --------------------------------------------------------------------------- pairing messages

LINK_TRANSCRIPT = [
    # LINK_HELLO [1, 1, purpose, secret, request]
    "85010166696e766974655820599534404a66c06106eb8adebf0c8be6f8069c04fc36ef17340553f7017d4b"
    "144e616c696365277320646576696365",
    # LINK_ADMIT [1, 2, purpose, response]
    "84010266696e766974655677656c636f6d6520616c696365277320646576696365",
]

DEVICE_LINK_TRANSCRIPT = [
    "850101646c696e6b5820ef33ba2c9e268fbbde7176aa4c351beeb45d6ea82f023c95164e4b68db4dc2b74178",
    "840102646c696e6b4977656c636f6d652078",
]

CODE_TRANSCRIPT = [
    # CODE_HELLO [1, 3, purpose, nameplate, pake_A]
    "85010366696e7669746519030c582141266a4cab500394945afb32959f70ff9e66378cfaafb2d10040e5e83077"
    "4abefe",
    # CODE_REPLY [1, 4, pake_B]
    "83010458214228f1aea5b6e37005177fe974d6596f3b54d5fdea5f979d5ec09f18ed145ad15b",
    # CODE_CONFIRM [1, 5, confirm_G, nonce, sealed request]
    "8501055820461c23021f98f6c2f7ee0b5618016facf9531a14c50ab4accb51a7cb5a3fff975818f1b2b378af1a"
    "fef4d3eccfbe4f4824796f0f43b559f8298d581b2d62a0d461e4cd7163ab15e5e8c50c4a6ca1995bca754e9a54"
    "6781",
    # CODE_ADMIT [1, 6, confirm_H, nonce, sealed response]
    "850106582084b907e0a9abf49791886ad7b42d3e8915dbd45894328b9323b8bf5278ceba1b58184be5f68a862d"
    "6f2d515c2a855c7f66ab1dcd8ba4b7a643515823a04da01075c16076f95c5407cff1a65753fd949c4ec768b50c"
    "8c6de403b12f267d7d75",
]


def test_a_link_redemption_sends_the_known_bytes() -> None:
    invite = issue()
    assert converse(link_guest(invite), Registry(invite).host()) == LINK_TRANSCRIPT
    device_link = issue(InvitePurpose.LINK, seed="link")
    transcript = converse(link_guest(device_link, b"x"), Registry(device_link).host())
    assert transcript == DEVICE_LINK_TRANSCRIPT


def test_a_code_redemption_sends_the_known_bytes() -> None:
    invite = issue()
    assert converse(code_guest(invite), Registry(invite).host()) == CODE_TRANSCRIPT


def abort(reason: int) -> bytes:
    return bytes([0x83, 0x01, 0x07, reason])  # ABORT [1, 7, reason]


def refused_by(setup: str) -> tuple[bytes, type[Exception]]:
    """The host's ABORT message after a refusal of kind ``setup``, and the error it raised."""
    invite = issue()
    registry = Registry(invite)
    guest, now = link_guest(invite), NOW
    if setup in ("consumed", "revoked", "burned"):
        registry.records[invite.invite_id] = replace(
            registry.records[invite.invite_id], state=InviteState(setup)
        )
    elif setup == "unknown":
        registry.records.clear()
    elif setup == "expired":
        now = invite.expires_at + INVITE_CLOCK_TOLERANCE_MS + 1
    elif setup == "wrong-purpose":
        guest = PairingGuest.for_link(invite.link.replace("p=invite", "p=link"), request=b"x")
    elif setup == "wrong-code":
        guest = code_guest(invite, code=invite.code.rsplit("-", 1)[0] + "-zoo")
    elif setup == "refused":
        registry.refuse = True
    host = registry.host()
    with pytest.raises((InviteError, DecodeError)) as caught:
        if setup == "protocol":
            host.receive(encode([1, 1, "invite", b"short", b""]), now=now)
        converse(guest, host, now=now)
    assert host.abort_message is not None
    return host.abort_message, type(caught.value)


@pytest.mark.parametrize(
    ("setup", "reason", "error"),
    [
        ("unknown", 1, InviteUnknown),
        ("expired", 2, InviteExpired),
        ("consumed", 3, InviteConsumed),
        ("revoked", 4, InviteRevoked),
        ("burned", 5, InviteBurned),
        ("wrong-purpose", 6, WrongPurpose),
        ("wrong-code", 7, WrongCode),
        ("refused", 8, InviteRefused),
        ("protocol", 9, InviteProtocolError),
    ],
)
def test_each_refusal_sends_the_known_abort_and_the_guest_reads_it(
    setup: str, reason: int, error: type[InviteError]
) -> None:
    message, raised = refused_by(setup)
    assert message == abort(reason)
    if setup != "refused":  # the admit callback raised a plain InviteError there
        assert raised is error or (setup == "protocol" and issubclass(raised, DecodeError))
    guest = link_guest(issue())
    guest.start()
    with pytest.raises(error) as caught:
        guest.receive(abort(reason))
    assert type(caught.value) is error


# --------------------------------------------------------------------------- payloads and the book


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def test_a_join_request_and_a_welcome_have_the_known_bytes() -> None:
    joiner = JoinRequest.of(make_identity("joiner"))
    assert joiner.recovery_key is not None  # the fifth item: the person's recovery key
    request = joiner.to_bytes()
    assert digest(request) == (
        380,
        "d373cb935ca4ec40c55a4602e423887dd644ffc60e2c37605ef31d85f63ad60b",
    )
    assert JoinRequest.from_bytes(request).to_bytes() == request
    # without a recovery key it encodes as before (four items) and decodes so
    old = replace(joiner, recovery_key=None).to_bytes()
    assert len(old) == 346 and request.startswith(b"\x85") and old.startswith(b"\x84")
    assert JoinRequest.from_bytes(old).recovery_key is None
    welcome = Welcome(GROUP, EntryId(bytes([0x22]) * 32)).to_bytes()
    assert welcome == bytes.fromhex(
        "830158201111111111111111111111111111111111111111111111111111111111111111"
        "58202222222222222222222222222222222222222222222222222222222222222222"
    )
    assert Welcome.from_bytes(welcome) == Welcome(GROUP, EntryId(bytes([0x22]) * 32))


def test_a_welcome_naming_keepers_has_the_known_bytes_and_the_old_form_still_decodes() -> None:
    add, secret = EntryId(bytes([0x22]) * 32), bytes([0x33]) * 32
    welcome = Welcome(GROUP, add, ("ws://keeper.example:7427",), secret)
    assert welcome.to_bytes() == bytes.fromhex(
        "850158201111111111111111111111111111111111111111111111111111111111111111"
        "58202222222222222222222222222222222222222222222222222222222222222222"
        "81781877733a2f2f6b65657065722e6578616d706c653a37343237"
        "58203333333333333333333333333333333333333333333333333333333333333333"
    )
    assert Welcome.from_bytes(welcome.to_bytes()) == welcome
    assert Welcome.from_bytes(Welcome(GROUP, add).to_bytes()).keepers == ()
    assert "33" * 8 not in repr(welcome)  # the mailbox secret never shows
    bad_welcomes: list[list[Value]] = [
        [1, GROUP, add, [], secret],
        [1, GROUP, add, ["http://keeper.example"], secret],
        [1, GROUP, add, ["ws://keeper.example:7427"], b"short"],
        [1, GROUP, add, ["ws://keeper.example:7427"]],
    ]
    for bad in bad_welcomes:
        with pytest.raises(DecodeError):
            Welcome.from_bytes(encode(bad))


def test_a_link_request_and_response_have_the_known_bytes() -> None:
    candidate = DeviceCandidate.generate("phone", make_rng("candidate"), NOW)
    request = candidate.request().to_bytes()
    assert digest(request) == (
        346,
        "97d4d7c083761431a2f6ab015f5cb0b05f75d743f1b1238c90f040498913e5ce",
    )
    assert LinkRequest.from_bytes(request) == candidate.request()
    owner = make_identity("owner")
    assert owner.person_key is not None
    certificate = DeviceCertificate.issue(
        owner.person_key, candidate.device_key.public, "phone", NOW
    )
    response = LinkResponse(certificate, (GROUP, GroupId(bytes([0x33]) * 32)))
    assert digest(response.to_bytes()) == (
        224,
        "c385cf825f450323e3d873fc81164c91c1af192e99c83808169f8147b32f73bb",
    )
    assert LinkResponse.from_bytes(response.to_bytes()) == response
    # the linked device learns the recovery PUBLIC key (sixth item), never the root
    keyed = replace(response, recovery_key=owner.recovery_key)
    assert digest(keyed.to_bytes()) == (
        260,
        "68a7beb1373209a453c0308cbb335e2ac8e5d1ddd33f2d7e1d8084fa22b1a55f",
    )
    assert LinkResponse.from_bytes(keyed.to_bytes()) == keyed


def test_the_invite_book_is_stored_in_the_known_bytes_and_reloads() -> None:
    store = MemoryStore()
    book = InviteBook(store)
    group_invite, device_link = issue(), issue(InvitePurpose.LINK, seed="link")
    book.add(group_invite, GROUP)
    book.add(device_link, None)
    book.mark(group_invite.invite_id, InviteState.BURNED)
    stored = store.get_meta("invites")
    assert stored is not None
    assert digest(stored) == (
        307,
        "81b9b1345eabf6da4544217818a0d9eecce44762b82c04377a88ef8b8b4c8f5b",
    )
    again = InviteBook(store)
    assert again.get(group_invite.invite_id) == (group_invite, GROUP, InviteState.BURNED)
    assert again.get(device_link.invite_id) == (device_link, None, InviteState.OPEN)
    again.mark(device_link.invite_id, InviteState.OPEN)  # rewrites the same bytes
    assert store.get_meta("invites") == stored


# --------------------------------------------------------------------------- typed messages

PINNED = [
    *LINK_TRANSCRIPT,
    *DEVICE_LINK_TRANSCRIPT,
    *CODE_TRANSCRIPT,
    *(abort(reason).hex() for reason in AbortReason),
]
KIND_CLASSES = {
    Kind.LINK_HELLO: LinkHello,
    Kind.LINK_ADMIT: LinkAdmit,
    Kind.CODE_HELLO: CodeHello,
    Kind.CODE_REPLY: CodeReply,
    Kind.CODE_CONFIRM: CodeConfirm,
    Kind.CODE_ADMIT: CodeAdmit,
    Kind.ABORT: Abort,
    Kind.RECOVER_HELLO: RecoverHello,
    Kind.RECOVER_ADMIT: RecoverAdmit,
}


@pytest.mark.parametrize("text", PINNED)
def test_every_pinned_message_decodes_to_its_typed_message_and_back(text: str) -> None:
    data = bytes.fromhex(text)
    message = decode_message(data)
    assert type(message) is KIND_CLASSES[Kind(data[2])] and message.kind == data[2]
    assert message.to_bytes() == data


def test_the_typed_link_hello_is_the_documented_array() -> None:
    invite = issue()
    hello = decode_message(bytes.fromhex(LINK_TRANSCRIPT[0]))
    assert hello == LinkHello(
        purpose=InvitePurpose.INVITE, secret=invite.secret, request=b"alice's device"
    )
    assert invite.secret.secret_bytes().hex() not in repr(hello)
    assert decode_message(bytes.fromhex(LINK_TRANSCRIPT[1])) == LinkAdmit(
        purpose=InvitePurpose.INVITE, response=b"welcome alice's device"
    )


BYTES_32 = st.binary(min_size=32, max_size=32)
PAYLOADS = st.binary(max_size=64)
TYPED_MESSAGES = st.one_of(
    st.builds(
        LinkHello,
        purpose=st.sampled_from(InvitePurpose),
        secret=BYTES_32.map(InviteSecret),
        request=PAYLOADS,
    ),
    st.builds(LinkAdmit, purpose=st.sampled_from(InvitePurpose), response=PAYLOADS),
    st.builds(
        CodeHello,
        purpose=st.sampled_from(InvitePurpose),
        nameplate=st.integers(1, MAX_NAMEPLATE),
        pake=st.binary(min_size=33, max_size=33),
    ),
    st.builds(CodeReply, pake=st.binary(min_size=33, max_size=33)),
    st.builds(
        CodeConfirm, confirm=BYTES_32, nonce=st.binary(min_size=24, max_size=24), sealed=PAYLOADS
    ),
    st.builds(
        CodeAdmit, confirm=BYTES_32, nonce=st.binary(min_size=24, max_size=24), sealed=PAYLOADS
    ),
    st.builds(Abort, reason=st.sampled_from(AbortReason)),
    st.builds(
        RecoverHello,
        request=PAYLOADS,
        proof=st.binary(min_size=64, max_size=64),
        certificate=st.binary(max_size=1024),
    ),
    st.builds(RecoverAdmit, response=PAYLOADS),
)


@given(TYPED_MESSAGES)
def test_every_typed_message_round_trips(message: Message) -> None:
    data = message.to_bytes()
    assert decode_message(data) == message
    assert decode_message(data).to_bytes() == data


def test_each_machine_moves_exactly_as_its_table_says() -> None:
    """Every step of a link and a code redemption is an entry of the host's or the guest's
    table, and each table entry that leads on is taken by one of these redemptions."""
    seen: set[tuple[object, Kind, object]] = set()
    for mode in ("link", "code"):
        invite = issue()
        guest = link_guest(invite) if mode == "link" else code_guest(invite)
        host = Registry(invite).host()
        message: bytes | None = guest.start()
        while message is not None:
            before = host.state
            reply = host.receive(message, now=NOW)
            seen.add((before, Kind(message[2]), host.state))
            assert HOST_TRANSITIONS[(before, Kind(message[2]))] is host.state
            before_guest = guest.state
            message = guest.receive(reply)
            seen.add((before_guest, Kind(reply[2]), guest.state))
            assert GUEST_TRANSITIONS[(before_guest, Kind(reply[2]))] is guest.state
    registry = Registry(issue())
    recovering = PairingHost(  # a recovery: no invite, the recover callback decides
        check=registry.check,
        admit=registry.admit,
        burn=registry.burn,
        rng=make_rng("host"),
        recover=lambda hello: b"taken back",
    )
    hello = RecoverHello(request=b"me", proof=bytes(64), certificate=b"c").to_bytes()
    before = recovering.state
    assert isinstance(decode_message(recovering.receive(hello, now=NOW)), RecoverAdmit)
    seen.add((before, Kind.RECOVER_HELLO, recovering.state))
    leading_on = {(s, k, n) for (s, k), n in HOST_TRANSITIONS.items()}
    leading_on |= {(s, k, n) for (s, k), n in GUEST_TRANSITIONS.items() if k is not Kind.ABORT}
    assert seen == leading_on


def test_a_host_keeps_its_session_keys_only_while_it_awaits_the_confirmation() -> None:
    invite = issue()
    guest, host = code_guest(invite), Registry(invite).host()
    assert isinstance(host.step, AwaitingHello)
    confirm = guest.receive(host.receive(guest.start(), now=NOW))
    assert isinstance(host.step, AwaitingCodeConfirm) and isinstance(guest.step, AwaitingCodeAdmit)
    assert host.step.claim == Claim(invite.invite_id, InvitePurpose.INVITE)
    assert confirm is not None
    assert guest.receive(host.receive(confirm, now=NOW)) is None
    assert host.step == Admitted(Claim(invite.invite_id, InvitePurpose.INVITE))
    assert guest.step == Redeemed(b"welcome bob's phone")


def test_a_refused_host_names_the_invite_and_the_abort() -> None:
    invite = issue()
    registry = Registry(invite)
    registry.records[invite.invite_id] = replace(
        registry.records[invite.invite_id], state=InviteState.REVOKED
    )
    host = registry.host()
    with pytest.raises(InviteRevoked):
        host.receive(link_guest(invite).start(), now=NOW)
    assert host.step == Refused(
        claim=Claim(invite.invite_id, InvitePurpose.INVITE),
        abort=Abort(reason=AbortReason.REVOKED),
    )
    assert host.invite_id == invite.invite_id and host.abort_message == abort(4)


def test_the_tables_in_docs_invites_are_the_code() -> None:
    text = (Path(__file__).parents[1] / "docs" / "invites.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| `([A-Z_]+)` \| `([a-z-]+)` \|$", text, re.MULTILINE)
    documented = {(state, kind, after) for state, kind, after in rows}
    code = {(s.value, k.name, n.value) for (s, k), n in HOST_TRANSITIONS.items()}
    code |= {(s.value, k.name, n.value) for (s, k), n in GUEST_TRANSITIONS.items()}
    assert documented == code
    for kind in Kind:
        assert f"| {int(kind)} | `{KIND_CLASSES[kind].__name__}` |" in text
