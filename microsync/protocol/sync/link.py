"""What every machine of one sync session shares (:class:`Link`): the host and the peer, the
options and counters, the outbox, and the flow credit both ways."""

from __future__ import annotations

from dataclasses import dataclass, field

from microsync.feed.entry import GroupId
from microsync.identity import DeviceId
from microsync.protocol.messages import Message
from microsync.protocol.sync.credit import Allowance, Window
from microsync.protocol.sync.options import SessionStats, SyncOptions
from microsync.protocol.sync.ports import PeerReceiver, SyncHost

__all__ = ["Link"]


@dataclass(slots=True, eq=False, repr=False)  # the outbox may hold key responses
class Link:
    """The session's shared state. Machines queue messages with :meth:`send`; the session
    encodes and returns them. Handlers do not push entries or ask for keys themselves: they
    mark the group (:meth:`push_soon`, :meth:`keys_soon`), and the session does both, in that
    order, once the message's phase change is made."""

    host: SyncHost
    peer: DeviceId
    options: SyncOptions
    window: Window  # what the peer may still send us
    stats: SessionStats = field(default_factory=SessionStats)
    credit: Allowance = field(default_factory=Allowance)  # what we may still send the peer
    now: int = 0  # when the record being handled arrived (ms)
    out: list[Message] = field(default_factory=list)
    dirty: dict[GroupId, None] = field(default_factory=dict)  # groups to push, in order
    pump_due: bool = False
    keys_due: dict[GroupId, None] = field(default_factory=dict)
    # the host as a PeerReceiver, asked once (an isinstance of a runtime-checkable protocol
    # costs about 10 µs: once per session, not once per batch received)
    receiver: PeerReceiver | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.receiver = self.host if isinstance(self.host, PeerReceiver) else None

    def send(self, message: Message) -> None:
        self.out.append(message)

    def push_soon(self, group: GroupId) -> None:
        """``group`` may have entries for the peer: push them once the message is handled."""
        self.dirty[group] = None
        self.pump_due = True

    def keys_soon(self, group: GroupId) -> None:
        """Ask for the keys of ``group`` the host misses once the message is handled."""
        self.keys_due[group] = None
