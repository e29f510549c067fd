"""The sync session: a sans-IO state machine over an authenticated, encrypted record channel.

Theory of operation (``docs/sync.md`` has the full story)
---------------------------------------------------------
The session composes small machines, each an ``Enum`` of phases and one table
``(phase, message type) -> Row(handler, next phases)`` (:mod:`microsync.protocol.sync.table`):

1. **Matching** (:mod:`~microsync.protocol.sync.matching`, :class:`SessionState`): ``HELLO``
   tags per proof key, ``MATCH`` confirmations for a peer that is behind; the matched groups
   open (each sends its ``DIGEST``).
2. **Reconcile** (:mod:`~microsync.protocol.sync.reconcile`, :class:`GroupPhase`, per group):
   digest, frontiers, stream, one ``DONE`` each way, then LIVE pushes
   (:meth:`SyncSession.local_update`). Forks (:class:`~microsync.protocol.forks.ForkExchange`)
   ride along: evidence before the frontier, conflicts after it.
3. **Flow credit** (:mod:`~microsync.protocol.sync.credit`): values, spent per ``ENTRIES`` and
   given back per ``CREDIT``; entries beyond the credit granted close the session.
4. **Key fetch** (:mod:`~microsync.protocol.sync.keyfetch`), **chunk transfer**
   (:mod:`~microsync.protocol.sync.chunks`) and ephemeral messages
   (:mod:`~microsync.protocol.sync.keepalive`): beside reconciliation, never moving a phase.
5. **Keepalive** (:mod:`~microsync.protocol.sync.keepalive`): the timers as data; every call
   that returns records takes ``now`` (optional where it was not taken before).

Invariants: every legal (state, message) pair is a row of :data:`TRANSITIONS`; anything else,
and any malformed record, closes the session with an ``ErrorMessage`` before the host is
touched. A group's phase changes only in :meth:`Reconcile.enter
<microsync.protocol.sync.reconcile.Reconcile.enter>`, from a row or when this side's stream
ends; the session state only here, from a row, :meth:`SyncSession.close` or a failure. The
session never sends entries beyond the credit granted, never sends the host's data for a group
the peer did not prove it holds, and never serves a peer ``may_serve`` refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from microsync.crypto.random import Rng
from microsync.errors import DecodeError, LocalProtocolError, MicrosyncError, RemoteProtocolError
from microsync.feed.entry import GroupId
from microsync.identity import DeviceId
from microsync.protocol.messages import (
    Bye,
    Certificates,
    ChunkData,
    ChunkMissing,
    ChunkRequest,
    Conflict,
    Credit,
    Digest,
    Done,
    Entries,
    Ephemeral,
    ErrorCode,
    ErrorMessage,
    ForkEvidenceMessage,
    Frontier,
    Item,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Message,
    MsgType,
    Ping,
    decode_message,
    encode_message,
    message_type,
)
from microsync.protocol.sync.chunks import CHUNK_TRANSFER, ChunkTransfer
from microsync.protocol.sync.credit import Window
from microsync.protocol.sync.keepalive import EPHEMERAL, Due, EphemeralInbox, Keepalive
from microsync.protocol.sync.keyfetch import KEY_FETCH, KeyFetch
from microsync.protocol.sync.link import Link
from microsync.protocol.sync.matching import (
    MATCHING,
    SYNC_GROUP_TAG,
    Matching,
    SessionState,
    group_tag,
)
from microsync.protocol.sync.options import MAX_ITEM_SIZE, SessionStats, SyncOptions
from microsync.protocol.sync.ports import ChunkHost, ExitHost, GroupProof, PeerReceiver, SyncHost
from microsync.protocol.sync.reconcile import (
    FORK_EXCHANGE,
    OUR_DONE,
    RECONCILE,
    STREAMING,
    SYNC_FRONTIER_DIGEST,
    GroupPhase,
    Reconcile,
    frontier_digest,
)
from microsync.protocol.sync.table import Row

__all__ = [
    "MAX_ITEM_SIZE",
    "OUR_DONE",
    "SYNC_FRONTIER_DIGEST",
    "SYNC_GROUP_TAG",
    "TRANSITIONS",
    "ChunkHost",
    "ExitHost",
    "GroupPhase",
    "GroupProof",
    "PeerReceiver",
    "SessionState",
    "SessionStats",
    "SyncHost",
    "SyncOptions",
    "SyncSession",
    "frontier_digest",
    "group_tag",
]

_GROUP_MESSAGES: Final = (
    Digest,
    Frontier,
    Certificates,
    Entries,
    Done,
    KeyRequest,
    KeyResponse,
    KeyRefused,
    Ephemeral,
    ChunkRequest,
    ChunkData,
    ChunkMissing,
    Conflict,
    ForkEvidenceMessage,
)


class _Group:
    """One matched group: its reconciliation (with its fork exchange), key fetch and chunks."""

    __slots__ = ("chunks", "keys", "reconcile")

    def __init__(self, link: Link, group: GroupId) -> None:
        self.reconcile = Reconcile(link, group)
        self.keys = KeyFetch(link, group)
        self.chunks = ChunkTransfer(link, group)


class SyncSession:
    """One sync session with one peer. Feed it records with :meth:`receive`; send what every
    call returns, in order. See the module docstring and ``docs/sync.md``."""

    def __init__(
        self,
        host: SyncHost,
        *,
        our_device: DeviceId,
        peer_device: DeviceId,
        channel_binding: bytes,
        initiator: bool,
        rng: Rng,
        options: SyncOptions | None = None,
    ) -> None:
        if len(channel_binding) < 16:
            raise ValueError("the channel binding must be at least 16 bytes")
        self.host = host
        self.our_device = our_device
        self.peer_device = peer_device
        self.options = options or SyncOptions()
        window = Window.of(self.options.window_batches, self.options.window_bytes)
        self._link = Link(host, peer_device, self.options, window)
        self.stats: SessionStats = self._link.stats
        self.state = SessionState.AWAIT_HELLO
        self.error: MicrosyncError | None = None
        self._rng = rng
        self._groups: dict[GroupId, _Group] = {}
        self._matching = Matching(
            self._link,
            channel_binding=channel_binding,
            initiator=initiator,
            open_group=self._open_group,
            opened=self._groups,
        )
        self._keepalive = Keepalive(self.options)
        self._ephemeral = EphemeralInbox(self._link)
        self._started = False

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def groups(self) -> dict[GroupId, GroupPhase]:
        """The groups matched with the peer and the phase of each."""
        return {gid: g.reconcile.phase for gid, g in self._groups.items()}

    @property
    def synced(self) -> bool:
        """Matched, every group LIVE and no key request or conflict outstanding."""
        return self.state is SessionState.OPEN and all(
            g.reconcile.phase is GroupPhase.LIVE
            and not g.keys.awaiting
            and not g.reconcile.forks.conflicts_out
            for g in self._groups.values()
        )

    def peer_frontier(self, group: GroupId) -> dict[DeviceId, int] | None:
        """What the session knows the peer holds of ``group`` (device -> head seq): the
        frontier it sent, plus every entry sent and received since; ``None`` until known."""
        g = self._groups.get(group)
        return None if g is None or not g.reconcile.view.knows else dict(g.reconcile.view.known)

    def start(self, now: int) -> list[bytes]:
        """Begin: the ``Hello`` to send. Call once."""
        if self._started:
            raise LocalProtocolError("the session was already started")
        self._started = True
        self._keepalive.start(now)
        self._link.send(self._matching.hello(self._rng))
        return self._flush(now)

    def receive(self, record: bytes, now: int) -> list[bytes]:
        """Handle one record from the peer; return the records to send. After the session
        closed, input is ignored."""
        if self.closed or not self._started:
            return []
        self._keepalive.received(now)
        self._link.now = now
        self.stats.records_received += 1
        try:
            message = decode_message(record, self.options.limits)
            kind = message_type(message)
            self.stats.received[kind] = self.stats.received.get(kind, 0) + 1
            self._dispatch(message, kind)
        except (DecodeError, RemoteProtocolError) as exc:
            self._fail(ErrorCode.PROTOCOL, RemoteProtocolError(str(exc)))
        except MicrosyncError as exc:  # a local failure (storage...): say nothing about it
            self._fail(ErrorCode.INTERNAL, exc, reason="internal error")
        return self._flush(now)

    def local_update(
        self, group: GroupId, now: int | None = None, fresh: Sequence[Item] = ()
    ) -> list[bytes]:
        """The host appended or received entries of ``group``: push what the peer lacks.

        ``fresh``: when everything that changed is this device's own new entries, handed over
        after their commit (the runtime's after-commit hook), those entries: pushed as they
        are when they are exactly what the peer lacks (:meth:`Reconcile.push_fresh
        <microsync.protocol.sync.reconcile.Reconcile.push_fresh>`), with no store query;
        otherwise the host is asked as for any update."""
        g = self._groups.get(group)
        if self.closed or g is None or g.reconcile.phase not in STREAMING:
            return self._flush(now)  # only what was queued (chunk requests)
        if fresh and g.reconcile.push_fresh(fresh):
            self._follow_up()
            return self._flush(now)
        g.reconcile.view.certs_check = True  # due if a batch may need new ones
        g.reconcile.forks.share()
        self._link.push_soon(group)
        self._follow_up()
        return self._flush(now)

    def send_ephemeral(self, group: GroupId, data: bytes, now: int | None = None) -> list[bytes]:
        """Send opaque ``data`` for ``group`` (nothing if the peer may not be served)."""
        if len(data) > self.options.limits.max_ephemeral:
            raise LocalProtocolError("ephemeral message over the size limit")
        if self.closed or group not in self._groups:
            return []
        if self.host.may_serve(group, self.peer_device):
            self._link.send(Ephemeral(group=group, data=data))
        return self._flush(now)

    def request_chunks(self, group: GroupId, ids: Sequence[bytes], hops: int = 0) -> None:
        """Ask the peer for vault chunks of ``group`` (ids not already asked; at most
        ``max_chunks_outstanding`` unanswered; ``hops``: how many more devices may pass the
        request on). The request goes out with the next records a call returns
        (:meth:`local_update` or :meth:`flush`), so an I/O adapter sends it through its one
        outbox. Answers reach the host's ``chunk_received`` and ``chunks_missing``.
        :class:`LocalProtocolError` beyond the window."""
        g = self._groups.get(group)
        if not self.closed and g is not None:
            g.chunks.request(ids, hops)

    def answer_chunk(self, group: GroupId, chunk: bytes, data: bytes | None) -> bool:
        """Answer a chunk the host took on to relay (``relay_chunk``): its bytes, or missing
        (``None``); sent with the next records (:meth:`flush`). ``False`` if not owed."""
        g = self._groups.get(group)
        return not self.closed and g is not None and g.chunks.answer(chunk, data)

    def flush(self, now: int | None = None) -> list[bytes]:
        """Records queued by :meth:`request_chunks`, to send now."""
        return self._flush(now)

    def chunks_outstanding(self, group: GroupId) -> int:
        """Chunk ids asked of the peer for ``group`` and not answered yet."""
        g = self._groups.get(group)
        return 0 if g is None else len(g.chunks.asked)

    def close(self, now: int | None = None) -> list[bytes]:
        """End the session normally: a ``Bye``."""
        if self.closed:
            return []
        self._link.send(Bye())
        self.state = SessionState.CLOSED
        return self._flush(now)

    def next_deadline(self, now: int) -> int | None:
        """When :meth:`handle_timeout` should next be called (``None`` once closed)."""
        return None if self.closed else self._keepalive.deadline(opening=self._opening)

    def handle_timeout(self, now: int) -> list[bytes]:
        """Close a session that did not open in time or that the peer left idle too long;
        keep a quiet one alive with a ping. Pings from the peer count as activity only once
        the session is open: they never keep an unmatched peer connected."""
        if self.closed:
            return []
        match self._keepalive.due(now, opening=self._opening):
            case Due.OPEN_TIMEOUT:
                self._fail(ErrorCode.TIMEOUT, RemoteProtocolError("no group matched in time"))
            case Due.IDLE:
                self._fail(ErrorCode.TIMEOUT, RemoteProtocolError("the peer was idle too long"))
            case Due.PING:
                self._link.send(Ping())
            case Due.NOTHING:
                pass
        return self._flush(now)

    @property
    def _opening(self) -> bool:
        """Started, and Hello and Match not both through yet."""
        return self.state in (SessionState.AWAIT_HELLO, SessionState.AWAIT_MATCH)

    # ------------------------------------------------------------------ plumbing

    def _flush(self, now: int | None) -> list[bytes]:
        records = []
        for message in self._link.out:
            kind = message_type(message)
            self.stats.sent[kind] = self.stats.sent.get(kind, 0) + 1
            records.append(encode_message(message))
        self._link.out.clear()
        self.stats.records_sent += len(records)
        if records and now is not None:
            self._keepalive.sent(now)
        return records

    def _fail(self, code: ErrorCode, error: MicrosyncError, reason: str | None = None) -> None:
        self._link.out.clear()
        self._link.keys_due.clear()
        self._link.pump_due = False
        text = str(error) if reason is None else reason
        self._link.send(ErrorMessage(code=code, reason=text[: self.options.limits.max_reason]))
        self.error = error
        self.state = SessionState.CLOSED

    def _dispatch(self, message: Message, kind: MsgType) -> None:
        """Look the message up in :data:`TRANSITIONS`, run its handler, move to the phase
        (or state) the row leads to, then push entries and ask for keys if due."""
        if isinstance(message, _GROUP_MESSAGES):
            g = self._groups.get(message.group)
            if g is None:
                raise RemoteProtocolError(f"{kind.name} for a group not shared in this session")
            phase = g.reconcile.phase
            row = GROUP_TRANSITIONS.get((phase, kind))
            if row is None:
                raise RemoteProtocolError(f"{kind.name} is not allowed in state {phase.value}")
            after = row.run(_PARTS[kind](self, g), message)
            if after is not None:
                g.reconcile.enter(after)
        else:
            state = self.state
            session_row = SESSION_TRANSITIONS.get((state, kind))
            if session_row is None:
                raise RemoteProtocolError(f"{kind.name} is not allowed in state {state.value}")
            machine = self._matching if (state, kind) in MATCHING else self
            moved = session_row.run(machine, message)
            if moved is not None:
                self.state = moved
        self._follow_up()

    def _follow_up(self) -> None:
        """What handlers marked due: push entries (while credit lasts), then key requests."""
        link = self._link
        if link.pump_due:
            link.pump_due = False
            for group in list(link.dirty):
                if not self._groups[group].reconcile.push():
                    break
        while link.keys_due:
            group = next(iter(link.keys_due))
            del link.keys_due[group]
            self._groups[group].keys.request()

    def _open_group(self, group: GroupId) -> None:
        g = _Group(self._link, group)
        self._groups[group] = g
        g.reconcile.open()

    # ------------------------------------------------------------------ session messages

    def _on_credit(self, m: Credit) -> None:
        self._link.credit = self._link.credit.grant(m.batches, m.bytes)
        self._link.pump_due = True

    def _on_ping(self, m: Ping) -> None:
        return None

    def _on_bye(self, m: Bye) -> None:
        return None

    def _on_error(self, m: ErrorMessage) -> None:
        self.error = RemoteProtocolError(f"the peer closed the session: {m.reason}")


_S = SessionState
_OPEN_OR_OPENING: Final = (_S.AWAIT_HELLO, _S.AWAIT_MATCH, _S.OPEN)

SESSION_TRANSITIONS: Final[dict[tuple[SessionState, MsgType], Row[Any, Any, SessionState]]] = {
    **MATCHING,
    (_S.OPEN, MsgType.CREDIT): Row(SyncSession._on_credit),
    **{(s, MsgType.PING): Row(SyncSession._on_ping) for s in _OPEN_OR_OPENING},
    **{(s, MsgType.BYE): Row(SyncSession._on_bye, (_S.CLOSED,)) for s in _OPEN_OR_OPENING},
    **{(s, MsgType.ERROR): Row(SyncSession._on_error, (_S.CLOSED,)) for s in _OPEN_OR_OPENING},
}
"""Session-level messages, keyed by the session state: matching, credit, keepalive, the end."""

_Part = Callable[[SyncSession, _Group], Any]
_MACHINES: Final[
    tuple[tuple[dict[tuple[GroupPhase, MsgType], Row[Any, Any, GroupPhase]], _Part], ...]
] = (
    (RECONCILE, lambda s, g: g.reconcile),
    (FORK_EXCHANGE, lambda s, g: g.reconcile.forks),
    (KEY_FETCH, lambda s, g: g.keys),
    (CHUNK_TRANSFER, lambda s, g: g.chunks),
    (EPHEMERAL, lambda s, g: s._ephemeral),
)
GROUP_TRANSITIONS: Final = {key: row for table, _ in _MACHINES for key, row in table.items()}
"""Group messages, keyed by the phase of the group they name (an unmatched group is an error
before this table). Only :data:`RECONCILE` rows move the phase."""
_PARTS: Final[dict[MsgType, _Part]] = {kind: part for table, part in _MACHINES for _, kind in table}

TRANSITIONS: Final[dict[tuple[SessionState | GroupPhase, MsgType], Row[Any, Any, Any]]] = {
    **{(state, kind): row for (state, kind), row in SESSION_TRANSITIONS.items()},
    **{(phase, kind): row for (phase, kind), row in GROUP_TRANSITIONS.items()},
}
"""Every legal (state or phase, message type) -> ``Row(handler, next)``: the session's and
every group machine's table. A pair not listed is a :class:`RemoteProtocolError`: the session
closes with an error."""
