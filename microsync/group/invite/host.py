"""The inviting side of a pairing: a sans-IO machine that admits one guest at most once.

Its states are objects (:data:`HostStep`), each holding what that state needs and nothing
else; :data:`HOST_TRANSITIONS` says which message each state takes and which state follows::

    AwaitingHello  --LinkHello-->    Admitted             reply LinkAdmit
    AwaitingHello  --CodeHello-->    AwaitingCodeConfirm  reply CodeReply   (holds the keys)
    AwaitingCodeConfirm --CodeConfirm--> Admitted         reply CodeAdmit
    AwaitingHello  --RecoverHello--> Admitted             reply RecoverAdmit (no invite)
    any refusal or bad input     --> Refused              send its ABORT, then close

Invariants
----------
* The group layer decides through the callbacks (:mod:`microsync.group.invite.terms`); the host
  applies :func:`~microsync.group.invite.terms.admissible` to its answer before admitting, and
  ``admit`` is called at most once per machine.
* Code mode: once the host has sent its SPAKE2 reply, every outcome but admission calls
  ``burn(invite_id)``: one wrong guess burns the invite. At CODE_CONFIRM the host checks the
  invite's state *before* the confirmation, so parallel sessions test at most one guess.
* Any input in Admitted or Refused is refused; nothing but :class:`InviteError` and
  :class:`DecodeError` escapes for any input bytes.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from microsync.crypto.pake import PakeSide
from microsync.crypto.random import Rng
from microsync.errors import (
    DecodeError,
    InviteError,
    InviteProtocolError,
    InviteRefused,
    InviteUnknown,
    WrongCode,
)
from microsync.group.invite.link import InviteId, InvitePurpose, invite_id
from microsync.group.invite.messages import (
    MAX_PAYLOAD_SIZE,
    Abort,
    CodeAdmit,
    CodeConfirm,
    CodeHello,
    CodeReply,
    HostMessage,
    Kind,
    LinkAdmit,
    LinkHello,
    Message,
    RecoverAdmit,
    RecoverHello,
    parse_message,
    split_message,
)
from microsync.group.invite.session_keys import SessionKeys, code_pake
from microsync.group.invite.terms import Admit, Burn, CheckInvite, FindCode, admissible

__all__ = [
    "HOST_TRANSITIONS",
    "Admitted",
    "AwaitingCodeConfirm",
    "AwaitingHello",
    "Claim",
    "HostState",
    "HostStep",
    "PairingHost",
    "Recover",
    "Refused",
]

Recover = Callable[[RecoverHello], bytes]
"""``recover(hello) -> response``: take a restored device back into the groups it
may rejoin, or raise an :class:`InviteError` (:mod:`microsync.group.recovery`)."""


class HostState(enum.StrEnum):
    """The name of the host's state: what :attr:`PairingHost.state` reports."""

    AWAIT_HELLO = "await-hello"
    AWAIT_CODE_CONFIRM = "await-code-confirm"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Claim:
    """Which invite the guest is redeeming, and for what: known from its first message."""

    invite_id: InviteId
    purpose: InvitePurpose


@dataclass(frozen=True, slots=True)
class AwaitingHello:
    """Waiting for the guest's first message."""

    state: ClassVar[HostState] = HostState.AWAIT_HELLO


@dataclass(frozen=True, slots=True, repr=False)
class AwaitingCodeConfirm:
    """Code mode after the SPAKE2 reply: the invite is burned unless this ends in admission."""

    state: ClassVar[HostState] = HostState.AWAIT_CODE_CONFIRM
    claim: Claim
    keys: SessionKeys


@dataclass(frozen=True, slots=True)
class Admitted:
    """The guest was admitted (``admit`` ran once; ``claim`` is ``None`` for a recovery,
    which redeems no invite)."""

    state: ClassVar[HostState] = HostState.DONE
    claim: Claim | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Over without admission. ``abort`` tells the guest why (``None`` for an untyped error);
    ``claim`` names the invite when the guest's message got that far."""

    state: ClassVar[HostState] = HostState.FAILED
    claim: Claim | None = None
    abort: Abort | None = None


HostStep = AwaitingHello | AwaitingCodeConfirm | Admitted | Refused

HOST_TRANSITIONS: Final[dict[tuple[HostState, Kind], HostState]] = {
    # (state, message kind it takes): the state that follows (or FAILED, when refused)
    (HostState.AWAIT_HELLO, Kind.LINK_HELLO): HostState.DONE,
    (HostState.AWAIT_HELLO, Kind.CODE_HELLO): HostState.AWAIT_CODE_CONFIRM,
    (HostState.AWAIT_CODE_CONFIRM, Kind.CODE_CONFIRM): HostState.DONE,
    (HostState.AWAIT_HELLO, Kind.RECOVER_HELLO): HostState.DONE,
}
"""The whole host machine: any (state, kind) not here is refused."""


class PairingHost:
    """The inviting side: answers one guest, admitting it at most once.

    Feed every message from the guest to :meth:`receive` and send back what it returns. When it
    raises, send :attr:`abort_message` (if not ``None``) and close.
    """

    def __init__(
        self,
        *,
        check: CheckInvite,
        admit: Admit,
        burn: Burn,
        rng: Rng,
        find_code: FindCode | None = None,
        recover: Recover | None = None,
    ) -> None:
        self._check, self._admit, self._burn, self._rng = check, admit, burn, rng
        self._find_code, self._recover = find_code, recover
        self._step: HostStep = AwaitingHello()

    @property
    def step(self) -> HostStep:
        """The current state object."""
        return self._step

    @property
    def state(self) -> HostState:
        return self._step.state

    @property
    def invite_id(self) -> InviteId | None:
        """The invite the guest is redeeming, once known."""
        claim = _claim_of(self._step)
        return None if claim is None else claim.invite_id

    @property
    def purpose(self) -> InvitePurpose | None:
        claim = _claim_of(self._step)
        return None if claim is None else claim.purpose

    @property
    def abort_message(self) -> bytes | None:
        """An ABORT message telling the guest why, after :meth:`receive` raised."""
        step = self._step
        if isinstance(step, Refused) and step.abort is not None:
            return step.abort.to_bytes()
        return None

    def __repr__(self) -> str:
        return f"PairingHost(state={self.state.value})"

    def receive(self, data: bytes, *, now: int) -> bytes:
        """Handle one guest message at ``now`` (ms); return the reply to send.

        Raises :class:`InviteError` or :class:`DecodeError`, leaving the host FAILED (and, in
        code mode after the SPAKE2 reply, the invite burned).
        """
        step = self._step
        if isinstance(step, Admitted | Refused):
            raise InviteProtocolError("the pairing session is over")
        self._step = Refused(claim=_claim_of(step))  # until the message is handled
        try:
            kind, fields = split_message(data)
            follows = HOST_TRANSITIONS.get((step.state, kind))
            if follows is None:
                raise InviteProtocolError(f"unexpected {kind.name} in {step.state.value}")
            reply, after = self._advance(step, parse_message(kind, fields), now)
            assert after.state is follows, "a handler disagrees with HOST_TRANSITIONS"
        except (InviteError, DecodeError) as error:
            self._refuse(error, burn=isinstance(step, AwaitingCodeConfirm))
            raise
        self._step = after
        return reply.to_bytes()

    def _advance(
        self, step: AwaitingHello | AwaitingCodeConfirm, message: Message, now: int
    ) -> tuple[HostMessage, HostStep]:
        match step, message:
            case AwaitingHello(), RecoverHello():
                return self._on_recover_hello(message)
            case AwaitingHello(), LinkHello():
                return self._on_link_hello(message, now)
            case AwaitingHello(), CodeHello():
                return self._on_code_hello(message, now)
            case AwaitingCodeConfirm(), CodeConfirm():
                return self._on_code_confirm(step, message, now)
        raise InviteProtocolError(f"unexpected {message.kind.name} in {step.state.value}")

    def _refuse(self, error: Exception, *, burn: bool) -> None:
        claim = _claim_of(self._step)
        self._step = Refused(claim=claim, abort=Abort.for_error(error))
        if burn and claim is not None:
            self._burn(claim.invite_id)

    def _learn(self, claim: Claim) -> Claim:
        """From here on, should this message fail, the FAILED state names ``claim``."""
        self._step = Refused(claim=claim)
        return claim

    def _on_link_hello(self, hello: LinkHello, now: int) -> tuple[LinkAdmit, Admitted]:
        claim = self._learn(Claim(invite_id(hello.secret), hello.purpose))
        self._vet(claim, now)
        response = self._admit_request(claim, hello.request)
        return LinkAdmit(purpose=claim.purpose, response=response), Admitted(claim)

    def _on_recover_hello(self, hello: RecoverHello) -> tuple[RecoverAdmit, Admitted]:
        if self._recover is None:
            raise InviteProtocolError("this host takes no recovery request")
        response = self._recover(hello)
        if not isinstance(response, bytes) or len(response) > MAX_PAYLOAD_SIZE:
            raise InviteRefused("the response is not at most MAX_PAYLOAD_SIZE bytes")
        return RecoverAdmit(response=response), Admitted(None)

    def _on_code_hello(self, hello: CodeHello, now: int) -> tuple[CodeReply, AwaitingCodeConfirm]:
        invite = self._find_code(hello.nameplate) if self._find_code is not None else None
        if invite is None or invite.short_code.nameplate != hello.nameplate:
            raise InviteUnknown("no open invite has that nameplate")
        claim = self._learn(Claim(invite.invite_id, hello.purpose))
        self._vet(claim, now)
        pake = code_pake(PakeSide.B, invite.short_code, claim.purpose, self._rng)
        pake_b = pake.start()
        key = pake.finish(hello.pake)
        keys = SessionKeys.derive(key, claim.purpose, hello.nameplate, hello.pake, pake_b)
        return CodeReply(pake=pake_b), AwaitingCodeConfirm(claim, keys)

    def _on_code_confirm(
        self, step: AwaitingCodeConfirm, confirm: CodeConfirm, now: int
    ) -> tuple[CodeAdmit, Admitted]:
        keys = step.keys
        # state first, so a session racing a burn cannot learn whether its guess was right
        self._vet(step.claim, now)
        if not hmac.compare_digest(confirm.confirm, keys.guest_confirm):
            raise WrongCode("the code does not match")
        request = keys.open(Kind.CODE_CONFIRM, confirm.nonce, confirm.sealed)
        response = self._admit_request(step.claim, request)
        nonce, sealed = keys.seal(Kind.CODE_ADMIT, response, self._rng)
        admit = CodeAdmit(confirm=keys.host_confirm, nonce=nonce, sealed=sealed)
        return admit, Admitted(step.claim)

    def _vet(self, claim: Claim, now: int) -> None:
        """Ask the group layer about the invite and apply every rule to its answer."""
        record = self._check(claim.invite_id)
        admissible(record, invite=claim.invite_id, purpose=claim.purpose, now=now)

    def _admit_request(self, claim: Claim, request: bytes) -> bytes:
        response = self._admit(claim.invite_id, request)
        if not isinstance(response, bytes) or len(response) > MAX_PAYLOAD_SIZE:
            raise InviteRefused("the response is not at most MAX_PAYLOAD_SIZE bytes")
        return response


def _claim_of(step: HostStep) -> Claim | None:
    match step:
        case AwaitingHello():
            return None
        case AwaitingCodeConfirm() | Admitted() | Refused():
            return step.claim
