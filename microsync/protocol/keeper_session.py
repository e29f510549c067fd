"""The keeper's per-connection rules and the client's request machine (sans-IO).

Theory of operation
-------------------
**Keeper side** (:class:`KeeperRules`). A connection starts with the keeper's CHALLENGE, 32
fresh random bytes the I/O layer draws. A client proves a mailbox by signing that challenge
(:func:`microsync.group.mailbox.check_proof`): the proof is good on this connection only, so a
recorded one replayed on another connection fails. :meth:`KeeperRules.receive` turns each
client message into either a reply (a refusal, PROVED) or an :data:`Action` for the store:
``Store``, ``Read``, ``Purge``. The I/O layer performs the action and answers; it sends
STORED only after the store committed.

Rules, in order: request ids strictly increase (else ERROR MALFORMED); a mailbox must be proved
on this connection before it is pushed to, pulled or deleted from (REFUSED NOT_PROVED); at most
``max_mailboxes`` proved per connection (TOO_MANY_MAILBOXES); at most ``max_failed_proofs`` bad
proofs (then ERROR TOO_MANY_FAILURES); at most ``max_bytes`` pushed per connection
(CONNECTION_FULL). Quotas per mailbox and on disk are the store's (MAILBOX_FULL, KEEPER_FULL).

**Client side** (:class:`ClientMachine`). One table, :data:`ANSWERS`, says which keeper
messages answer which request and which of them end it. The machine numbers requests, checks
every keeper message against the table and the pending requests, and reports when a request
is complete. Anything else is a :class:`~microsync.errors.RemoteProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final, assert_never

from microsync.errors import LocalProtocolError, NotAMember, RemoteProtocolError
from microsync.group.mailbox import ItemId, MailboxId, Proof, SealedItem, check_proof
from microsync.protocol.keeper import (
    MAX_PAGE,
    Challenge,
    ClientMessage,
    Delete,
    Deleted,
    End,
    Error,
    ErrorCode,
    Items,
    KeeperError,
    KeeperMessage,
    Prove,
    Proved,
    Pull,
    Push,
    Refusal,
    Refused,
    Stored,
)

__all__ = [
    "ANSWERS",
    "Action",
    "ClientMachine",
    "ConnectionLimits",
    "KeeperRules",
    "Purge",
    "Read",
    "Store",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """What one connection may do at a keeper."""

    max_mailboxes: int = 64
    max_failed_proofs: int = 4
    max_bytes: int = 1 << 30
    """Bytes of item payload one connection may push (then CONNECTION_FULL)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    request: int
    mailbox: MailboxId
    items: tuple[SealedItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    request: int
    mailbox: MailboxId
    after: int
    before: int
    newest_first: bool
    limit: int
    wait: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Purge:
    request: int
    mailbox: MailboxId
    items: tuple[ItemId, ...]


Action = Store | Read | Purge


class _Fatal(Exception):
    def __init__(self, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.code = code


@dataclass(slots=True)
class KeeperRules:
    """One connection's rules at the keeper. ``challenge``: the fresh nonce it was sent;
    ``keeper``: the keeper's id."""

    challenge: bytes
    keeper: bytes
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    proved: set[MailboxId] = field(default_factory=set)
    failed_proofs: int = 0
    pushed_bytes: int = 0
    last_request: int = 0

    def hello(self) -> Challenge:
        """The first message of the connection."""
        return Challenge(nonce=self.challenge, keeper=self.keeper)

    def receive(self, message: ClientMessage) -> KeeperMessage | Action:
        """The reply to ``message``, or the store action that answers it; an :class:`Error`
        means: send it and hang up."""
        if message.request <= self.last_request:
            return Error(code=ErrorCode.MALFORMED)
        self.last_request = message.request
        try:
            return self._receive(message)
        except _Fatal as fatal:
            return Error(code=fatal.code)

    def _receive(self, message: ClientMessage) -> KeeperMessage | Action:
        match message:
            case Prove(request=request, proof=proof):
                return self._prove(request, proof)
            case Push(request=request, mailbox=mailbox, items=items):
                return self._gate(request, mailbox) or self._push(request, mailbox, items)
            case Pull(request=r, mailbox=m, after=a, before=b, newest_first=n, limit=k, wait=w):
                read = Read(
                    request=r, mailbox=m, after=a, before=b, newest_first=n, limit=k, wait=w
                )
                return self._gate(r, m) or read
            case Delete(request=request, mailbox=mailbox, items=items):
                purge = Purge(request=request, mailbox=mailbox, items=items)
                return self._gate(request, mailbox) or purge
            case _:
                assert_never(message)

    def _gate(self, request: int, mailbox: MailboxId) -> Refused | None:
        if mailbox not in self.proved:
            return Refused(request=request, code=Refusal.NOT_PROVED)
        return None

    def _prove(self, request: int, proof: Proof) -> KeeperMessage:
        if proof.mailbox in self.proved:
            return Proved(request=request)
        if len(self.proved) >= self.limits.max_mailboxes:
            return Refused(request=request, code=Refusal.TOO_MANY_MAILBOXES)
        try:
            check_proof(proof, self.challenge)
        except NotAMember:
            self.failed_proofs += 1
            if self.failed_proofs > self.limits.max_failed_proofs:
                raise _Fatal(ErrorCode.TOO_MANY_FAILURES) from None
            return Refused(request=request, code=Refusal.BAD_PROOF)
        self.proved.add(proof.mailbox)
        return Proved(request=request)

    def _push(
        self, request: int, mailbox: MailboxId, items: tuple[SealedItem, ...]
    ) -> Refused | Store:
        size = sum(len(item.payload) for item in items)
        if self.pushed_bytes + size > self.limits.max_bytes:
            return Refused(request=request, code=Refusal.CONNECTION_FULL)
        self.pushed_bytes += size
        return Store(request=request, mailbox=mailbox, items=items)


# --- the client's machine ------------------------------------------------------------------


class Ask(Enum):
    PROVE = "prove"
    PUSH = "push"
    PULL = "pull"
    DELETE = "delete"


ANSWERS: Final[dict[Ask, tuple[tuple[type, ...], tuple[type, ...]]]] = {
    # request: (messages that answer it, those of them that end it)
    Ask.PROVE: ((Proved, Refused), (Proved, Refused)),
    Ask.PUSH: ((Stored, Refused), (Stored, Refused)),
    Ask.PULL: ((Items, End, Refused), (End, Refused)),
    Ask.DELETE: ((Deleted, Refused), (Deleted, Refused)),
}


def _ask_of(message: ClientMessage) -> Ask:
    match message:
        case Prove():
            return Ask.PROVE
        case Push():
            return Ask.PUSH
        case Pull():
            return Ask.PULL
        case Delete():
            return Ask.DELETE
        case _:
            assert_never(message)


@dataclass(slots=True)
class ClientMachine:
    """The client's view of one keeper connection: the challenge, and the open requests."""

    challenge: bytes | None = None
    keeper: bytes | None = None
    pending: dict[int, Ask] = field(default_factory=dict)
    last_request: int = 0
    pulled: dict[int, int] = field(default_factory=dict)  # pull request -> items so far
    limits: dict[int, int] = field(default_factory=dict)  # pull request -> its limit
    pushed: dict[int, int] = field(default_factory=dict)  # push request -> items in it

    def next_request(self) -> int:
        """A fresh request number (they strictly increase)."""
        if self.challenge is None:
            raise LocalProtocolError("no request before the keeper's challenge")
        self.last_request += 1
        return self.last_request

    def send(self, message: ClientMessage) -> ClientMessage:
        """Record ``message`` as sent; returns it."""
        if message.request != self.last_request or message.request in self.pending:
            raise LocalProtocolError("requests are sent in the order they were numbered")
        self.pending[message.request] = _ask_of(message)
        if isinstance(message, Pull):
            self.pulled[message.request], self.limits[message.request] = 0, message.limit
        if isinstance(message, Push):
            self.pushed[message.request] = len(message.items)
        return message

    def receive(self, message: KeeperMessage) -> bool:
        """Check ``message``; True when it completes its request. An ERROR raises
        :class:`KeeperError`; anything out of place :class:`RemoteProtocolError`."""
        match message:
            case Error(code=code):
                raise KeeperError(code)
            case Challenge(nonce=nonce, keeper=keeper):
                if self.challenge is not None:
                    raise RemoteProtocolError("a second challenge")
                self.challenge, self.keeper = nonce, keeper
                return False
            case Proved() | Stored() | Items() | End() | Deleted() | Refused():
                return self._answer(message)
            case _:
                assert_never(message)

    def _answer(self, message: Proved | Stored | Items | End | Deleted | Refused) -> bool:
        ask = self.pending.get(message.request)
        if ask is None:
            raise RemoteProtocolError("an answer to no open request")
        answers, final = ANSWERS[ask]
        if type(message) not in answers:
            raise RemoteProtocolError(f"{type(message).__name__} does not answer a {ask.value}")
        if isinstance(message, Items):
            self.pulled[message.request] += len(message.items)
            if self.pulled[message.request] > self.limits.get(message.request, MAX_PAGE):
                raise RemoteProtocolError("more items than the pull asked for")
        if isinstance(message, Stored) and len(message.cursors) != self.pushed.get(message.request):
            raise RemoteProtocolError("a STORED that does not match its PUSH")
        if type(message) in final:
            del self.pending[message.request]
            self.pulled.pop(message.request, None)
            self.limits.pop(message.request, None)
            self.pushed.pop(message.request, None)
            return True
        return False
