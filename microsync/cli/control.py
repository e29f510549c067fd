"""While ``microsync serve`` runs, the profile is open in that process; other ``microsync``
commands on the same ``--home`` are handed to it over a Unix socket in the profile directory
(``serve.sock``, readable by the owner only) and run there, on the open device: posting from a
second terminal reaches connected peers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Final

from rich.console import Console

from microsync.node import Device, Group

__all__ = ["SOCKET_NAME", "forward", "open_device", "open_group", "serve_commands"]

SOCKET_NAME: Final = "serve.sock"
MAX_REQUEST: Final = 1 << 20
NOT_FORWARDED: Final = frozenset({"init", "serve", "relay", "demo"})

_SERVING: ContextVar[Device | None] = ContextVar("microsync_serving_device", default=None)


@contextlib.asynccontextmanager
async def open_device(home: Path) -> AsyncIterator[Device]:
    """The profile at ``home``: the serving process's open device when a command runs inside
    ``serve`` (left open), else opened here and closed after."""
    serving = _SERVING.get()
    if serving is not None:
        yield serving
        return
    async with await Device.open(home) as device:
        yield device


@contextlib.asynccontextmanager
async def open_group(args: argparse.Namespace) -> AsyncIterator[Group]:
    """The group a command names (``--group``, or the profile's only one), on the profile
    :func:`open_device` gives."""
    from microsync.cli.social import find_group

    async with open_device(args.home) as device:
        yield find_group(device, args.group)


Runner = Callable[[argparse.Namespace, Console, Console], Awaitable[int]]


async def serve_commands(
    device: Device, parse: Callable[[Sequence[str]], argparse.Namespace], run: Runner
) -> asyncio.AbstractServer:
    """Accept commands for ``device`` on its profile's socket (until the server is closed)."""
    path = device.path / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            argv = json.loads(line[:MAX_REQUEST])["argv"]
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a list of strings")
            out_buffer, err_buffer = io.StringIO(), io.StringIO()
            out = Console(file=out_buffer, highlight=False, soft_wrap=True, width=100)
            err = Console(file=err_buffer, highlight=False, soft_wrap=True, width=100)
            try:
                args = parse(argv)
            except SystemExit as exit_:
                code = int(exit_.code or 0)
            else:
                args.home = device.path
                if args.command in NOT_FORWARDED:
                    err.print(f"microsync: error: `{args.command}` cannot run inside serve")
                    code = 1
                else:
                    token = _SERVING.set(device)
                    try:
                        code = await run(args, out, err)
                    finally:
                        _SERVING.reset(token)
            reply = {"code": code, "stdout": out_buffer.getvalue(), "stderr": err_buffer.getvalue()}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ValueError, KeyError, TimeoutError, ConnectionError):
            pass  # a broken client: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    return server


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
            client.sendall(json.dumps({"argv": list(argv)}).encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None  # a socket left behind by a serve that died
    reply = json.loads(b"".join(chunks) or b"null")
    if not isinstance(reply, dict):
        return None
    import sys

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


__all__ += ["without_home"]
