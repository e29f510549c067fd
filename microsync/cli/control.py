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
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # the device stack (and asyncio, rich) load only when needed
    import asyncio

    from rich.console import Console

    from microsync.node import Device, Group

__all__ = [
    "SOCKET_NAME",
    "error_console",
    "errors_to",
    "forward",
    "open_device",
    "open_group",
    "serve_commands",
    "user_path",
    "without_home",
]

SOCKET_NAME: Final = "serve.sock"
MAX_REQUEST: Final = 1 << 20
NOT_FORWARDED: Final = frozenset({"init", "serve", "relay", "demo"})

_SERVING: ContextVar[Device | None] = ContextVar("microsync_serving_device", default=None)
_CALLER_CWD: ContextVar[Path | None] = ContextVar("microsync_caller_cwd", default=None)


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
        yield find_group(device, args.group)


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
        try:
            reply = await _run_forwarded(device, parse, run, argv, cwd)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass  # the caller went away (Ctrl-C): the command ran, nobody to tell
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    return server


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
) -> dict[str, object]:
    """Run one forwarded command on ``device``; its exit status and what it printed."""
    from rich.console import Console

    out_buffer, err_buffer = io.StringIO(), io.StringIO()
    out = Console(file=out_buffer, highlight=False, soft_wrap=True, width=100)
    err = Console(file=err_buffer, highlight=False, soft_wrap=True, width=100)
    try:
        with contextlib.redirect_stderr(err_buffer), contextlib.redirect_stdout(out_buffer):
            args = parse(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 2
    else:
        args.home = device.path
        if args.command in NOT_FORWARDED:
            err.print(f"microsync: error: `{args.command}` cannot run inside serve")
            code = 1
        else:
            tokens = (_SERVING.set(device), _CALLER_CWD.set(cwd))
            try:
                code = await run(args, out, err)
            finally:
                _CALLER_CWD.reset(tokens[1])
                _SERVING.reset(tokens[0])
    return {"code": code, "stdout": out_buffer.getvalue(), "stderr": err_buffer.getvalue()}


def forward(home: Path, argv: Sequence[str]) -> int | None:
    """Run ``argv`` in the ``serve`` process that holds ``home`` open; ``None`` if there is
    none to ask. Prints what the command printed and returns its exit status."""
    path = Path(home) / SOCKET_NAME
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(600)
            client.connect(str(path))
            request = {"argv": list(argv), "cwd": os.getcwd()}
            client.sendall(json.dumps(request).encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None  # a socket left behind by a serve that died
    reply = json.loads(b"".join(chunks) or b"null")
    if not isinstance(reply, dict):
        return None
    sys.stdout.write(str(reply.get("stdout", "")))
    sys.stderr.write(str(reply.get("stderr", "")))
    return int(reply.get("code", 1))


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
