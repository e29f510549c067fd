"""``microsync keeper``: run a keeper (stores groups' sealed items; reads none of them).

The grammar is ``microsync keeper --data DIR [--host H] [--port P] [--quota SIZE]
[--retention DAYS] [--max-disk SIZE]``: with no action word, ``keeper`` serves. The member-side
actions (``keeper add URL --group G``, ``keeper ls``, ``keeper rm``) will be words after
``keeper``, so both read as the issue spells them.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEFAULT_KEEPER_PORT", "add_parsers", "byte_size", "cmd_keeper", "days"]

DEFAULT_KEEPER_PORT: Final = 7427
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


async def cmd_keeper(args: argparse.Namespace, out: Console) -> int:
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
        await run_keeper(data, args.host, args.port, limits=limits, ready=ready)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from microsync.cli.args import port_number

    keeper = sub.add_parser(
        "keeper", help="run a keeper: stores groups' sealed items for offline members"
    )
    keeper.add_argument("--data", type=Path, required=True, help="directory for its database")
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
