"""``microsync keeper``: run a keeper (stores groups' sealed items; reads none of them), and
choose a group's keepers.

The grammar is ``microsync keeper --data DIR [--host H] [--port P] [--quota SIZE]
[--retention DAYS] [--max-disk SIZE]``: with no action word, ``keeper`` serves. The member-side
actions are words after ``keeper``: ``keeper add URL --group G`` and ``keeper rm URL --group G``
(admins), ``keeper ls [--group G]`` (each keeper, and whether a running ``serve`` reaches it).
Only these are handed to a running ``serve`` (they need the profile; serving needs none).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio

    from rich.console import Console

__all__ = [
    "ACTIONS",
    "DEFAULT_KEEPER_PORT",
    "add_parsers",
    "byte_size",
    "cmd_keeper",
    "days",
    "forwardable",
]

DEFAULT_KEEPER_PORT: Final = 7427
ACTIONS: Final = ("add", "ls", "rm")
_SIZE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``4096``: a size in bytes (units are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}; for example 500M or 2G")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def days(text: str) -> float:
    """A positive number of days (fractions allowed: ``0.5`` is twelve hours)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of days: {text!r}")
    return value


def forwardable(args: argparse.Namespace) -> bool:
    """Is this a member-side ``keeper`` action (run by a ``serve`` holding the profile)?"""
    return getattr(args, "keeper_action", None) is not None


async def cmd_keeper(args: argparse.Namespace, out: Console) -> int:
    """Serve until interrupted; or, with an action word, add, list or remove keepers."""
    if args.keeper_action is not None:
        return await _member_side(args, out)
    if args.url is not None:
        raise ValueError(f"unknown keeper action {args.url!r}; use add, ls or rm")
    if args.data is None:  # a usage error, as argparse reports one (status 2)
        from microsync.cli.control import error_console

        error_console().print(
            "microsync: error: the following arguments are required: --data "
            "(to serve; or an action: add, ls, rm) (see: microsync keeper --help)",
            markup=False,
        )
        return 2
    return await _serve(args, out)


async def _member_side(args: argparse.Namespace, out: Console) -> int:
    from microsync.cli.control import open_device, open_group

    action = args.keeper_action
    if action == "ls":
        async with open_device(args.home) as device:
            from microsync.cli.social import find_group

            groups = device.groups() if args.group is None else [find_group(device, args.group)]
            shown = 0
            for group in groups:
                for status in group.keeper_status():
                    detail = status.status
                    if status.connected and status.unpushed:
                        detail += f", {status.unpushed} to push"
                    out.print(f"{group.name}  {status.url}  {detail}", markup=False)
                    shown += 1
            if not shown:
                out.print("no keepers (an admin adds one: microsync keeper add URL --group G)")
        return 0
    if args.url is None:
        raise ValueError(f"keeper {action}: which keeper? (microsync keeper {action} URL)")
    async with open_group(args) as group:
        if action == "add":
            url = await group.add_keeper(args.url)
            out.print(
                f"{group.name} now uses the keeper {url}: every member's device pushes to it "
                "and catches up from it",
                markup=False,
            )
        else:
            if args.url.rstrip("/") not in [k.rstrip("/") for k in group.keepers()]:
                raise ValueError(f"{group.name} does not use the keeper {args.url}")
            await group.remove_keeper(args.url)
            out.print(f"{group.name} no longer uses the keeper {args.url}", markup=False)
    return 0


async def _serve(args: argparse.Namespace, out: Console) -> int:
    """Serve until interrupted."""
    import asyncio

    from microsync.cli.network import _listening
    from microsync.net.keeper import KeeperLimits, run_keeper

    given = {
        "mailbox_quota": args.quota,
        "retention": None if args.retention is None else args.retention * 86400.0,
        "max_bytes": args.max_disk,
    }
    limits = KeeperLimits(**{k: v for k, v in given.items() if v is not None})
    data: Path = args.data

    def ready(port: int) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        out.print(
            f"{stamp}  keeper listening on ws://{args.host}:{port} (data in {data}; "
            "it holds sealed items only)",
            markup=False,
        )

    with contextlib.suppress(asyncio.CancelledError), _listening(args.host, args.port):
        serving = asyncio.ensure_future(
            run_keeper(data, args.host, args.port, limits=limits, ready=ready)
        )
        _stop_on_signals(serving)
        await serving
    return 0


def _stop_on_signals(serving: asyncio.Future[None]) -> None:
    """SIGTERM (what ``kill``, systemd and docker send) and SIGINT cancel ``serving``, which
    closes the keeper: queued writes committed, the store closed, its WAL folded back."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, serving.cancel)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from microsync.cli.args import port_number

    keeper = sub.add_parser(
        "keeper",
        help="run a keeper (stores groups' sealed items for offline members), "
        "or add, ls, rm a group's keepers",
    )
    keeper.add_argument(
        "keeper_action",
        nargs="?",
        choices=ACTIONS,
        metavar="ACTION",
        help="add URL, rm URL (admins) or ls; none: serve",
    )
    keeper.add_argument("url", nargs="?", metavar="URL", help="the keeper, ws://HOST:PORT")
    keeper.add_argument("--group", help="group name or id prefix (add, ls, rm)")
    keeper.add_argument("--data", type=Path, default=None, help="directory for its database")
    keeper.add_argument("--host", default="127.0.0.1", help="address to listen on")
    keeper.add_argument(
        "--port", type=port_number, default=DEFAULT_KEEPER_PORT, help="default %(default)s"
    )
    keeper.add_argument(
        "--quota",
        type=byte_size,
        default=None,
        metavar="SIZE",
        help="bytes one mailbox (one group epoch) may hold, e.g. 500M (default 1G)",
    )
    keeper.add_argument(
        "--retention",
        type=days,
        default=None,
        metavar="DAYS",
        help="purge items older than this (default: keep until deleted)",
    )
    keeper.add_argument(
        "--max-disk",
        type=byte_size,
        default=None,
        metavar="SIZE",
        help="cap on the keeper's database (default: the disk is the cap)",
    )
