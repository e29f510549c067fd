"""Entry point of the ``microsync`` command.

Every command is an async function taking the parsed arguments and a :class:`Console`. Every
error is one line on stderr, ``microsync: error: ...``, never a traceback: a bad argument exits
with status 2 (the line names the argument and ``--help``), anything else with status 1. An
error nobody anticipated is reported the same way, by its type and message (set
``MICROSYNC_DEBUG=1`` to see the traceback as well).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import microsync
from microsync.cli import control, devices, keeper, network, social, vault
from microsync.cli.control import open_device, open_group
from microsync.cli.members import size_line
from microsync.errors import InviteError, MicrosyncError, ProfileInUse, ProfileNotFound

if TYPE_CHECKING:  # loaded once a command runs: --help needs none of them
    from rich.console import Console

    from microsync.node import Device, Group

__all__ = ["main"]

Command = Callable[[argparse.Namespace, "Console"], Coroutine[Any, Any, int]]


def default_home() -> Path:
    """``$MICROSYNC_HOME``, else ``~/.microsync``."""
    return Path(os.environ.get("MICROSYNC_HOME") or Path.home() / ".microsync")


async def cmd_init(args: argparse.Namespace, out: Console) -> int:
    from microsync.node import Device
    from microsync.storage.sqlite import DATABASE_NAME

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
            control.error_console().print(
                "[yellow]Your 24 recovery words, shown only now (no device keeps them): write "
                "them down and keep them offline. They take you back into every group and "
                "revoke every device, even the ones a thief holds.[/]"
            )
            out.print("words: " + " ".join(device.export_recovery_words()), soft_wrap=True)
        else:
            out.print(
                "Your groups come back at the first [bold]microsync sync HOST:PORT[/] with any "
                "member's device (or [bold]serve --peer/--relay[/]): see docs/devices.md."
            )
    return 0


async def cmd_whoami(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
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
    async with open_device(args.home) as device:
        words = device.export_recovery_words()
    control.error_console().print(
        "[yellow]Anyone with these words can act as you. Keep them offline.[/]"
    )
    out.print(" ".join(words), soft_wrap=True)
    return 0


async def cmd_group_create(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        group = await device.create_group(
            args.name, history=args.history, max_members=args.max_members
        )
        out.print(
            f"Created group [bold]{group.name}[/] ({group.id.hex()}), history {group.history}"
        )
    return 0


def _exit_json(group: Group) -> dict[str, str | None] | None:
    """How this device came to be out of ``group``, for ``groups --json`` (``None``: in)."""
    gone = group.exit()
    if gone is None:
        return None
    by = None if gone.by is None else gone.by.hex()
    at = None if gone.at is None else gone.at.isoformat()
    return {"how": gone.how, "by": by, "by_name": gone.by_name, "at": at}


async def cmd_groups(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        groups = device.groups()
        if args.json:
            out.print_json(
                json.dumps(
                    [
                        {
                            "id": g.id.hex(),
                            "name": g.name,
                            "members": len(g.members()),
                            "max_members": g.max_members,
                            "epoch": g.epoch,
                            "history": g.history,
                            "member": g.is_member(),
                            "exit": _exit_json(g),
                        }
                        for g in groups
                    ]
                )
            )
            return 0
        if not groups:
            out.print("No groups yet. Create one with: microsync group create NAME")
        for g in groups:
            gone = g.exit()
            status = "" if gone is None else f"  ({gone.sentence(g.name)})"
            out.print(f"{g.id.hex()[:16]}  {g.name}  {_count(len(g.members()), 'member')}{status}")
    return 0


async def cmd_members(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        members = group.members()
        if args.json:
            out.print_json(
                json.dumps(
                    [
                        {
                            "person_id": m.person_id.hex(),
                            "name": m.name,
                            "role": m.role,
                            "devices": [d.hex() for d in m.devices],
                        }
                        for m in members
                    ]
                )
            )
            return 0
        for m in members:
            devices = _count(len(m.devices), "device")
            out.print(f"{social.member_id(m.person_id)}  {m.name}  {m.role}  {devices}")
        if group.max_members is not None:  # (one line per member otherwise, as always)
            out.print(size_line(group))
    return 0


async def cmd_rotate(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        await group.rotate_keys()
        out.print(f"{group.name}: new epoch {group.epoch}")
    return 0


async def _demo(args: argparse.Namespace, out: Console) -> int:
    from microsync.cli.demo import cmd_demo

    return await cmd_demo(args, out)


def _count(n: int, noun: str) -> str:
    """``1 device``, ``2 devices``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _print_identity(device: Device, out: Console) -> None:
    out.print(f"name:    {device.name}")
    out.print(
        f"person:  {device.person_id.hex()}  (in `members`: {social.member_id(device.person_id)})"
    )
    out.print(f"device:  {device.id.hex()}")


COMMANDS: dict[str, Command] = {
    "init": cmd_init,
    "whoami": cmd_whoami,
    "recovery-words": cmd_recovery_words,
    "group create": cmd_group_create,
    "groups": cmd_groups,
    "members": cmd_members,
    "rotate": cmd_rotate,
    "invite": social.cmd_invite,
    "join": social.cmd_join,
    "post": social.cmd_post,
    "reply": social.cmd_reply,
    "edit": social.cmd_edit,
    "delete": social.cmd_delete,
    "react": social.cmd_react,
    "feed": social.cmd_feed,
    "remove": social.cmd_remove,
    "leave": social.cmd_leave,
    "promote": social.cmd_promote,
    "demote": social.cmd_demote,
    "location set": social.cmd_location_set,
    "location show": social.cmd_location_show,
    "location stop": social.cmd_location_stop,
    "serve": network.cmd_serve,
    "sync": network.cmd_sync,
    "status": network.cmd_status,
    "relay": network.cmd_relay,
    "keeper": keeper.cmd_keeper,
    "vault": vault.cmd_vault,
    "demo": _demo,
    "link": devices.cmd_link,
    "devices": devices.cmd_devices,
}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"microsync: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    init = sub.add_parser("init", help="create a profile (a new person, or --restore one)")
    init.add_argument("--name", required=True, help="this device's display name")
    init.add_argument(
        "--restore",
        action="store_true",
        help="read 24 recovery words from stdin: same person, new device",
    )
    whoami = sub.add_parser("whoami", help="show this profile's person and device")
    whoami.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser(
        "recovery-words", help="the 24 recovery words are shown once, by init: this says so"
    )
    group = sub.add_parser("group", help="manage groups")
    group_sub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    create = group_sub.add_parser("create", help="create a group with you as its first admin")
    create.add_argument("name", help="the group's name (encrypted; members see it)")
    create.add_argument(
        "--history",
        choices=["shared", "none"],
        default="shared",
        help="may later members read earlier content? (default: shared)",
    )
    create.add_argument(
        "--max-members", type=int, default=None, help="at most this many members (default: no cap)"
    )
    groups = sub.add_parser("groups", help="list this profile's groups")
    groups.add_argument("--json", action="store_true", help="machine-readable output")
    members = sub.add_parser("members", help="list a group's members")
    members.add_argument("--json", action="store_true", help="machine-readable output")
    rotate = sub.add_parser("rotate", help="start a new key epoch in a group now")
    for takes_group in (members, rotate):
        takes_group.add_argument("--group", help="group name or id prefix")
        takes_group.add_argument("group_word", nargs="?", metavar="GROUP", help="same as --group")
    social.add_parsers(sub)
    network.add_parsers(sub)
    keeper.add_parsers(sub)
    vault.add_parsers(sub)
    devices.add_parsers(sub)
    sub.add_parser("demo", help="three devices on this machine form a family group and sync")
    _home_anywhere(sub)
    return parser


def _home_anywhere(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let ``--home DIR`` come after the command too (``microsync feed --home ./bob``)."""
    for parser in set(sub.choices.values()):
        parser.add_argument("--home", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _home_anywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(words)
    args.home = args.home if args.home is not None else default_home()
    forwardable = args.command not in control.NOT_FORWARDED or keeper.forwardable(args)
    if forwardable and (args.home / control.SOCKET_NAME).exists():
        # `serve` holds this profile (most likely): run it there without loading the device
        code = control.forward(args.home, control.without_home(words))
        if code is not None:
            return code
    import asyncio

    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    _warnings_to(err)
    try:
        return asyncio.run(run_command(args, out, err))
    except ProfileInUse:
        # `serve` holds this profile: run the command there, on the open device
        if forwardable:
            code = control.forward(args.home, control.without_home(words))
            if code is not None:
                return code
        _error(err, f"{args.home} is in use by another microsync process (stop it first)")
    except KeyboardInterrupt:
        return 130
    return 1


async def run_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    """Run one parsed command; errors microsync raises on purpose become one line on ``err``
    and status 1 (:class:`ProfileInUse` is left to the caller)."""
    try:
        command = args.command
        if command == "group":
            command = f"group {args.group_command}"
        elif command == "location":
            command = f"location {args.location_command}"
        if getattr(args, "group_word", None) is not None:
            args.group = args.group or args.group_word
        with control.errors_to(err):
            return await COMMANDS[command](args, out)
    except ProfileInUse:
        raise
    except ProfileNotFound:
        _error(
            err,
            f"no profile at {args.home}; "
            f"create one with: microsync --home {args.home} init --name NAME",
        )
    except InviteError as error:
        message = str(error)
        _error(err, message if "invite" in message else f"bad invite: {message}")
    except MicrosyncError as error:
        _error(err, str(error))
    except ValueError as error:
        _error(err, str(error))
    except OSError as error:
        _error(err, _os_error(error))
    except Exception as error:  # a bug, not the user's doing: still one line, never a traceback
        if os.environ.get("MICROSYNC_DEBUG"):
            raise
        error = _cause(error)
        _error(err, f"unexpected {type(error).__name__}: {error} (MICROSYNC_DEBUG=1 shows where)")
    return 1


def _cause(error: Exception) -> Exception:
    """The error a task group raised for (its first), not the group: what the line names."""
    while isinstance(error, ExceptionGroup):
        error = error.exceptions[0]
    return error


def _os_error(error: OSError) -> str:
    """An operating-system error with the file it is about, when it is about one."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


class _Warnings(logging.Handler):
    """The library's warnings (a profile made private) as ``microsync: warning:`` lines."""

    def __init__(self, err: Console) -> None:
        super().__init__(logging.WARNING)
        self._err = err

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        self._err.print(f"[yellow]microsync: warning:[/] {escape(record.getMessage())}")


def _warnings_to(err: Console) -> None:
    storage = logging.getLogger("microsync.storage")
    if not any(isinstance(h, _Warnings) for h in storage.handlers):
        storage.addHandler(_Warnings(err))


def _error(err: Console, message: str) -> None:
    err.print(f"[red]microsync: error:[/] {message}")


if __name__ == "__main__":
    sys.exit(main())
