"""The stretches of each device's feed that count (``GroupState.windows``): opened by an
admission at the position it names, closed by a cut-off. Pure helpers of
:mod:`microsync.group.rules`."""

from __future__ import annotations

from collections.abc import Mapping

from microsync.group.state import GroupState, OpRecord
from microsync.identity import DeviceId

__all__ = ["close_window", "open_window", "open_windows", "starts"]


def open_window(state: GroupState, device: DeviceId, start: int) -> None:
    windows = state.windows.get(device, ())
    if windows and windows[-1][1] is None:
        return  # already counting (racing adds of one device)
    state.windows[device] = (*windows, (start, None))


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
    """Stop counting ``device`` after ``end`` (``None``: after nothing new). A second exit
    (two admins removing one person at once) can only move the line earlier."""
    windows = state.windows.get(device, ())
    if not windows:
        return
    start, current = windows[-1]
    end = start if end is None else max(start, end)
    if current is not None:
        end = min(current, end)
    state.windows[device] = (*windows[:-1], (start, end))
