"""Entry point of the ``microsync`` command.

Every command is an async function taking the parsed arguments and a :class:`Console`; errors
that microsync raises on purpose become one clear line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

import microsync
from microsync.crypto import fingerprint
from microsync.errors import MicrosyncError, ProfileNotFound
from microsync.node import Device
from microsync.storage.sqlite import DATABASE_NAME

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]


def default_home() -> Path:
    """``$MICROSYNC_HOME``, else ``~/.microsync``."""
    return Path(os.environ.get("MICROSYNC_HOME") or Path.home() / ".microsync")


async def cmd_init(args: argparse.Namespace, out: Console) -> int:
    home: Path = args.home
    if (home / DATABASE_NAME).exists():
        async with await Device.open(home) as existing:
            raise MicrosyncError(
                f"{home} already holds a profile ({existing.name}); nothing changed"
            )
    if args.restore:
        words = sys.stdin.read()
        device = await Device.restore(home, words, name=args.name)
    else:
        device = await Device.open(home, name=args.name)
    async with device:
        verb = "Restored" if args.restore else "Created"
        out.print(f"{verb} profile [bold]{device.name}[/] in {home}")
        _print_identity(device, out)
        if not args.restore:
            out.print(
                "Run [bold]microsync recovery-words[/] and write the words down somewhere safe."
            )
    return 0


async def cmd_whoami(args: argparse.Namespace, out: Console) -> int:
    async with await Device.open(args.home) as device:
        if args.json:
            out.print_json(
                json.dumps(
                    {
                        "name": device.name,
                        "person_id": device.person_id.hex(),
                        "device_id": device.id.hex(),
                        "home": str(device.path),
                    }
                )
            )
        else:
            _print_identity(device, out)
    return 0


async def cmd_recovery_words(args: argparse.Namespace, out: Console) -> int:
    async with await Device.open(args.home) as device:
        words = device.export_recovery_words()
    Console(stderr=True).print(
        "[yellow]Anyone with these words can act as you. Keep them offline.[/]"
    )
    out.print(" ".join(words), soft_wrap=True)
    return 0


def _print_identity(device: Device, out: Console) -> None:
    out.print(f"name:    {device.name}")
    out.print(f"person:  {device.person_id.hex()}  ({fingerprint(device.person_id)})")
    out.print(f"device:  {device.id.hex()}  ({fingerprint(device.id)})")


COMMANDS: dict[str, Command] = {
    "init": cmd_init,
    "whoami": cmd_whoami,
    "recovery-words": cmd_recovery_words,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microsync",
        description="Private micro-networks: encrypted group feeds synced device to device.",
    )
    parser.add_argument("--version", action="version", version=f"microsync {microsync.__version__}")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="profile directory (default: $MICROSYNC_HOME or ~/.microsync)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    init = sub.add_parser("init", help="create a profile (a new person, or --restore one)")
    init.add_argument("--name", required=True, help="this device's display name")
    init.add_argument(
        "--restore",
        action="store_true",
        help="read 24 recovery words from stdin: same person, new device",
    )
    whoami = sub.add_parser("whoami", help="show this profile's person and device")
    whoami.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("recovery-words", help="print the person's 24 recovery words")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    args.home = args.home if args.home is not None else default_home()
    out = Console(highlight=False, soft_wrap=True)
    try:
        return asyncio.run(COMMANDS[args.command](args, out))
    except ProfileNotFound:
        _error(
            f"no profile at {args.home}; "
            f"create one with: microsync --home {args.home} init --name NAME"
        )
    except MicrosyncError as error:
        _error(str(error))
    except ValueError as error:
        _error(str(error))
    except KeyboardInterrupt:
        return 130
    return 1


def _error(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[red]microsync: error:[/] {message}"
    )


if __name__ == "__main__":
    sys.exit(main())
