"""While ``microsync serve`` runs, the profile is open in that process; other ``microsync``
commands on the same ``--home`` are handed to it over a Unix socket in the profile directory
(``serve.sock``, readable by the owner only) and run there, on the open device: posting from a
second terminal reaches connected peers at once.

A forwarded request carries the caller's working directory: a path the user typed
(``vault add photo.jpg``, ``vault get ID out/``) is resolved there by :func:`user_path`, not in
the directory ``serve`` was started in. A command that fails inside ``serve`` still answers:
its one-line error comes back to the caller's terminal with its exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Final

from microsync.errors import NotAMember

if TYPE_CHECKING:  # the device stack (and asyncio, rich) load only when needed
    import asyncio

    from rich.console import Console

    from microsync.node import Device, Group

__all__ = [
    "SOCKET_NAME",
    "caller_progress",
    "error_console",
    "errors_to",
    "forward",
    "open_device",
    "open_group",
    "serve_commands",
    "user_path",
    "without_home",
]

log = logging.getLogger("microsync.cli")

SOCKET_NAME: Final = "serve.sock"
MAX_REQUEST: Final = 1 << 20
NOT_FORWARDED: Final = frozenset({"init", "serve", "relay", "keeper", "demo"})

_SERVING: ContextVar[Device | None] = ContextVar("microsync_serving_device", default=None)
_CALLER_CWD: ContextVar[Path | None] = ContextVar("microsync_caller_cwd", default=None)


_PROGRESS: ContextVar[Callable[[str, int, int], None] | None] = ContextVar(
    "microsync_caller_progress", default=None
)


def caller_progress() -> Callable[[str, int, int], None] | None:
    """Inside ``serve``, where a forwarded command reports progress ``(label, done, total)``
    for the caller's terminal to draw; ``None`` outside."""
    return _PROGRESS.get()


_ERRORS: ContextVar[Console | None] = ContextVar("microsync_error_console", default=None)


@contextlib.contextmanager
def errors_to(err: Console) -> Iterator[None]:
    """Within this block, :func:`error_console` is ``err`` (the caller's stderr, also inside
    ``serve``)."""
    token = _ERRORS.set(err)
    try:
        yield
    finally:
        _ERRORS.reset(token)


def error_console() -> Console:
    """Where a command writes warnings: the caller's stderr."""
    from rich.console import Console

    return _ERRORS.get() or Console(stderr=True, highlight=False, soft_wrap=True)


def user_path(text: str) -> Path:
    """A path the user typed, resolved in the user's working directory (the caller's, for a
    command forwarded to ``serve``; this process's otherwise)."""
    path = Path(text).expanduser()
    cwd = _CALLER_CWD.get()
    return path if cwd is None or path.is_absolute() else cwd / path


@contextlib.asynccontextmanager
async def open_device(home: Path) -> AsyncIterator[Device]:
    """The profile at ``home``: the serving process's open device when a command runs inside
    ``serve`` (left open), else opened here and closed after."""
    serving = _SERVING.get()
    if serving is not None:
        yield serving
        return
    from microsync.node import Device

    async with await Device.open(home) as device:
        yield device


@contextlib.asynccontextmanager
async def open_group(args: argparse.Namespace) -> AsyncIterator[Group]:
    """The group a command names (``--group``, or the profile's only one), on the profile
    :func:`open_device` gives."""
    from microsync.cli.social import find_group

    async with open_device(args.home) as device:
        group = find_group(device, args.group)
        gone = group.exit()
        if gone is not None and _writes(args):
            raise NotAMember(
                f"{gone.sentence(group.name)}: what you had stays readable here, but you "
                "cannot write to it"
            )
        yield group


_WRITES: Final = frozenset({"post", "reply", "edit", "delete", "react", "remove", "leave"})
_WRITES_TOO: Final = frozenset({"promote", "demote", "rotate", "location set", "vault add"})


def _writes(args: argparse.Namespace) -> bool:
    """Does this command write to its group (so needs its writer to be a member)?"""
    action = getattr(args, "location_command", None) or getattr(args, "vault_command", None)
    command = f"{args.command} {action}" if action else args.command
    return command in _WRITES or command in _WRITES_TOO or command == "vault rm"


Runner = Callable[[argparse.Namespace, "Console", "Console"], Awaitable[int]]


async def serve_commands(
    device: Device, parse: Callable[[Sequence[str]], argparse.Namespace], run: Runner
) -> asyncio.AbstractServer:
    """Accept commands for ``device`` on its profile's socket (until the server is closed)."""
    import asyncio

    path = device.path / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            argv, cwd = _read_request(await asyncio.wait_for(reader.readline(), 10))
        except (ValueError, KeyError, TypeError, TimeoutError, ConnectionError):
            writer.close()  # a broken client: nothing to answer
            return
        send = _sender(writer)
        try:
            code = await _answered(_run_forwarded(device, parse, run, argv, cwd, send), send)
            send({"done": code})
            await writer.drain()
        except ConnectionError:
            pass  # the caller went away (Ctrl-C) while we answered: nobody to tell
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    return server


Send = Callable[[dict[str, object]], None]


async def _answered(command: Awaitable[int], send: Send) -> int:
    """The exit status of a forwarded ``command``; one that raises (a bug, or an error
    ``run`` lets through, ``MICROSYNC_DEBUG`` set) still answers the caller: its one-line
    error goes to the caller's stderr, status 1, and the traceback to this process's log."""
    try:
        return await command
    except Exception as error:  # the top of a forwarded command: one line, as main() prints
        log.error("a forwarded command failed", exc_info=True)
        send({"err": f"microsync: error: unexpected {type(error).__name__}: {error}\n"})
        return 1


def _sender(writer: asyncio.StreamWriter) -> Send:
    """Send one message to the caller, a JSON line: ``{"out": text}``, ``{"err": text}``,
    ``{"progress": [label, done, total]}``, and last ``{"done": exit status}``."""

    def send(message: dict[str, object]) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(message).encode() + b"\n")

    return send


class _Relayed(io.StringIO):
    """A text file whose writes go to the caller's stdout or stderr as they happen."""

    def __init__(self, send: Send, key: str) -> None:
        super().__init__()
        self._send, self._key = send, key

    def write(self, text: str) -> int:
        if text:
            self._send({self._key: text})
        return len(text)


def _read_request(line: bytes) -> tuple[list[str], Path | None]:
    """``argv`` and the caller's directory from one request line (``ValueError`` if bad)."""
    request = json.loads(line[:MAX_REQUEST])
    argv, cwd = request["argv"], request.get("cwd")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a list of strings")
    if cwd is not None and not (isinstance(cwd, str) and os.path.isabs(cwd)):
        raise ValueError("cwd must be an absolute path")
    return argv, None if cwd is None else Path(cwd)


async def _run_forwarded(
    device: Device,
    parse: Callable[[Sequence[str]], argparse.Namespace],
    run: Runner,
    argv: list[str],
    cwd: Path | None,
    send: Send,
) -> int:
    """Run one forwarded command on ``device``, relaying what it prints (and its progress)
    to the caller as it happens; its exit status."""
    from rich.console import Console

    out_file, err_file = _Relayed(send, "out"), _Relayed(send, "err")
    out = Console(file=out_file, highlight=False, soft_wrap=True, width=100)
    err = Console(file=err_file, highlight=False, soft_wrap=True, width=100)
    try:
        with contextlib.redirect_stderr(err_file), contextlib.redirect_stdout(out_file):
            args = parse(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    args.home = device.path
    if args.command in NOT_FORWARDED and getattr(args, "keeper_action", None) is None:
        err.print(f"microsync: error: `{args.command}` cannot run inside serve")
        return 1

    def progress(label: str, done: int, total: int) -> None:
        send({"progress": [label, done, total]})

    tokens = (_SERVING.set(device), _CALLER_CWD.set(cwd), _PROGRESS.set(progress))
    try:
        return await run(args, out, err)
    finally:
        _PROGRESS.reset(tokens[2])
        _CALLER_CWD.reset(tokens[1])
        _SERVING.reset(tokens[0])


def forward(home: Path, argv: Sequence[str]) -> int | None:
    """Run ``argv`` in the ``serve`` process that holds ``home`` open; ``None`` if there is
    none to ask. Prints what the command prints as it prints it (a progress bar on a
    terminal) and returns its exit status."""
    path = Path(home) / SOCKET_NAME
    if not path.exists():
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(600)
        client.connect(str(path))
    except OSError:
        client.close()
        return None  # a socket left behind by a serve that died
    with client, client.makefile("rb") as replies:
        request = {"argv": list(argv), "cwd": os.getcwd()}
        client.sendall(json.dumps(request).encode() + b"\n")
        return _show_replies(replies)


def _show_replies(replies: Iterable[bytes]) -> int:
    """Print the messages of a forwarded command as they come; its exit status (1, with a
    line saying so, if ``serve`` went away before the command finished)."""
    bar = _ProgressLine()
    try:
        for line in replies:
            message = json.loads(line)
            if "done" in message:
                return int(message["done"])
            if "progress" in message:
                bar.show(*message["progress"])
                continue
            bar.clear()
            for key, stream in (("out", sys.stdout), ("err", sys.stderr)):
                if key in message:
                    stream.write(str(message[key]))
                    stream.flush()
    except (OSError, ValueError):
        pass
    finally:
        bar.clear()
    sys.stderr.write("microsync: error: serve stopped before the command finished\n")
    return 1


class _ProgressLine:
    """A one-line progress display on the caller's terminal (nothing when stderr is not one)."""

    def __init__(self) -> None:
        self._shown = False
        self._live = sys.stderr.isatty()

    def show(self, label: str, done: int, total: int) -> None:
        if not self._live:
            return
        share = f"{100 * done / total:3.0f}%  " if total else ""
        size = f"{done / 1e6:.1f}" + (f" / {total / 1e6:.1f} MB" if total else " MB")
        sys.stderr.write(f"\r{label}  {share}{size}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


def without_home(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--home DIR`` (the serving process knows its own home)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--home":
            skip = True
        elif not arg.startswith("--home="):
            out.append(arg)
    return out
