"""The stretches of each device's feed that count (``GroupState.windows``): opened by an
admission at the position it names, closed by a cut-off. Pure helpers of
:mod:`microsync.group.rules`."""

from __future__ import annotations

from collections.abc import Mapping

from microsync.group.state import GroupState, OpRecord, Window
from microsync.identity import DeviceId

__all__ = [
    "Stretches",
    "close_stretch",
    "close_window",
    "open_stretch",
    "open_window",
    "open_windows",
    "starts",
]


Stretches = dict[DeviceId, tuple[Window, ...]]
"""Per device, the stretches of its feed something holds for (``GroupState.windows``: it
counts; ``GroupState.admin_windows``: it moderates, :mod:`microsync.group.moderators`)."""


def open_stretch(table: Stretches, device: DeviceId, start: int) -> None:
    """``device`` holds after ``start`` from now on (already open: kept, as racing adds of
    one device are)."""
    stretches = table.get(device, ())
    if not (stretches and stretches[-1][1] is None):
        table[device] = (*stretches, (start, None))


def close_stretch(table: Stretches, device: DeviceId, end: int | None) -> None:
    """``device`` stops holding after ``end`` (``None``: after nothing new); a second close
    (two admins removing one person at once) can only move the line earlier."""
    stretches = table.get(device, ())
    if not stretches:
        return
    start, current = stretches[-1]
    line = start if end is None else max(start, end)
    if current is not None:
        line = min(current, line)
    table[device] = (*stretches[:-1], (start, line))


def open_window(state: GroupState, device: DeviceId, start: int) -> None:
    open_stretch(state.windows, device, start)


def starts(rec: OpRecord, admitted: Mapping[DeviceId, object]) -> list[tuple[DeviceId, int]]:
    """Where each of ``rec``'s granted devices that ``admitted`` holds starts (its position)."""
    positions = dict(rec.op.positions)
    return [(g.device, positions.get(g.device, 0)) for g in rec.grants if g.device in admitted]


def open_windows(state: GroupState, rec: OpRecord, admitted: Mapping[DeviceId, object]) -> None:
    positions = dict(rec.op.positions)
    for g in rec.grants:
        if g.device in admitted:
            open_window(state, g.device, positions.get(g.device, 0))


def close_window(state: GroupState, device: DeviceId, end: int | None) -> None:
    """Stop counting ``device`` after ``end`` (:func:`close_stretch`)."""
    close_stretch(state.windows, device, end)
