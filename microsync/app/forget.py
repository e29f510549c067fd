"""Forgetting kept locations (``ForgetOp``): the rule the timeline applies. Sans-IO.

A person's ``ForgetOp(up_to)`` raises their *horizon* (``Timeline.forgotten``, the largest
``up_to`` of theirs applied); every kept location of theirs signed at or before it is purged,
wherever and whenever it arrives: those applied already when the forget is applied, and any
that arrives after it (``Timeline._location`` checks the horizon). The shown location falls
back to their newest one after the horizon, if any. Only the author's own are touched, so the
order of delivery does not matter: the horizon is a max, and what is purged is a function of
it (tests/test_app_location_laws.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microsync.app.ops import ForgetOp, LocationOp
from microsync.feed.entry import EntryId
from microsync.identity import PersonId

if TYPE_CHECKING:
    from microsync.app.timeline import AppEntry, Timeline

__all__ = ["forget", "kept_locations"]


def kept_locations(timeline: Timeline, person: PersonId) -> list[AppEntry]:
    """``person``'s kept locations not forgotten, oldest first."""
    horizon = timeline.forgotten.get(person, -1)
    found = [
        e
        for e in timeline.applied.values()
        if e.person == person and isinstance(e.op, LocationOp) and e.hlc > horizon
    ]
    return sorted(found, key=lambda e: (e.hlc, e.id))


def forget(timeline: Timeline, entry: AppEntry, op: ForgetOp) -> tuple[EntryId, ...]:
    """Apply ``entry``'s ``op``: raise its author's horizon; the entries to purge."""
    person = entry.person
    before = kept_locations(timeline, person)
    horizon = max(timeline.forgotten.get(person, -1), op.up_to)
    timeline.forgotten[person] = horizon
    kept = [e for e in before if e.hlc > horizon]
    latest = max(kept, key=lambda e: (e.hlc, e.id), default=None)
    if latest is None:
        timeline.locations.pop(person, None)
    else:
        timeline.locations[person] = latest
    return tuple(e.id for e in before if e.hlc <= horizon)
