"""Command-line commands about a group's people: remove, leave, promote, demote, and sharing
a location (``location set/show/stop``); how the command line names a member."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from microsync.cli.control import open_device, open_group
from microsync.errors import MicrosyncError

if TYPE_CHECKING:  # the device stack (and rich) load only when a command runs
    from rich.console import Console

    from microsync.node import Group, Member

__all__ = [
    "PRECISION_FLAGS",
    "add_parsers",
    "cmd_demote",
    "cmd_leave",
    "cmd_location_set",
    "cmd_location_show",
    "cmd_location_stop",
    "cmd_promote",
    "cmd_remove",
    "find_member",
    "member_id",
    "size_line",
]

PRECISION_FLAGS = ("exact", "street", "city", "region")


def size_line(group: Group) -> str:
    """``3 members`` or, in a group with a cap, ``3 members (cap 12)`` / ``(cap 3, full)``."""
    count = len(group.members())
    size = f"{count} member" if count == 1 else f"{count} members"
    cap = group.max_members
    if cap is None:
        return size
    return f"{size} (cap {cap}, full)" if count >= cap else f"{size} (cap {cap})"


def member_id(person_id: bytes) -> str:
    """The one id form the command line shows for a person and accepts back (with any
    unique prefix of it, or the full hex of ``--json``): 16 hex digits of the person id."""
    return bytes(person_id).hex()[:16]


def find_member(group: Group, text: str) -> Member:
    """The member whose name (any case) is ``text``, or whose id starts with it; one clear
    line naming the candidates otherwise."""
    members = group.members()
    wanted = text.strip().lower()
    found = [m for m in members if m.name.lower() == wanted]
    if not found and len(wanted) >= 4:
        found = [m for m in members if m.person_id.hex().startswith(wanted)]
    if len(found) == 1:
        return found[0]
    shown = found or members
    listed = ", ".join(f"{m.name} ({member_id(m.person_id)})" for m in shown)
    problem = "matches several members" if found else f"matches no member of {group.name}"
    raise MicrosyncError(f"{text!r} {problem}: {listed} (use the id `members` shows)")


async def cmd_remove(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        member = find_member(group, args.member)
        await group.remove(member.person_id, force=args.force)
        out.print(f"Removed {member.name} from {group.name}; new key epoch {group.epoch}")
    return 0


async def cmd_leave(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        await group.leave(force=args.force)
        out.print(f"You left {group.name}; its members start a new key epoch without you.")
    return 0


async def cmd_promote(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        member = find_member(group, args.member)
        await group.promote(member.person_id)
        out.print(f"{member.name} is now an admin of {group.name}")
    return 0


async def cmd_demote(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        member = find_member(group, args.member)
        await group.demote(member.person_id, force=args.force)
        out.print(f"{member.name} is now a plain member of {group.name}")
    return 0


async def cmd_location_set(args: argparse.Namespace, out: Console) -> int:
    precision = next((p for p in PRECISION_FLAGS if getattr(args, p)), "city")
    async with open_group(args) as group:
        shared = await group.share_location(args.lat, args.lon, precision=precision, ttl=args.ttl)
        out.print(
            f"Sharing {shared.lat:.6g}, {shared.lon:.6g} ({precision}) with {group.name} "
            f"for {args.ttl / 3600:.3g} h; the exact position never leaves this device."
        )
    return 0


async def cmd_location_show(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        found = group.locations()
        if not found:
            out.print("Nobody is sharing a location.")
        for where in found.values():
            out.print(
                f"{where.name}: {where.lat:.6g}, {where.lon:.6g} ({where.precision}), "
                f"{_age(where.age)} ago"
            )
    return 0


async def cmd_location_stop(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        from microsync.cli.social import find_group

        group = find_group(device, args.group)
        if device.person_id not in group.locations():
            raise MicrosyncError(f"you are not sharing a location with {group.name}")
        await group.stop_sharing_location()
        out.print(f"Stopped sharing your location with {group.name}.")
    return 0


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's commands on the top-level parser."""
    force = (
        "even if it leaves the group with no admin: nobody could ever invite, remove or "
        "promote again"
    )
    member = "name, or the id `members` shows (a prefix will do)"
    remove = sub.add_parser("remove", help="remove a member (admins); rotates the keys")
    remove.add_argument("member", help=member)
    remove.add_argument("--group", help="group name or id prefix")
    remove.add_argument("--force", action="store_true", help=force)
    leave = sub.add_parser("leave", help="leave a group; its members rotate the keys")
    leave.add_argument("--group", help="group name or id prefix")
    leave.add_argument("--force", action="store_true", help=force)
    promote = sub.add_parser("promote", help="make a member an admin (admins)")
    promote.add_argument("member", help=member)
    promote.add_argument("--group", help="group name or id prefix")
    demote = sub.add_parser("demote", help="make an admin a plain member (admins)")
    demote.add_argument("member", help=member)
    demote.add_argument("--group", help="group name or id prefix")
    demote.add_argument("--force", action="store_true", help=force)

    location = sub.add_parser("location", help="share, show or stop sharing a location")
    location_sub = location.add_subparsers(dest="location_command", metavar="ACTION", required=True)
    share = location_sub.add_parser("set", help="share where you are, coarsened first")
    share.add_argument("lat", type=float)
    share.add_argument("lon", type=float)
    which = share.add_mutually_exclusive_group()
    for flag in PRECISION_FLAGS:
        which.add_argument(f"--{flag}", action="store_true", help=f"{flag} precision")
    share.add_argument("--ttl", type=float, default=12 * 3600, help="seconds (default 12 h)")
    share.add_argument("--group", help="group name or id prefix")
    show = location_sub.add_parser("show", help="members' latest locations")
    show.add_argument("--group", help="group name or id prefix")
    stop = location_sub.add_parser("stop", help="stop sharing your location")
    stop.add_argument("--group", help="group name or id prefix")
