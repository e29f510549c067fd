"""What one side streams to the peer in one group: its view of what the peer holds
(:class:`PeerView`) and the choice of the next batch within the credit left (:func:`take`).

Invariants: a batch never holds an entry the peer is known to hold, nor one past a former
member's exit limit; in seq order every prefix of what is sent is chain-contiguous per feed;
newest-first sends at most ``newest_budget`` entries ahead, each once (``sent_ahead``), and the
in-order pass skips them later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from microsync.errors import LocalProtocolError, MicrosyncError
from microsync.feed.entry import EntryId, GroupId, Header, feed_position
from microsync.group.ops import MEMBERSHIP_TYPE
from microsync.identity import DeviceCertificate, DeviceId
from microsync.protocol.messages import SIGNATURE_SIZE, Certificates, Item, batch_size
from microsync.protocol.sync.link import Link

__all__ = [
    "PeerView",
    "needs_certificates",
    "note_held",
    "position",
    "send_certificates",
    "take",
]

_BEYOND = 2**62  # a seq past any feed: "held in full"


@dataclass(slots=True, eq=False)
class PeerView:
    """What this side knows the peer holds of ``group`` and how far it may serve it."""

    group: GroupId
    known: dict[DeviceId, int] = field(default_factory=dict)  # the peer holds 1..seq
    knows: bool = False  # ``known`` came from the peer (its frontier or equal digests)
    sent_ahead: set[tuple[bytes, int]] = field(default_factory=set)  # newest-first, beyond
    newest_budget: int = 0
    certs_due: bool = False
    certs_sent: set[bytes] = field(default_factory=set)
    # a local update: certificates are due only if a batch could need new ones (see
    # :func:`needs_certificates`); ``fed`` holds the feeds of every batch sent so far
    certs_check: bool = False
    fed: set[bytes] = field(default_factory=set)
    drained: bool = False  # the last batch took all the host had: no need to ask again
    # for a former member: how far each feed may be served (the causal past of its exit)
    limit: dict[DeviceId, int] | None = None
    limit_heads: dict[DeviceId, tuple[int, EntryId]] = field(default_factory=dict)

    def capped(self, ours: Mapping[DeviceId, tuple[int, EntryId]]) -> dict[DeviceId, int]:
        """What to ask the host for: the peer's frontier, with every feed it may not be
        served further marked as held in full (``ours``: the host's frontier)."""
        if self.limit is None:
            return self.known
        limit = self.limit
        return {
            d: seq if seq < limit.get(d, 0) else _BEYOND
            for d, seq in {**{d: 0 for d in limit}, **self.known}.items()
        } | {d: _BEYOND for d in ours if d not in limit}

    def within(self, wire: bytes) -> bool:
        """May the peer be sent this entry (a former member: only up to its exit)?"""
        if self.limit is None:
            return True
        device, seq = position(wire)
        return seq <= self.limit.get(DeviceId(device), 0)


def position(wire: bytes) -> tuple[bytes, int]:
    """(device, seq) of an entry's wire bytes (which came from our own store)."""
    return feed_position(wire[:-SIGNATURE_SIZE])


def note_held(known: dict[DeviceId, int], wire: bytes) -> None:
    """The peer sent this entry, so it holds its feed up to it (feeds it serves are contiguous)."""
    try:
        device, seq = feed_position(wire[:-SIGNATURE_SIZE])
    except MicrosyncError:
        return  # the host rejects it; nothing learnt
    if seq > known.get(device, 0):
        known[device] = seq


def send_certificates(link: Link, view: PeerView) -> None:
    """The certificates of ``view.group`` the peer was not sent yet (a former member: only
    of the feeds it may be served)."""
    fresh = [c for c in link.host.certificates(view.group) if c not in view.certs_sent]
    if view.limit is not None:
        allowed = set(view.limit)
        fresh = [c for c in fresh if DeviceCertificate.from_bytes(c).device in allowed]
    step = link.options.limits.max_certificates
    for start in range(0, len(fresh), step):
        chunk = tuple(fresh[start : start + step])
        link.send(Certificates(group=view.group, certificates=chunk))
    view.certs_sent.update(fresh)


def needs_certificates(view: PeerView, items: Sequence[Item]) -> bool:
    """After a local update: could ``items`` need certificates the peer was not sent? Only if
    one is of a feed no earlier batch held (its author's certificate may be new) or is a
    membership operation (it may admit devices). Anything else changes no certificate the
    peer needs, so a live post does not re-read and re-offer every certificate of the group."""
    for wire, _ in items:
        device, _seq = position(wire)
        if device not in view.fed:
            return True
        header = wire[:-SIGNATURE_SIZE]
        try:
            kind = Header.from_bytes(header).type
        except MicrosyncError:
            return True
        if kind == MEMBERSHIP_TYPE:
            return True
    return False


def take(link: Link, view: PeerView, budget: int) -> list[Item] | None:
    """The next batch within ``budget`` bytes: [] when nothing is left, None when the first
    item does not fit the credit left. Sets ``view.drained`` when the batch holds everything
    the host had left to send (the next call would return [])."""
    view.drained = False
    if view.newest_budget > 0 and view.limit is None:
        batch = _take_newest(link, view, budget)
        if batch is None or batch:
            return batch
        view.newest_budget = 0
    return _take_in_order(link, view, budget)


def _take_newest(link: Link, view: PeerView, budget: int) -> list[Item] | None:
    want = min(link.options.batch_entries, view.newest_budget)
    found = link.host.entries_after(
        view.group, view.known, newest_first=True, limit=want + len(view.sent_ahead)
    )
    batch: list[Item] = []
    for wire, body in found:
        key = position(wire)
        if key in view.sent_ahead:
            continue
        if len(batch) == want or batch_size([*batch, (wire, body)]) > budget:
            break
        batch.append((wire, body))
        view.sent_ahead.add(key)
    if found and not batch and any(position(w) not in view.sent_ahead for w, _ in found):
        return None
    view.newest_budget -= len(batch)
    return batch


def _take_in_order(link: Link, view: PeerView, budget: int) -> list[Item] | None:
    most = link.options.batch_entries
    batch: list[Item] = []
    size = 0
    while len(batch) < most:
        want = most - len(batch) + len(view.sent_ahead)
        capped = view.known if view.limit is None else view.capped(link.host.frontier(view.group))
        found = link.host.entries_after(view.group, capped, newest_first=False, limit=want)
        for wire, body in found:
            if not view.within(wire):
                continue  # past the peer's exit: never sent
            device, seq = position(wire)
            if seq <= view.known.get(DeviceId(device), 0):
                raise LocalProtocolError("the host returned an entry the peer holds")
            if (device, seq) in view.sent_ahead:  # sent newest-first already: skip over it
                view.sent_ahead.discard((device, seq))
                view.known[DeviceId(device)] = seq
                continue
            item_size = len(wire) + (0 if body is None else len(body))
            if len(batch) == most or size + item_size > budget:
                return batch or None
            batch.append((wire, body))
            size += item_size
            view.known[DeviceId(device)] = seq
        if len(found) < want:
            view.drained = True  # the host had no more
            return batch
    return batch
