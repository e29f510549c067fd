"""The redeeming side of a pairing: a sans-IO machine that presents a link or a short code.

Its states are objects (:data:`GuestStep`), each holding what that state needs;
:data:`GUEST_TRANSITIONS` says which message each state takes and which state follows::

    ReadyForLink --start()--> AwaitingLinkAdmit --LinkAdmit--> Redeemed
    ReadyForCode --start()--> AwaitingCodeReply --CodeReply--> AwaitingCodeAdmit
                                                 --CodeAdmit--> Redeemed
    an Abort, or any bad input, in any awaiting state      --> Failed

The guest checks that the host admitted it for the purpose it asked, and in code mode that the
host proved it knows the code (its confirmation) before it opens the sealed response.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field
from typing import ClassVar, Final

from microsync.crypto.pake import PakeSide, Spake2
from microsync.crypto.random import Rng
from microsync.errors import InviteProtocolError, LocalProtocolError, WrongCode, WrongPurpose
from microsync.group.invite.link import LINK_SCHEME, InviteLink, InvitePurpose, parse_link
from microsync.group.invite.messages import (
    MAX_PAYLOAD_SIZE,
    Abort,
    CodeAdmit,
    CodeConfirm,
    CodeHello,
    CodeReply,
    GuestMessage,
    Kind,
    LinkAdmit,
    LinkHello,
    Message,
    parse_message,
    split_message,
)
from microsync.group.invite.session_keys import SessionKeys, code_pake
from microsync.group.invite.shortcode import ShortCode, parse_code

__all__ = [
    "GUEST_TRANSITIONS",
    "AwaitingCodeAdmit",
    "AwaitingCodeReply",
    "AwaitingLinkAdmit",
    "Failed",
    "GuestState",
    "GuestStep",
    "PairingGuest",
    "ReadyForCode",
    "ReadyForLink",
    "Redeemed",
]


class GuestState(enum.StrEnum):
    """The name of the guest's state: what :attr:`PairingGuest.state` reports."""

    READY = "ready"
    AWAIT_LINK_ADMIT = "await-link-admit"
    AWAIT_CODE_REPLY = "await-code-reply"
    AWAIT_CODE_ADMIT = "await-code-admit"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReadyForLink:
    """Not started; will present the secret of ``link``."""

    state: ClassVar[GuestState] = GuestState.READY
    link: InviteLink


@dataclass(frozen=True, slots=True, repr=False)
class ReadyForCode:
    """Not started; will run SPAKE2 over ``code``, drawing from ``rng``."""

    state: ClassVar[GuestState] = GuestState.READY
    code: ShortCode
    rng: Rng


@dataclass(frozen=True, slots=True)
class AwaitingLinkAdmit:
    """The secret was sent; waiting for the host's answer."""

    state: ClassVar[GuestState] = GuestState.AWAIT_LINK_ADMIT


@dataclass(frozen=True, slots=True, repr=False)
class AwaitingCodeReply:
    """Our SPAKE2 message was sent; waiting for the host's."""

    state: ClassVar[GuestState] = GuestState.AWAIT_CODE_REPLY
    ready: ReadyForCode
    pake: Spake2
    pake_a: bytes


@dataclass(frozen=True, slots=True, repr=False)
class AwaitingCodeAdmit:
    """Our confirmation and sealed request were sent; waiting for the host's confirmation."""

    state: ClassVar[GuestState] = GuestState.AWAIT_CODE_ADMIT
    keys: SessionKeys


@dataclass(frozen=True, slots=True)
class Redeemed:
    """Admitted: ``response`` is the host's payload."""

    state: ClassVar[GuestState] = GuestState.DONE
    response: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Failed:
    """Over without admission (the host refused, or its input was bad)."""

    state: ClassVar[GuestState] = GuestState.FAILED


GuestStep = (
    ReadyForLink
    | ReadyForCode
    | AwaitingLinkAdmit
    | AwaitingCodeReply
    | AwaitingCodeAdmit
    | Redeemed
    | Failed
)

GUEST_TRANSITIONS: Final[dict[tuple[GuestState, Kind], GuestState]] = {
    # (state, message kind it takes): the state that follows
    (GuestState.AWAIT_LINK_ADMIT, Kind.LINK_ADMIT): GuestState.DONE,
    (GuestState.AWAIT_CODE_REPLY, Kind.CODE_REPLY): GuestState.AWAIT_CODE_ADMIT,
    (GuestState.AWAIT_CODE_ADMIT, Kind.CODE_ADMIT): GuestState.DONE,
    **{
        (state, Kind.ABORT): GuestState.FAILED
        for state in (
            GuestState.AWAIT_LINK_ADMIT,
            GuestState.AWAIT_CODE_REPLY,
            GuestState.AWAIT_CODE_ADMIT,
        )
    },
}
"""The whole guest machine (after :meth:`PairingGuest.start`): any (state, kind) not here is
refused."""


class PairingGuest:
    """The redeeming side. Call :meth:`start`, send its bytes, then feed each reply to
    :meth:`receive` and send what it returns until it returns ``None``; read :attr:`response`."""

    def __init__(
        self,
        *,
        purpose: InvitePurpose,
        request: bytes,
        link: InviteLink | None = None,
        code: ShortCode | None = None,
        rng: Rng | None = None,
    ) -> None:
        first: GuestStep
        if link is not None and code is None:
            first = ReadyForLink(link)
        elif code is not None and link is None and rng is not None:
            first = ReadyForCode(code, rng)
        else:
            raise ValueError("give either a link, or a code and an rng")
        if not isinstance(request, bytes) or len(request) > MAX_PAYLOAD_SIZE:
            raise ValueError(f"the request must be at most {MAX_PAYLOAD_SIZE} bytes")
        self._step: GuestStep = first
        self._purpose, self._request = purpose, request

    @classmethod
    def for_link(cls, link: InviteLink | str, *, request: bytes) -> PairingGuest:
        """Redeem a link (parsed strictly if given as text); the purpose comes from the link."""
        parsed = parse_link(link) if isinstance(link, str) else link
        return cls(purpose=parsed.purpose, request=request, link=parsed)

    @classmethod
    def for_code(
        cls, code: ShortCode | str, *, purpose: InvitePurpose, request: bytes, rng: Rng
    ) -> PairingGuest:
        """Redeem a short code (normalised strictly if given as text) for ``purpose``."""
        parsed = parse_code(code) if isinstance(code, str) else code
        return cls(purpose=purpose, request=request, code=parsed, rng=rng)

    @classmethod
    def redeem(
        cls, link_or_code: str, *, purpose: InvitePurpose, request: bytes, rng: Rng
    ) -> PairingGuest:
        """Redeem what a person pasted or typed: a link (``microsync:...``) or a short code,
        for ``purpose``. A link made for the other purpose raises :class:`WrongPurpose` here,
        before anything is sent."""
        if not link_or_code.startswith(LINK_SCHEME):
            return cls.for_code(link_or_code, purpose=purpose, request=request, rng=rng)
        link = parse_link(link_or_code)
        if link.purpose is not purpose:
            raise WrongPurpose(f"this link is for {link.purpose.value}, not {purpose.value}")
        return cls.for_link(link, request=request)

    @property
    def step(self) -> GuestStep:
        """The current state object."""
        return self._step

    @property
    def state(self) -> GuestState:
        return self._step.state

    @property
    def response(self) -> bytes:
        """The host's response payload, once DONE."""
        if not isinstance(self._step, Redeemed):
            raise LocalProtocolError("the pairing is not done")
        return self._step.response

    def __repr__(self) -> str:
        return f"PairingGuest(purpose={self._purpose.value}, state={self.state.value})"

    def start(self) -> bytes:
        """The first message to send to the host."""
        step = self._step
        hello: LinkHello | CodeHello
        match step:
            case ReadyForLink():
                hello = LinkHello(
                    purpose=self._purpose, secret=step.link.secret, request=self._request
                )
                self._step = AwaitingLinkAdmit()
            case ReadyForCode():
                pake = code_pake(PakeSide.A, step.code, self._purpose, step.rng)
                hello = CodeHello(
                    purpose=self._purpose, nameplate=step.code.nameplate, pake=pake.start()
                )
                self._step = AwaitingCodeReply(step, pake, hello.pake)
            case _:
                raise LocalProtocolError("start() may only be called once")
        return hello.to_bytes()

    def receive(self, data: bytes) -> bytes | None:
        """Handle one host message; return the next message to send, or ``None`` when DONE.

        Raises :class:`InviteError` or :class:`DecodeError`, leaving the guest FAILED.
        """
        step = self._step
        if not isinstance(step, AwaitingLinkAdmit | AwaitingCodeReply | AwaitingCodeAdmit):
            raise InviteProtocolError(f"no message is expected in {step.state.value}")
        self._step = Failed()  # until the message is handled
        kind, fields = split_message(data)
        follows = GUEST_TRANSITIONS.get((step.state, kind))
        if follows is None:
            raise InviteProtocolError(f"unexpected {kind.name} in {step.state.value}")
        reply, after = self._advance(step, parse_message(kind, fields))
        assert after.state is follows, "a handler disagrees with GUEST_TRANSITIONS"
        self._step = after
        return None if reply is None else reply.to_bytes()

    def _advance(
        self,
        step: AwaitingLinkAdmit | AwaitingCodeReply | AwaitingCodeAdmit,
        message: Message,
    ) -> tuple[GuestMessage | None, GuestStep]:
        match step, message:
            case _, Abort():
                raise message.error()
            case AwaitingLinkAdmit(), LinkAdmit():
                return self._on_link_admit(message)
            case AwaitingCodeReply(), CodeReply():
                return self._on_code_reply(step, message)
            case AwaitingCodeAdmit(), CodeAdmit():
                return self._on_code_admit(step, message)
        raise InviteProtocolError(f"unexpected {message.kind.name} in {step.state.value}")

    def _on_link_admit(self, admit: LinkAdmit) -> tuple[None, Redeemed]:
        if admit.purpose is not self._purpose:
            raise WrongPurpose("the host admitted for another purpose")
        return None, Redeemed(admit.response)

    def _on_code_reply(
        self, step: AwaitingCodeReply, reply: CodeReply
    ) -> tuple[CodeConfirm, AwaitingCodeAdmit]:
        ready = step.ready
        key = step.pake.finish(reply.pake)
        nameplate = ready.code.nameplate
        keys = SessionKeys.derive(key, self._purpose, nameplate, step.pake_a, reply.pake)
        nonce, sealed = keys.seal(Kind.CODE_CONFIRM, self._request, ready.rng)
        confirm = CodeConfirm(confirm=keys.guest_confirm, nonce=nonce, sealed=sealed)
        return confirm, AwaitingCodeAdmit(keys)

    def _on_code_admit(self, step: AwaitingCodeAdmit, admit: CodeAdmit) -> tuple[None, Redeemed]:
        if not hmac.compare_digest(admit.confirm, step.keys.host_confirm):
            raise WrongCode("the host does not know the code")
        return None, Redeemed(step.keys.open(Kind.CODE_ADMIT, admit.nonce, admit.sealed))
