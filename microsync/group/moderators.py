"""Admin stretches: which entries of each device's feed were written while its person was an
admin. Pure functions on :class:`~microsync.group.state.GroupState`, called by the rules' fold.

Moderation (an admin deleting someone else's post or blob, hiding a removed member's posts)
is checked against these stretches at the moderating entry's own place in its feed, by the
same lines membership operations draw: the founder's device is an admin from its first entry;
an add as admin, a promotion, or a new device of an admin opens a stretch after the position
the operation names; a demotion, a removal, a leave or a revocation closes it at the position
it names. The stretches are a function of the set of membership operations (they are folded
in the resolver's order), so every replica decides a moderation alike once it holds the same
operations (``docs/app.md``, "Moderation").
"""

from __future__ import annotations

from collections.abc import Iterable

from microsync.group.state import GroupState
from microsync.group.windows import close_stretch, open_stretch
from microsync.identity import DeviceId

__all__ = ["close_admin", "open_admin"]


def open_admin(state: GroupState, devices: Iterable[tuple[DeviceId, int]]) -> None:
    """Each ``(device, start)`` moderates after ``start`` from now on (already open: kept)."""
    for device, start in devices:
        open_stretch(state.admin_windows, device, start)


def close_admin(state: GroupState, devices: Iterable[tuple[DeviceId, int | None]]) -> None:
    """Each ``(device, end)`` stops moderating after ``end`` (``None``: after nothing new); a
    second close can only move the line earlier."""
    for device, end in devices:
        close_stretch(state.admin_windows, device, end)
