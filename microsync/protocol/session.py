"""The sync session: a sans-IO state machine over an authenticated, encrypted record channel.

Theory of operation (``docs/sync.md`` has the full story)
---------------------------------------------------------
1. **Match.** Both sides send ``Hello`` at once: for every group the host holds, a 16-byte tag
   ``derive_key(SYNC_GROUP_TAG, proof key, channel_binding || role)`` per proof key (the control
   keys of the latest epochs), sorted and padded with random tags. Each side recomputes the
   PEER's tags for its own proof keys, so the matched groups are exactly those where both sides
   hold a common proof key: a non-member learns nothing, and a tag is useless on any other
   connection (other binding) or reflected back (other role).
2. **Compare.** Per matched group each side sends a ``Digest`` of its frontier, saying whether
   it serves the peer (``host.may_serve``). Equal digests: the group goes LIVE after one message
   each way. Otherwise a side that serves sends its ``Frontier``; a side that does not, but is
   served, answers the peer's frontier with its own clamped to it (a removed member learns
   nothing new); when neither serves, both just send ``Done``.
3. **Stream.** A serving side sends ``Certificates``, then batches of ``Entries`` the peer
   lacks, each spending credit the peer granted (``Hello``, then one ``Credit`` back per batch
   received), then ``Done``. Newest-first when asked, for the first ``newest_first_window``
   entries. When both ``Done`` are through, the group is LIVE.
4. **Live.** :meth:`SyncSession.local_update` pushes whatever the peer lacks, judged by what
   the session knows the peer holds (its frontier, plus everything sent and received since).
5. **Vault chunks.** In any phase of a matched group, either side may send ``ChunkRequest``
   (at most ``max_chunks_outstanding`` ids unanswered per group); the other answers each id once
   with ``ChunkData`` or within a ``ChunkMissing``, only to a peer ``may_serve`` admits and only
   from a host that is a :class:`ChunkHost`. Chunks spend no entry credit, so entry sync goes
   on while they flow; the requester's window bounds the chunk bytes in flight.
6. **Keys.** After the peer's ``Done`` (or equal digests), and after live entries, keys the host
   misses are asked for once each; answers are ``KeyResponse`` or ``KeyRefused``.
7. **Forks** (a :class:`~microsync.protocol.forks.ForkHost`). The digest covers the fork points
   too. A serving side passes on the fork evidence the peer may lack (``ForkEvidenceMessage``)
   before its frontier, then checks the peer's frontier head ids against its own entries: a
   different entry at a position both hold sends the peer ours from there back (``Conflict``),
   which gives the peer the evidence; it answers with the evidence (or, if the feeds differ
   further back, with its own entries from there: a walk back). A side that sent a
   ``Conflict`` is not ``synced`` until it is answered. A served side notes the feeds where
   the peer's (whole) view is older than ours in ``stats.stale``.

Invariants: every legal (state, message) pair is a row of :data:`TRANSITIONS`; anything else,
and any malformed record, closes the session with an ``ErrorMessage`` before the host is
touched. The session never sends entries beyond the credit granted, never sends the host's data
for a group the peer did not prove it holds, and never serves a peer ``may_serve`` refuses.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, runtime_checkable

from microsync import encoding
from microsync.crypto import derive_key, fingerprint, labelled_hash, labels
from microsync.crypto.random import Rng
from microsync.errors import (
    DecodeError,
    DecryptionError,
    LocalProtocolError,
    MicrosyncError,
    RemoteProtocolError,
    VerificationError,
)
from microsync.feed.entry import (
    MAX_BODY_SIZE,
    MAX_ENTRY_SIZE,
    EntryId,
    GroupId,
    feed_position,
)
from microsync.identity import DeviceCertificate, DeviceId
from microsync.protocol.forks import ForkHost, compare_heads
from microsync.protocol.messages import (
    LIMITS,
    SIGNATURE_SIZE,
    TAG_SIZE,
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
    FrontierHead,
    Hello,
    Item,
    KeyRefused,
    KeyRequest,
    KeyResponse,
    Limits,
    Match,
    Message,
    MsgType,
    Ping,
    batch_size,
    decode_message,
    encode_message,
    message_type,
)

__all__ = [
    "SYNC_FRONTIER_DIGEST",
    "SYNC_GROUP_TAG",
    "TRANSITIONS",
    "ChunkHost",
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

SYNC_GROUP_TAG: Final = labels.SYNC_GROUP_TAG
SYNC_FRONTIER_DIGEST: Final = labels.SYNC_FRONTIER_DIGEST

MAX_ITEM_SIZE: Final = MAX_ENTRY_SIZE + SIGNATURE_SIZE + MAX_BODY_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupProof:
    """A group the host holds and the secrets that prove it (16 to 64 bytes each): ``keys``
    are offered in ``Hello`` (newest first); ``older`` are held but not offered, and only
    recognise a peer that is behind (it offered one of them). The keys are secret: ``repr``
    shows the group's fingerprint and how many keys there are, never their bytes."""

    group: GroupId
    keys: tuple[bytes, ...]
    older: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        group = fingerprint(self.group)
        return f"GroupProof(group={group}, keys={len(self.keys)}, older={len(self.older)})"


class SyncHost(Protocol):
    """What a session needs from the local device. Every method is synchronous and must not
    block on the network; each group argument is a group :meth:`sync_groups` listed."""

    def sync_groups(self) -> Sequence[GroupProof]:
        """Every group this device holds, each with its proof keys (at most
        ``SyncOptions.max_proofs_per_group`` are used): the control keys (``EpochKey.control``
        bytes) of the latest 3 epochs it holds, newest first, then the ids of the latest adds
        whose devices have not written to the group yet. A device holding no key of a group
        it joined offers the id of the add that admitted it (its ``Welcome.add``); a group
        with no proof key is left out (it cannot be matched)."""
        ...

    def frontier(self, group: GroupId) -> Mapping[DeviceId, tuple[int, EntryId]]:
        """For each non-empty feed of ``group``: its head ``(seq, entry id)``."""
        ...

    def entries_after(
        self, group: GroupId, frontier: Mapping[DeviceId, int], *, newest_first: bool, limit: int
    ) -> list[Item]:
        """At most ``limit`` entries ``(wire, body)`` of ``group`` that a holder of
        ``frontier`` (device -> head seq; absent = 0) lacks. ``newest_first=False``: feed by
        feed, each feed in seq order from its frontier (so any prefix is chain-contiguous).
        ``newest_first=True``: the newest ones across all feeds (by HLC), newest first."""
        ...

    def receive(self, group: GroupId, items: Sequence[Item]) -> int:
        """Validate and store entries from the peer (one transaction); return how many were
        accepted. Rejected items change nothing. Raise only on local failure."""
        ...

    def may_serve(self, group: GroupId, peer: DeviceId) -> bool:
        """Is ``peer`` an active device of a current member of ``group`` in this view?"""
        ...

    def certificates(self, group: GroupId) -> list[bytes]:
        """Device certificates (``DeviceCertificate.to_bytes``) of every device with a feed
        in ``group`` and of every current member device, this device's own included."""
        ...

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        """Keep certificates from the peer, verifying each; skip bad ones silently."""
        ...

    def missing_keys(self, group: GroupId) -> list[tuple[int, bytes]]:
        """Epoch slots ``(number, commitment or 16-byte key ref)`` this device lacks
        (``GroupReplica.missing_keys``)."""
        ...

    def answer_key_request(
        self, group: GroupId, peer: DeviceId, wanted: Sequence[tuple[int, bytes]]
    ) -> bytes | None:
        """Keys for ``peer`` as an opaque encoded bundle, or ``None`` to refuse
        (``GroupReplica.answer_key_request``; ``NotAMember`` becomes ``None``)."""
        ...

    def accept_key_response(self, group: GroupId, peer: DeviceId, response: bytes) -> int:
        """Open and keep the keys of a response (``GroupReplica.accept_key_response``); return
        how many were new. A malformed or forged response raises ``DecodeError`` or
        ``DecryptionError`` and changes nothing."""
        ...

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        """An ephemeral message (presence, location) from ``peer``; the app verifies it."""
        ...


@runtime_checkable
class PeerReceiver(Protocol):
    """A host that bounds per peer what it holds back (entries of devices not admitted yet):
    the session hands it each batch with the peer's device id instead of calling ``receive``."""

    def receive_from(self, group: GroupId, peer: DeviceId, items: Sequence[Item]) -> int: ...


@runtime_checkable
class ExitHost(Protocol):
    """Optional: what a host adds to tell a former member that it is out."""

    def exit_limit(
        self, group: GroupId, peer: DeviceId
    ) -> Mapping[DeviceId, tuple[int, EntryId]] | None:
        """For a device that was a member of ``group`` and is out now: per feed, the last
        ``(seq, entry id)`` in the causal past of the operations that put it out (those
        included); ``None`` for any other device. The session serves such a peer exactly that
        much, so it learns it is out and nothing written after."""
        ...


@runtime_checkable
class ChunkHost(Protocol):
    """What a host that serves and fetches vault chunks adds to :class:`SyncHost`."""

    def chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bytes | None:
        """The sealed chunk ``chunk`` of ``group`` for ``peer``, or ``None``."""
        ...

    def chunk_received(self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes) -> None:
        """A chunk this side asked ``peer`` for (the host verifies it before keeping it)."""
        ...

    def chunks_missing(self, group: GroupId, peer: DeviceId, chunks: Sequence[bytes]) -> None:
        """``peer`` does not hold these requested chunks."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOptions:
    """Tunables of one session. ``window_*`` is the credit granted to the peer."""

    newest_first: bool = False
    newest_first_window: int = 1024
    batch_entries: int = 256
    batch_bytes: int = 1024 * 1024
    window_batches: int = 4
    window_bytes: int = 4 * 1024 * 1024
    pad_tags: int = 8
    max_proofs_per_group: int = 8
    max_key_rounds: int = 4
    ephemeral_per_minute: int = 120  # from the peer; more are dropped (and counted)
    max_chunks_outstanding: int = 64  # vault chunk ids asked of the peer, unanswered, per group
    max_conflicts: int = 256  # Conflicts from the peer per group per session (a walk back)
    idle_timeout_ms: int = 90_000
    keepalive_ms: int = 30_000
    match_timeout_ms: int = 10_000
    """Time from :meth:`SyncSession.start` for the session to open (Hello and Match both
    ways); a peer that matches no group by then is closed, whatever it sends meanwhile."""
    limits: Limits = LIMITS

    def __post_init__(self) -> None:
        if not 1 <= self.batch_entries <= self.limits.max_batch_entries:
            raise ValueError("batch_entries must be within the codec limit")
        if not MAX_ITEM_SIZE <= self.batch_bytes <= self.limits.max_batch_bytes:
            raise ValueError("batch_bytes must hold the largest entry and fit the codec limit")
        if self.window_batches < 1 or self.window_bytes < MAX_ITEM_SIZE:
            raise ValueError("the window must admit at least one batch of the largest entry")


class SessionState(enum.Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_MATCH = "await-match"
    OPEN = "open"
    CLOSED = "closed"


class GroupPhase(enum.Enum):
    AWAIT_DIGEST = "await-digest"
    AWAIT_FRONTIER = "await-frontier"
    SYNCING = "syncing"
    LIVE = "live"


@dataclass(slots=True)
class SessionStats:
    """Counters for one session (entries and bytes count entry wire + body bytes)."""

    entries_sent: int = 0
    entries_received: int = 0
    entries_accepted: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    records_sent: int = 0
    records_received: int = 0
    sent: dict[MsgType, int] = field(default_factory=dict)
    received: dict[MsgType, int] = field(default_factory=dict)
    keys_gained: int = 0
    key_refusals: int = 0
    ephemeral_dropped: int = 0
    chunks_sent: int = 0
    chunks_received: int = 0
    chunk_bytes_sent: int = 0
    chunk_bytes_received: int = 0
    forks_learnt: int = 0  # fork points found or lowered here through this session
    # feeds where the peer's whole view (it serves us) ends at one of our entries, but an
    # older one: (peer's seq, ours). A peer that serves a stale or partial view shows here.
    stale: dict[DeviceId, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _GroupSync:
    """One matched group's progress in this session."""

    group: GroupId
    phase: GroupPhase = GroupPhase.AWAIT_DIGEST
    snapshot: dict[DeviceId, int] = field(default_factory=dict)  # the frontier we digested
    digest: bytes = b""  # the digest we sent
    peer_known: dict[DeviceId, int] = field(default_factory=dict)  # peer holds 1..seq
    sent_ahead: set[tuple[bytes, int]] = field(default_factory=set)  # newest-first, beyond
    newest_budget: int = 0
    serving: bool = False  # what we told the peer in our Digest, updated as views change
    peer_serves: bool = False
    knows_peer: bool = False  # peer_known came from the peer (its frontier or equal digests)
    certs_due: bool = False
    certs_sent: set[bytes] = field(default_factory=set)
    done_sent: bool = False
    peer_done: bool = False
    requested: set[tuple[int, bytes]] = field(default_factory=set)
    key_rounds: int = 0
    awaiting_keys: int = 0
    answered: int = 0  # key requests from the peer
    certs_received: int = 0
    chunks_asked: set[bytes] = field(default_factory=set)  # chunk ids asked, not yet answered
    # for a former member: how far each feed may be served (the causal past of its exit)
    limit: dict[DeviceId, int] | None = None
    limit_heads: dict[DeviceId, tuple[int, EntryId]] = field(default_factory=dict)
    forks_shared: dict[DeviceId, int] = field(default_factory=dict)  # evidence sent or received
    conflicts_out: int = 0  # Conflicts sent to a peer that serves us, not answered yet
    conflicts_in: int = 0


def group_tag(key: bytes, channel_binding: bytes, role: bytes) -> bytes:
    """The membership tag for one proof key on one connection, for one role (b"I" or b"R")."""
    return derive_key(SYNC_GROUP_TAG, key, channel_binding + role)[:TAG_SIZE]


def frontier_digest(
    frontier: Mapping[DeviceId, tuple[int, EntryId]], forks: Mapping[DeviceId, int] | None = None
) -> bytes:
    """A hash of a frontier: over the sorted ``(device, seq, head id)`` triples, and, when some
    feeds are known forked, ``[triples, sorted (device, fork seq) pairs]``."""
    rows: list[encoding.Value] = [[d, s, h] for d, (s, h) in sorted(frontier.items())]
    if forks:
        marks: list[encoding.Value] = [[d, s] for d, s in sorted(forks.items())]
        rows = [rows, marks]
    return labelled_hash(SYNC_FRONTIER_DIGEST, encoding.encode(rows))


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
        self.stats = SessionStats()
        self.state = SessionState.AWAIT_HELLO
        self.error: MicrosyncError | None = None
        self._binding = channel_binding
        self._role, self._peer_role = (b"I", b"R") if initiator else (b"R", b"I")
        self._rng = rng
        self._groups: dict[GroupId, _GroupSync] = {}
        self._expected: dict[bytes, GroupId] = {}  # the peer's Hello tags for offered keys
        self._behind: dict[bytes, tuple[GroupId, bytes]] = {}  # ... for keys not offered
        self._confirms: dict[bytes, GroupId] = {}  # the peer's Match tags for offered keys
        self._dirty: dict[GroupId, None] = {}  # groups that may have entries to push, in order
        self._credit = (0, 0)  # (batches, bytes) we may still send
        self._peer_credit = (self.options.window_batches, self.options.window_bytes)
        self._out: list[Message] = []
        self._last_received = 0
        self._last_sent = 0
        self._started = False
        self._open_by = 0  # when an unopened session times out (started + match_timeout_ms)
        self._ephemeral_window = (0, 0)  # (minute, ephemeral messages received in it)

    # ------------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def groups(self) -> dict[GroupId, GroupPhase]:
        """The groups matched with the peer and the phase of each."""
        return {gid: g.phase for gid, g in self._groups.items()}

    @property
    def synced(self) -> bool:
        """Matched, every group LIVE and no key request or conflict outstanding."""
        return self.state is SessionState.OPEN and all(
            g.phase is GroupPhase.LIVE and not g.awaiting_keys and not g.conflicts_out
            for g in self._groups.values()
        )

    def peer_frontier(self, group: GroupId) -> dict[DeviceId, int] | None:
        """What the session knows the peer holds of ``group`` (device -> head seq): the
        frontier it sent, plus every entry sent and received since; ``None`` until known."""
        g = self._groups.get(group)
        return None if g is None or not g.knows_peer else dict(g.peer_known)

    def start(self, now: int) -> list[bytes]:
        """Begin: the ``Hello`` to send. Call once."""
        if self._started:
            raise LocalProtocolError("the session was already started")
        self._started = True
        self._last_received = self._last_sent = now
        self._open_by = now + self.options.match_timeout_ms
        tags: set[bytes] = set()
        binding, peer = self._binding, self._peer_role
        for proof in self.host.sync_groups():
            offered = proof.keys[: self.options.max_proofs_per_group]
            for key in offered:
                if len(tags) + self.options.pad_tags >= self.options.limits.max_tags:
                    break
                tags.add(group_tag(key, binding, self._role))
                self._expected[group_tag(key, binding, peer)] = proof.group
                self._confirms[group_tag(key, binding, b"c" + peer)] = proof.group
            for key in (*proof.keys[len(offered) :], *proof.older):
                self._behind[group_tag(key, binding, peer)] = (proof.group, key)
        step = self.options.pad_tags
        target = max(step, -(-len(tags) // step) * step)
        while len(tags) < target:  # random tags hide how many groups this device holds
            tags.add(self._rng(TAG_SIZE))
        batches, size = self._peer_credit
        self._send(Hello(tags=tuple(sorted(tags)), credit_batches=batches, credit_bytes=size))
        return self._flush(now)

    def receive(self, record: bytes, now: int) -> list[bytes]:
        """Handle one record from the peer; return the records to send. After the session
        closed, input is ignored."""
        if self.closed or not self._started:
            return []
        self._last_received = now
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

    def local_update(self, group: GroupId) -> list[bytes]:
        """The host appended or received entries of ``group``: push what the peer lacks."""
        g = self._groups.get(group)
        if self.closed or g is None or g.phase not in (GroupPhase.SYNCING, GroupPhase.LIVE):
            return self._flush(None)  # only what was queued (chunk requests)
        g.certs_due = True
        self._share_forks(g)
        self._dirty[group] = None
        self._pump()
        return self._flush(None)

    def send_ephemeral(self, group: GroupId, data: bytes) -> list[bytes]:
        """Send opaque ``data`` for ``group`` (nothing if the peer may not be served)."""
        if len(data) > self.options.limits.max_ephemeral:
            raise LocalProtocolError("ephemeral message over the size limit")
        if self.closed or group not in self._groups:
            return []
        if self.host.may_serve(group, self.peer_device):
            self._send(Ephemeral(group=group, data=data))
        return self._flush(None)

    def request_chunks(self, group: GroupId, ids: Sequence[bytes]) -> None:
        """Ask the peer for vault chunks of ``group`` (ids not already asked; at most
        ``max_chunks_outstanding`` unanswered). The request goes out with the next records a
        call returns (:meth:`local_update` or :meth:`flush`), so an I/O adapter sends it
        through its one outbox. Answers reach the host's ``chunk_received`` and
        ``chunks_missing``. :class:`LocalProtocolError` beyond the window."""
        g = self._groups.get(group)
        if self.closed or g is None:
            return
        fresh = [i for i in dict.fromkeys(ids) if i not in g.chunks_asked]
        if len(g.chunks_asked) + len(fresh) > self.options.max_chunks_outstanding:
            raise LocalProtocolError("more chunks asked than the window allows")
        step = self.options.limits.max_chunk_ids
        for start in range(0, len(fresh), step):
            batch = tuple(fresh[start : start + step])
            g.chunks_asked.update(batch)
            self._send(ChunkRequest(group=group, ids=batch))

    def flush(self) -> list[bytes]:
        """Records queued by :meth:`request_chunks`, to send now."""
        return self._flush(None)

    def chunks_outstanding(self, group: GroupId) -> int:
        """Chunk ids asked of the peer for ``group`` and not answered yet."""
        g = self._groups.get(group)
        return 0 if g is None else len(g.chunks_asked)

    def close(self) -> list[bytes]:
        """End the session normally: a ``Bye``."""
        if self.closed:
            return []
        self._send(Bye())
        self.state = SessionState.CLOSED
        return self._flush(None)

    def next_deadline(self, now: int) -> int | None:
        """When :meth:`handle_timeout` should next be called (``None`` once closed)."""
        if self.closed:
            return None
        idle = self._last_received + self.options.idle_timeout_ms
        deadline = min(idle, self._last_sent + self.options.keepalive_ms)
        return min(deadline, self._open_by) if self._opening else deadline

    def handle_timeout(self, now: int) -> list[bytes]:
        """Close a session that did not open in time or that the peer left idle too long;
        keep a quiet one alive with a ping. Pings from the peer count as activity only once
        the session is open: they never keep an unmatched peer connected."""
        if self.closed:
            return []
        if self._opening and now >= self._open_by:
            self._fail(ErrorCode.TIMEOUT, RemoteProtocolError("no group matched in time"))
        elif now >= self._last_received + self.options.idle_timeout_ms:
            self._fail(ErrorCode.TIMEOUT, RemoteProtocolError("the peer was idle too long"))
        elif now >= self._last_sent + self.options.keepalive_ms:
            self._send(Ping())
        return self._flush(now)

    @property
    def _opening(self) -> bool:
        """Started, and Hello and Match not both through yet."""
        return self.state in (SessionState.AWAIT_HELLO, SessionState.AWAIT_MATCH)

    # ------------------------------------------------------------------ plumbing

    def _send(self, message: Message) -> None:
        self._out.append(message)

    def _flush(self, now: int | None) -> list[bytes]:
        records = []
        for message in self._out:
            kind = message_type(message)
            self.stats.sent[kind] = self.stats.sent.get(kind, 0) + 1
            records.append(encode_message(message))
        self._out.clear()
        self.stats.records_sent += len(records)
        if records and now is not None:
            self._last_sent = now
        return records

    def _fail(self, code: ErrorCode, error: MicrosyncError, reason: str | None = None) -> None:
        self._out.clear()
        text = str(error) if reason is None else reason
        self._send(ErrorMessage(code=code, reason=text[: self.options.limits.max_reason]))
        self.error = error
        self.state = SessionState.CLOSED

    def _dispatch(self, message: Message, kind: MsgType) -> None:
        phase: SessionState | GroupPhase = self.state
        if isinstance(message, _GROUP_MESSAGES):
            g = self._groups.get(message.group)
            if g is None:
                raise RemoteProtocolError(f"{kind.name} for a group not shared in this session")
            phase = g.phase
        handler = TRANSITIONS.get((phase, kind))
        if handler is None:
            raise RemoteProtocolError(f"{kind.name} is not allowed in state {phase.value}")
        handler(self, message)

    # ------------------------------------------------------------------ session messages

    def _on_hello(self, m: Hello) -> None:
        """Match the peer's tags; confirm the groups it is behind in (it matched none of our
        offered keys there, but offered one we hold), then open every matched group."""
        self._credit = (m.credit_batches, m.credit_bytes)
        self.state = SessionState.AWAIT_MATCH
        matched = {self._expected[t] for t in m.tags if t in self._expected}
        behind = dict(self._behind[t] for t in m.tags if t in self._behind)
        confirms = {
            group_tag(key, self._binding, b"c" + self._role)
            for group, key in behind.items()
            if group not in matched
        }
        self._send(Match(confirms=tuple(sorted(confirms))))
        for group in sorted(matched | set(behind)):
            self._open_group(group)

    def _on_match(self, m: Match) -> None:
        for tag in m.confirms:
            group = self._confirms.get(tag)
            if group is None:
                raise RemoteProtocolError("a confirmation that matches no offered key")
            if group not in self._groups:
                self._open_group(group)
        if not self._groups:  # nothing in common: say so and go
            self._send(Bye())
            self.state = SessionState.CLOSED
            return
        self.state = SessionState.OPEN

    def _open_group(self, group: GroupId) -> None:
        g = _GroupSync(group)
        heads = self.host.frontier(group)
        g.snapshot = {d: seq for d, (seq, _) in heads.items()}
        forks = self._fork_host()
        g.digest = frontier_digest(heads, None if forks is None else forks.forks(group))
        g.serving = self._serves(g)
        self._groups[group] = g
        self._send(Digest(group=group, digest=g.digest, serving=g.serving))

    def _on_credit(self, m: Credit) -> None:
        batches, size = self._credit
        self._credit = (batches + m.batches, size + m.bytes)
        self._pump()

    def _on_ping(self, m: Ping) -> None:
        return None

    def _on_bye(self, m: Bye) -> None:
        self.state = SessionState.CLOSED

    def _on_error(self, m: ErrorMessage) -> None:
        self.error = RemoteProtocolError(f"the peer closed the session: {m.reason}")
        self.state = SessionState.CLOSED

    # ------------------------------------------------------------------ group messages

    def _on_digest(self, m: Digest) -> None:
        g = self._groups[m.group]
        g.peer_serves = m.serving
        if m.digest == g.digest:  # both sides compare the same two digests: one decision
            g.peer_known, g.knows_peer = dict(g.snapshot), True
            self._go_live(g)
            self._maybe_request_keys(g)
        elif g.serving:  # the peer is a member in our view: it may see our frontier
            g.phase = GroupPhase.AWAIT_FRONTIER
            self._share_forks(g)  # before the frontier: the peer serves us nothing forked
            ours = g.limit_heads if g.limit is not None else self.host.frontier(m.group)
            heads = sorted(ours.items())
            rows = [FrontierHead(device=d, seq=s, head=h) for d, (s, h) in heads]
            self._send_frontier(g, rows)
        elif m.serving:  # answer its frontier with ours clamped to it: it learns nothing new
            g.phase = GroupPhase.AWAIT_FRONTIER
        else:  # neither side sends entries: nothing to compare
            g.phase = GroupPhase.SYNCING
            self._send_done(g)

    def _send_frontier(self, g: _GroupSync, heads: list[FrontierHead]) -> None:
        rows = tuple(heads[: self.options.limits.max_feeds])
        self._send(Frontier(group=g.group, heads=rows, newest_first=self.options.newest_first))

    def _on_frontier(self, m: Frontier) -> None:
        g = self._groups[m.group]
        g.peer_known, g.knows_peer = {DeviceId(h.device): h.seq for h in m.heads}, True
        g.newest_budget = self.options.newest_first_window if m.newest_first else 0
        g.phase = GroupPhase.SYNCING
        self._check_heads(g, m.heads)
        if g.serving:
            g.certs_due = True
            self._dirty[m.group] = None
            self._pump()
            return
        if g.peer_serves:
            self._send_frontier(g, self._clamped(g.group, m.heads))
        self._send_done(g)

    def _clamped(self, group: GroupId, theirs: tuple[FrontierHead, ...]) -> list[FrontierHead]:
        """Our frontier cut down to the peer's: where we are ahead we claim only its head."""
        ours = self.host.frontier(group)
        rows = []
        for head in theirs:
            mine = ours.get(DeviceId(head.device))
            if mine is None:
                continue
            seq, entry = mine
            rows.append(head if seq >= head.seq else replace(head, seq=seq, head=entry))
        return rows

    def _on_certificates(self, m: Certificates) -> None:
        g = self._groups[m.group]
        g.certs_received += len(m.certificates)
        if g.certs_received > self.options.limits.max_feeds:
            raise RemoteProtocolError("more certificates than a group has feeds")
        self.host.learn_certificates(m.certificates)

    def _on_entries(self, m: Entries) -> None:
        g = self._groups[m.group]
        size = m.size
        batches, budget = self._peer_credit
        if batches < 1 or size > budget:
            raise RemoteProtocolError("entries beyond the granted credit")
        self._peer_credit = (batches - 1, budget - size)
        for wire, _ in m.items:
            _note_held(g.peer_known, wire)
        if isinstance(self.host, PeerReceiver):
            accepted = self.host.receive_from(m.group, self.peer_device, m.items)
        else:
            accepted = self.host.receive(m.group, m.items)
        self.stats.entries_received += len(m.items)
        self.stats.entries_accepted += accepted
        self.stats.bytes_received += size
        self._peer_credit = (self._peer_credit[0] + 1, self._peer_credit[1] + size)
        self._send(Credit(batches=1, bytes=size))
        if not g.serving:
            self._reconsider_serving(g)
        if g.peer_done:
            self._maybe_request_keys(g)

    def _on_done(self, m: Done) -> None:
        g = self._groups[m.group]
        g.peer_done = True
        if g.done_sent:
            self._go_live(g)
        self._maybe_request_keys(g)

    def _on_key_request(self, m: KeyRequest) -> None:
        g = self._groups[m.group]
        g.answered += 1
        answer = None
        if g.answered <= self.options.max_key_rounds:  # each answer costs key wraps: bounded
            answer = self.host.answer_key_request(m.group, self.peer_device, m.wanted)
        if answer is None or len(answer) > self.options.limits.max_key_response:
            self._send(KeyRefused(group=m.group))
        else:
            self._send(KeyResponse(group=m.group, response=answer))

    def _on_key_response(self, m: KeyResponse) -> None:
        g = self._take_key_answer(m.group)
        try:
            gained = self.host.accept_key_response(m.group, self.peer_device, m.response)
        except (DecodeError, DecryptionError):
            raise RemoteProtocolError("a key response that does not open") from None
        self.stats.keys_gained += gained
        if gained:
            self._maybe_request_keys(g)

    def _on_key_refused(self, m: KeyRefused) -> None:
        self._take_key_answer(m.group)
        self.stats.key_refusals += 1

    def _on_ephemeral(self, m: Ephemeral) -> None:
        minute, count = self._ephemeral_window
        now = self._last_received // 60_000
        count = count + 1 if now == minute else 1
        self._ephemeral_window = (now, count)
        if count > self.options.ephemeral_per_minute:
            self.stats.ephemeral_dropped += 1
            return
        self.host.ephemeral(m.group, self.peer_device, m.data)

    def _on_chunk_request(self, m: ChunkRequest) -> None:
        host = self.host if isinstance(self.host, ChunkHost) else None
        if host is not None and not self.host.may_serve(m.group, self.peer_device):
            host = None
        missing = []
        for chunk in m.ids:
            data = None if host is None else host.chunk(m.group, self.peer_device, chunk)
            if data is None or len(data) > self.options.limits.max_chunk_data:
                missing.append(chunk)
                continue
            self.stats.chunks_sent += 1
            self.stats.chunk_bytes_sent += len(data)
            self._send(ChunkData(group=m.group, id=chunk, data=data))
        if missing:
            self._send(ChunkMissing(group=m.group, ids=tuple(missing)))

    def _on_chunk_data(self, m: ChunkData) -> None:
        self._take_chunk_answers(m.group, (m.id,))
        self.stats.chunks_received += 1
        self.stats.chunk_bytes_received += len(m.data)
        if isinstance(self.host, ChunkHost):
            self.host.chunk_received(m.group, self.peer_device, m.id, m.data)

    def _on_chunk_missing(self, m: ChunkMissing) -> None:
        self._take_chunk_answers(m.group, m.ids)
        if isinstance(self.host, ChunkHost):
            self.host.chunks_missing(m.group, self.peer_device, m.ids)

    def _take_chunk_answers(self, group: GroupId, ids: Sequence[bytes]) -> None:
        asked = self._groups[group].chunks_asked
        if not asked.issuperset(ids):
            raise RemoteProtocolError("a chunk answer nobody asked for")
        asked.difference_update(ids)

    def _on_conflict(self, m: Conflict) -> None:
        """The peer's own entries where it saw ours differ: keep the fork, then pass the
        evidence back, or, when the feeds differ further back still, our entries below."""
        g, host = self._groups[m.group], self._fork_host()
        if host is None:
            return
        g.conflicts_out = max(0, g.conflicts_out - 1)  # the peer's answer to ours, or its own
        g.conflicts_in += 1
        if g.conflicts_in > self.options.max_conflicts:  # each costs lookups and an answer
            raise RemoteProtocolError("more conflicts than a walk back needs")
        try:
            found = host.accept_conflict(m.group, self.peer_device, m.entries)
            device, _ = feed_position(m.entries[0][:-SIGNATURE_SIZE])
        except (DecodeError, VerificationError):
            raise RemoteProtocolError("a conflict that is not a signed run of one feed") from None
        self.stats.forks_learnt += found is not None
        if found is not None and found.earlier:
            self._send_conflict(g, found.device, found.seq - 1)
        else:  # always answered with the evidence held, so the peer may stop waiting
            self._share_forks(g, also=device)

    def _on_fork_evidence(self, m: ForkEvidenceMessage) -> None:
        g, host = self._groups[m.group], self._fork_host()
        if host is None:
            return
        g.conflicts_out = max(0, g.conflicts_out - 1)
        try:
            lowered = host.accept_fork_evidence(m.group, self.peer_device, m.first, m.second)
            device, seq = feed_position(m.first[:-SIGNATURE_SIZE])
        except (DecodeError, VerificationError):
            raise RemoteProtocolError("fork evidence that does not verify") from None
        g.forks_shared[device] = min(seq, g.forks_shared.get(device, seq))
        self.stats.forks_learnt += lowered

    # ------------------------------------------------------------------ forks

    def _fork_host(self) -> ForkHost | None:
        return self.host if isinstance(self.host, ForkHost) else None

    def _may_tell(self, g: _GroupSync, device: DeviceId, seq: int) -> bool:
        """May the peer be sent our entry of ``device``'s feed at ``seq`` (in a conflict or in
        evidence): it is served, and a former member only within the causal past of its exit."""
        return self._serves(g) and (g.limit is None or seq <= g.limit.get(device, 0))

    def _share_forks(self, g: _GroupSync, *, also: DeviceId | None = None) -> None:
        """Send the evidence of every fork the peer is not known to hold (and of ``also``'s
        feed in any case), with the certificates it needs to check it."""
        host = self._fork_host()
        if host is None:
            return
        fresh = [
            (device, seq, first, second)
            for device, seq, first, second in host.fork_evidence(g.group)
            if (seq < g.forks_shared.get(device, seq + 1) or device == also)
            and self._may_tell(g, device, seq)
        ]
        if not fresh:
            return
        self._send_certificates(g)
        for device, seq, first, second in fresh:
            g.forks_shared[device] = seq
            self._send(ForkEvidenceMessage(group=g.group, first=first, second=second))

    def _check_heads(self, g: _GroupSync, heads: tuple[FrontierHead, ...]) -> None:
        """Compare the peer's frontier with what we hold: a different head at a position we
        hold is a fork (we send ours from there back); an older one, from a peer that serves
        us, is a stale view (counted)."""
        host = self._fork_host()
        if host is None:
            return
        ours = self.host.frontier(g.group)
        check = compare_heads(
            heads,
            ours,
            host.forks(g.group),
            lambda d, seq: next(iter(host.entry_wires(g.group, d, seq, 1)), None),
        )
        if g.peer_serves and check.stale:
            self.stats.stale.update(check.stale)
        for device, seq in check.conflicts:
            if self._send_conflict(g, device, seq):  # ours from there on will not chain
                g.peer_known[device] = max(ours[device][0], g.peer_known.get(device, 0))

    def _send_conflict(self, g: _GroupSync, device: DeviceId, seq: int) -> bool:
        host = self._fork_host()
        if host is None or not self._may_tell(g, device, seq):
            return False
        run = host.entry_wires(g.group, device, seq, self.options.limits.max_conflict_entries)
        if run:
            self._send(Conflict(group=g.group, entries=tuple(run)))
            g.conflicts_out += g.peer_serves  # a peer that serves us answers it
        return bool(run)

    # ------------------------------------------------------------------ helpers

    def _go_live(self, g: _GroupSync) -> None:
        g.phase = GroupPhase.LIVE
        g.serving = self._serves(g)
        if g.serving:  # anything appended since the digest
            g.certs_due = True
            self._dirty[g.group] = None
            self._pump()

    def _reconsider_serving(self, g: _GroupSync) -> None:
        """Entries from the peer may have shown it is a member after all (an add we lacked)."""
        if g.knows_peer and self._serves(g):
            g.serving = g.certs_due = True
            self._dirty[g.group] = None
            self._pump()

    def _serves(self, g: _GroupSync) -> bool:
        """May the peer be sent entries of ``g``: a member's device in our view, or a former
        one, up to the operation that put it out (so it learns it is out, and nothing more)."""
        if self.host.may_serve(g.group, self.peer_device):
            g.limit = None
            return True
        exit_limit = getattr(self.host, "exit_limit", None)
        limit = None if exit_limit is None else exit_limit(g.group, self.peer_device)
        g.limit = None if limit is None else {d: seq for d, (seq, _) in limit.items()}
        g.limit_heads = {} if limit is None else dict(limit)
        return g.limit is not None

    def _capped(self, g: _GroupSync) -> dict[DeviceId, int]:
        """What to ask the host for: the peer's frontier, with every feed it may not be
        served further marked as held in full."""
        if g.limit is None:
            return g.peer_known
        beyond = 2**62
        return {
            d: seq if seq < g.limit.get(d, 0) else beyond
            for d, seq in {**{d: 0 for d in g.limit}, **g.peer_known}.items()
        } | {d: beyond for d in self.host.frontier(g.group) if d not in g.limit}

    def _within(self, g: _GroupSync, wire: bytes) -> bool:
        if g.limit is None:
            return True
        device, seq = _position(wire)
        return seq <= g.limit.get(DeviceId(device), 0)

    def _send_done(self, g: _GroupSync) -> None:
        g.done_sent = True
        self._send(Done(group=g.group))
        if g.peer_done:
            g.phase = GroupPhase.LIVE

    def _take_key_answer(self, group: GroupId) -> _GroupSync:
        g = self._groups[group]
        if not g.awaiting_keys:
            raise RemoteProtocolError("a key answer nobody asked for")
        g.awaiting_keys -= 1
        return g

    def _maybe_request_keys(self, g: _GroupSync) -> None:
        if g.key_rounds >= self.options.max_key_rounds:
            return
        wanted = [s for s in self.host.missing_keys(g.group) if s not in g.requested]
        wanted = wanted[: self.options.limits.max_wanted_keys]
        if wanted:
            g.requested.update(wanted)
            g.key_rounds += 1
            g.awaiting_keys += 1
            self._send(KeyRequest(group=g.group, wanted=tuple(wanted)))

    # ------------------------------------------------------------------ sending entries

    def _pump(self) -> None:
        """Send batches for every group with something to push, while credit lasts."""
        for group in list(self._dirty):
            if not self._push(self._groups[group]):
                return

    def _push(self, g: _GroupSync) -> bool:
        """Push ``g`` until it has nothing left (True) or credit runs out (False)."""
        if not g.knows_peer or not self._serves(g):
            g.serving = False
            return self._exhausted(g)
        while True:
            batches, budget = self._credit
            if batches < 1:
                return False
            items = self._take(g, min(self.options.batch_bytes, budget))
            if items is None:
                return False
            if not items:
                return self._exhausted(g)
            if g.certs_due:  # just before entries, so none are sent when nothing is due
                g.certs_due = False
                self._send_certificates(g)
            size = batch_size(items)
            self._credit = (batches - 1, budget - size)
            self.stats.entries_sent += len(items)
            self.stats.bytes_sent += size
            self._send(Entries(group=g.group, items=tuple(items)))

    def _exhausted(self, g: _GroupSync) -> bool:
        self._dirty.pop(g.group, None)
        if g.phase is GroupPhase.SYNCING and not g.done_sent:
            self._send_done(g)
        return True

    def _send_certificates(self, g: _GroupSync) -> None:
        fresh = [c for c in self.host.certificates(g.group) if c not in g.certs_sent]
        if g.limit is not None:
            allowed = set(g.limit)
            fresh = [c for c in fresh if DeviceCertificate.from_bytes(c).device in allowed]
        step = self.options.limits.max_certificates
        for start in range(0, len(fresh), step):
            self._send(Certificates(group=g.group, certificates=tuple(fresh[start : start + step])))
        g.certs_sent.update(fresh)

    def _take(self, g: _GroupSync, budget: int) -> list[Item] | None:
        """The next batch within ``budget`` bytes: [] when nothing is left, None when the
        first item does not fit the credit left."""
        if g.newest_budget > 0 and g.limit is None:
            batch = self._take_newest(g, budget)
            if batch is None or batch:
                return batch
            g.newest_budget = 0
        return self._take_in_order(g, budget)

    def _take_newest(self, g: _GroupSync, budget: int) -> list[Item] | None:
        want = min(self.options.batch_entries, g.newest_budget)
        found = self.host.entries_after(
            g.group, g.peer_known, newest_first=True, limit=want + len(g.sent_ahead)
        )
        batch: list[Item] = []
        for wire, body in found:
            key = _position(wire)
            if key in g.sent_ahead:
                continue
            if len(batch) == want or batch_size([*batch, (wire, body)]) > budget:
                break
            batch.append((wire, body))
            g.sent_ahead.add(key)
        if found and not batch and any(_position(w) not in g.sent_ahead for w, _ in found):
            return None
        g.newest_budget -= len(batch)
        return batch

    def _take_in_order(self, g: _GroupSync, budget: int) -> list[Item] | None:
        batch: list[Item] = []
        size = 0
        while len(batch) < self.options.batch_entries:
            want = self.options.batch_entries - len(batch) + len(g.sent_ahead)
            found = self.host.entries_after(
                g.group, self._capped(g), newest_first=False, limit=want
            )
            for wire, body in found:
                if not self._within(g, wire):
                    continue  # past the peer's exit: never sent
                device, seq = _position(wire)
                if seq <= g.peer_known.get(DeviceId(device), 0):
                    raise LocalProtocolError("the host returned an entry the peer holds")
                if (device, seq) in g.sent_ahead:  # sent newest-first already: skip over it
                    g.sent_ahead.discard((device, seq))
                    g.peer_known[DeviceId(device)] = seq
                    continue
                item_size = len(wire) + (0 if body is None else len(body))
                if len(batch) == self.options.batch_entries or size + item_size > budget:
                    return batch or None
                batch.append((wire, body))
                size += item_size
                g.peer_known[DeviceId(device)] = seq
            if len(found) < want:
                return batch  # the host had no more
        return batch


def _position(wire: bytes) -> tuple[bytes, int]:
    """(device, seq) of an entry's wire bytes (which came from our own store)."""
    return feed_position(wire[:-SIGNATURE_SIZE])


def _note_held(known: dict[DeviceId, int], wire: bytes) -> None:
    """The peer sent this entry, so it holds its feed up to it (feeds it serves are contiguous)."""
    try:
        device, seq = feed_position(wire[:-SIGNATURE_SIZE])
    except MicrosyncError:
        return  # the host rejects it; nothing learnt
    if seq > known.get(device, 0):
        known[device] = seq


_Handler = Callable[[SyncSession, Any], None]
_G = GroupPhase
_S = SessionState

TRANSITIONS: Final[dict[tuple[SessionState | GroupPhase, MsgType], _Handler]] = {
    # session level: keyed by the session state
    (_S.AWAIT_HELLO, MsgType.HELLO): SyncSession._on_hello,
    (_S.AWAIT_HELLO, MsgType.PING): SyncSession._on_ping,
    (_S.AWAIT_HELLO, MsgType.BYE): SyncSession._on_bye,
    (_S.AWAIT_HELLO, MsgType.ERROR): SyncSession._on_error,
    (_S.AWAIT_MATCH, MsgType.MATCH): SyncSession._on_match,
    (_S.AWAIT_MATCH, MsgType.PING): SyncSession._on_ping,
    (_S.AWAIT_MATCH, MsgType.BYE): SyncSession._on_bye,
    (_S.AWAIT_MATCH, MsgType.ERROR): SyncSession._on_error,
    (_S.OPEN, MsgType.CREDIT): SyncSession._on_credit,
    (_S.OPEN, MsgType.PING): SyncSession._on_ping,
    (_S.OPEN, MsgType.BYE): SyncSession._on_bye,
    (_S.OPEN, MsgType.ERROR): SyncSession._on_error,
    # group level: keyed by the phase of the group the message names
    (_G.AWAIT_DIGEST, MsgType.DIGEST): SyncSession._on_digest,
    (_G.AWAIT_FRONTIER, MsgType.FRONTIER): SyncSession._on_frontier,
    (_G.AWAIT_FRONTIER, MsgType.CERTIFICATES): SyncSession._on_certificates,
    (_G.SYNCING, MsgType.CERTIFICATES): SyncSession._on_certificates,
    (_G.SYNCING, MsgType.ENTRIES): SyncSession._on_entries,
    (_G.SYNCING, MsgType.DONE): SyncSession._on_done,
    (_G.SYNCING, MsgType.KEY_REQUEST): SyncSession._on_key_request,
    (_G.SYNCING, MsgType.KEY_RESPONSE): SyncSession._on_key_response,
    (_G.SYNCING, MsgType.KEY_REFUSED): SyncSession._on_key_refused,
    (_G.LIVE, MsgType.CERTIFICATES): SyncSession._on_certificates,
    (_G.LIVE, MsgType.ENTRIES): SyncSession._on_entries,
    (_G.LIVE, MsgType.KEY_REQUEST): SyncSession._on_key_request,
    (_G.LIVE, MsgType.KEY_RESPONSE): SyncSession._on_key_response,
    (_G.LIVE, MsgType.KEY_REFUSED): SyncSession._on_key_refused,
    **{(phase, MsgType.EPHEMERAL): SyncSession._on_ephemeral for phase in GroupPhase},
    # forks: evidence may precede the frontier; a conflict answers one
    (_G.AWAIT_FRONTIER, MsgType.FORK_EVIDENCE): SyncSession._on_fork_evidence,
    (_G.SYNCING, MsgType.FORK_EVIDENCE): SyncSession._on_fork_evidence,
    (_G.LIVE, MsgType.FORK_EVIDENCE): SyncSession._on_fork_evidence,
    (_G.SYNCING, MsgType.CONFLICT): SyncSession._on_conflict,
    (_G.LIVE, MsgType.CONFLICT): SyncSession._on_conflict,
    # vault chunks: in every phase of a matched group, beside entry sync (never blocking it)
    **{(phase, MsgType.CHUNK_REQUEST): SyncSession._on_chunk_request for phase in GroupPhase},
    **{(phase, MsgType.CHUNK_DATA): SyncSession._on_chunk_data for phase in GroupPhase},
    **{(phase, MsgType.CHUNK_MISSING): SyncSession._on_chunk_missing for phase in GroupPhase},
}
"""Every legal (state, message type) -> handler. Group messages are looked up by the phase of
the group they name (an unmatched group is an error before this table); all else by the session
state. A pair not listed is a :class:`RemoteProtocolError`: the session closes with an error."""
