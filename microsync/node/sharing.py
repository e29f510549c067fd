"""Sharing a location, with the whole group or with some members only, and withdrawing it:
what :meth:`Group.share_location <microsync.node.group.Group.share_location>` and
:meth:`Group.stop_sharing_location` do. The board and the envelopes are
:mod:`microsync.app.presence` and :mod:`microsync.app.location`; this module chooses which
to send, sends them, and writes the kept entry.

Switching from the whole group to some members withdraws the group-wide location first (a
group-wide stop: to a member outside the subset that is the same as never sharing); a viewer
dropped from one share to the next gets a stop of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from microsync.app.ephemeral import MAX_LABEL, coarsen
from microsync.app.events import Location
from microsync.app.forget import kept_locations
from microsync.app.ops import ForgetOp, LocationOp, Precision
from microsync.app.presence import PRESENCE_TTL
from microsync.app.viewers import is_envelope
from microsync.app.views import when
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.node.group import Group

__all__ = [
    "Viewers",
    "delete_location_history",
    "location_history",
    "may_pass",
    "receive",
    "set_presence_sharing",
    "share_location",
    "stop_sharing_location",
]

Viewers = Mapping[bytes, Precision | str] | Iterable[bytes]
"""Who sees a location: people with a precision each, or people (at the share's precision)."""


def _viewers(with_: Viewers, precision: str) -> dict[PersonId, Precision]:
    if isinstance(with_, Mapping):
        pairs = [(PersonId(bytes(p)), Precision(str(v))) for p, v in with_.items()]
    else:
        pairs = [(PersonId(bytes(p)), Precision(precision)) for p in with_]
    return dict(pairs)


def _check_label(label: str | None) -> None:
    if label is not None and not (isinstance(label, str) and 0 < len(label.encode()) <= MAX_LABEL):
        raise ValueError(f"a place label is 1 to {MAX_LABEL} bytes of text")


async def share_location(
    group: Group,
    lat: float,
    lon: float,
    precision: str,
    *,
    with_: Viewers | None,
    label: str | None,
    ttl: float,
    keep_history: bool,
) -> Location:
    """Share with the whole group (``with_`` is ``None``) or with ``with_`` only; returns what
    the best-placed viewer sees."""
    _check_label(label)
    presence, now = group._presence, group._now()
    if with_ is None:
        announcement, kept = presence.location_announcement(lat, lon, precision, ttl, now, label)
        group._after_announce(presence.announce(announcement, now))
        if keep_history:
            await group._write(kept)
        found = presence.locations(group._now()).get(group._person())
        assert found is not None
        return found
    if keep_history:
        raise ValueError("a location shared with some members only is not kept in history")
    viewers = _viewers(with_, precision)
    if not viewers:
        raise ValueError("share with at least one member (or stop sharing)")
    if presence.shares_with_group(now):
        group._after_announce(presence.announce(presence.stop_announcement(now), now))
    lifetime = presence.lifetime(ttl, now)
    for sealed in presence.viewers.share(lat, lon, viewers, label, lifetime, now):
        group._after_announce(sealed)
    finest = min(viewers.values(), key=lambda p: list(Precision).index(p))
    micro_lat, micro_lon = coarsen(lat, lon, str(finest))
    return _own(group, micro_lat, micro_lon, finest, when(lifetime[0]), label, now)


def _own(
    group: Group,
    micro_lat: int,
    micro_lon: int,
    precision: Precision,
    at: datetime,
    label: str | None,
    now: int,
) -> Location:
    person = group._person()
    return Location(
        person_id=person,
        name=group._person_name(person) or group.device.name,
        lat=micro_lat / 1_000_000,
        lon=micro_lon / 1_000_000,
        precision=precision,
        at=at,
        age=max(0.0, (now - round(at.timestamp() * 1000)) / 1000),
        label=label,
    )


async def stop_sharing_location(group: Group) -> None:
    """Withdraw this person's location from the whole group (only if it sees one: a member
    who was never shown one is sent nothing) and from every viewer."""
    presence, now = group._presence, group._now()
    if presence.shares_with_group(now):
        group._after_announce(presence.announce(presence.stop_announcement(now), now))
    issued = presence.lifetime(1.0, group._now())[0]
    for sealed in presence.viewers.stop(now, issued):
        group._after_announce(sealed)


def may_pass(group: Group, sealed: bytes, peer: DeviceId) -> bool:
    """A group announcement may go to any member; a per-viewer envelope only to its recipient
    and to devices of its sharer's or its recipient's person."""
    return not is_envelope(sealed) or group._presence.viewers.route(sealed, peer)


def set_presence_sharing(group: Group, on: bool) -> None:
    """Opt in or out. Opting out while shown online tells the group "offline" at once; opting
    in on a started device that is not quiet announces "online" at once (the heartbeat renews
    it)."""
    presence, now = group._presence, group._now()
    sealed = presence.set_sharing(on, now)
    device = group.device
    if on and device._net is not None and not device._network.quiet and group.is_member():
        sealed = presence.announce(presence.presence_announcement("online", PRESENCE_TTL, now), now)
    if sealed is not None:
        group._after_announce(sealed)


def receive(group: Group, data: bytes) -> bool:
    """Take an announcement or envelope a peer passed on (``Group.receive_announcement``)."""
    events = group._presence.receive(data, group._now(), listening=bool(group._listeners))
    if events is None:
        return False
    group._deliver(events)
    return True


def location_history(group: Group) -> list[Location]:
    """This person's locations kept in the group's feed (``keep_history=True``), oldest
    first, those forgotten left out."""
    timeline = group._timeline()
    person = group._person()
    out = []
    for entry in kept_locations(timeline, person):
        op = entry.op
        assert isinstance(op, LocationOp)
        at = timeline.shown_at(entry)
        out.append(_own(group, op.lat, op.lon, op.precision, when(at), op.label, group._now()))
    return out


async def delete_location_history(group: Group) -> int:
    """Forget every kept location of this person known here, on every device: one entry in
    the feed that each device applies by purging them from its disk (and any that reaches it
    later). Returns how many were known here."""
    timeline = group._timeline()
    kept = kept_locations(timeline, group._person())
    if kept:
        await group._write(ForgetOp(up_to=max(e.hlc for e in kept)))
    return len(kept)
