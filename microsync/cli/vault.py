"""``microsync vault add|get|ls|rm|policy``: the group's encrypted files, with progress bars.

Like every command, these run inside ``microsync serve`` when it holds the profile
(:func:`~microsync.cli.control.open_device`)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from microsync.cli.control import caller_progress, open_device, open_group, user_path
from microsync.cli.social import find_group
from microsync.errors import MicrosyncError, PeerUnreachable

if TYPE_CHECKING:  # the device stack (and asyncio, rich) load only when a command runs
    from rich.console import Console

    from microsync.blobs import BlobRef
    from microsync.node import Device, Group
    from microsync.node.vault import Progress as ProgressCallback

__all__ = ["add_parsers", "cmd_vault"]


@contextmanager
def _bar(out: Console, label: str, quiet: bool) -> Iterator[ProgressCallback]:
    """A progress bar showing bytes, rate and time left; yields the vault's callback. Inside
    ``serve`` the caller's terminal draws it (at most ten updates a second, and the last)."""
    remote = caller_progress()
    if remote is not None:
        if quiet:
            yield lambda done, total: None
            return
        last = [0.0]

        def relay(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.1 or done >= total:
                last[0] = now
                remote(label, done, total)

        yield relay
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn(label),
        BarColumn(bar_width=None),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(
        *columns, console=out, transient=True, disable=quiet or not out.is_terminal
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError


def _find_file(group: Group, prefix: str) -> BlobRef:
    """The vault file whose id starts with ``prefix`` (one clear line if none or several)."""
    try:
        return group.vault.get(prefix)
    except KeyError:
        raise MicrosyncError(
            f"no single file in {group.name}'s vault has an id starting {prefix!r} "
            "(see: microsync vault ls)"
        ) from None


def _source(text: str) -> Path:
    """The file the user named for ``vault add``, checked before any work starts."""
    path = user_path(text)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise MicrosyncError(f"cannot add {path}: it {what}")
    return path


async def cmd_add(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        path = _source(args.file)
        with _bar(out, f"encrypting {path.name}", args.quiet) as progress:
            ref = await group.vault.add(path, name=args.name, mime=args.mime, progress=progress)
        out.print(f"{ref.id.hex()[:12]}  {ref.name}  {_size(ref.size)}  added to {group.name}")
    return 0


async def cmd_get(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        group = find_group(device, args.group)
        ref = _find_file(group, args.id)
        online = device.port is not None or device.relay is not None
        if not online and group.vault.missing(ref):
            await _go_online_briefly(device, group, ref.name, list(args.peer or ()), args.timeout)
        elif args.peer:  # already online (run inside `serve`): add these peers
            for address in args.peer:
                device.connect(address)
            await _wait_for_peers(device, group, args.timeout)
        dest = user_path(args.dest)
        if dest.is_dir():
            dest = dest / Path(ref.name).name
        with _bar(out, f"fetching {ref.name}", args.quiet) as progress:
            await group.vault.fetch(ref, dest, progress=progress, timeout=args.timeout)
        out.print(f"{dest}  {_size(ref.size)}  verified")
    return 0


async def _go_online_briefly(
    device: Device, group: Group, name: str, given: list[str], timeout: float
) -> None:
    """Start this (not serving) device with no listener, dialling the peers given with
    ``--from`` and every address it last reached ``group``'s members at (and their relay), and
    wait until one has synced; ``open_device`` stops it again. One line if none answers."""
    known = group.known_peers()
    addresses = list(dict.fromkeys([*given, *(p.address for p in known if not p.is_relay)]))
    relays = [p.address for p in known if p.is_relay]
    tried = [*addresses, *relays[:1]]
    if not tried:
        raise MicrosyncError(
            f"{name} is not all on this device, and it knows no member's address to fetch it "
            "from: start `microsync serve` in another terminal (this command then runs there, "
            "fetching from connected members), or add --from HOST:PORT of a member's serve"
        )
    await device.start(lan=False, port=None, relay=relays[0] if relays else None, peers=())
    for address in addresses:
        device.connect(address)
    try:
        await _wait_for_peers(device, group, timeout)
    except PeerUnreachable:
        raise PeerUnreachable(
            f"cannot fetch {name}: no member answered at {', '.join(tried)}; start "
            "`microsync serve` on a device that has it, or add --from HOST:PORT of one"
        ) from None


async def _wait_for_peers(device: Device, group: Group, timeout: float) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not any(p.synced and group.id in p.groups for p in device.peers()):
        if asyncio.get_running_loop().time() > deadline:
            raise PeerUnreachable("no peer answered in time")
        await asyncio.sleep(0.05)


async def cmd_ls(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        group = find_group(device, args.group)
        vault = group.vault
        refs = vault.list()
        names = {m.person_id: m.name for m in group.members()}
        if args.json:
            rows = [
                {
                    "id": r.id.hex(),
                    "name": r.name,
                    "mime": r.mime,
                    "size": r.size,
                    "author": names.get(r.author, r.author.hex()),
                    "here": not vault.missing(r),
                }
                for r in refs
            ]
            out.print_json(json.dumps(rows))
            return 0
        for r in refs:
            here = "here" if not vault.missing(r) else "remote"
            when = datetime.fromtimestamp(r.added_at / 1000).strftime("%Y-%m-%d %H:%M")
            who = names.get(r.author, "(former member)")
            out.print(f"{r.id.hex()[:12]}  {when}  {_size(r.size):>9}  {here:6}  {who}: {r.name}")
        usage = vault.usage()
        out.print(
            f"{usage.blobs} {'file' if usage.blobs == 1 else 'files'}, {_size(usage.total_bytes)}; "
            f"{_size(usage.bytes_held)} on this device (policy: {vault.policy})"
        )
    return 0


async def cmd_rm(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        ref = _find_file(group, args.id)
        await group.vault.remove(ref)
        out.print(f"{ref.id.hex()[:12]}  {ref.name}  removed for everyone")
    return 0


async def cmd_policy(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        if args.policy:
            group.vault.policy = args.policy
        out.print(f"{group.name}: {group.vault.policy}")
    return 0


_ACTIONS = {"add": cmd_add, "get": cmd_get, "ls": cmd_ls, "rm": cmd_rm, "policy": cmd_policy}


async def cmd_vault(args: argparse.Namespace, out: Console) -> int:
    """Dispatch ``vault ACTION``."""
    return await _ACTIONS[args.vault_command](args, out)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``vault`` and its actions on the top-level parser."""
    from microsync.cli.args import peer_address

    vault = sub.add_parser("vault", help="encrypted files shared with a group")
    actions = vault.add_subparsers(dest="vault_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="encrypt a file into the group's vault")
    add.add_argument("file")
    add.add_argument("--name", help="the name members see (default: the file's)")
    add.add_argument("--mime", help="the media type (default: guessed from the name)")
    get = actions.add_parser("get", help="fetch a file, verified chunk by chunk")
    get.add_argument("id", help="file id prefix (as `vault ls` shows it)")
    get.add_argument("dest", help="where to write it (a directory keeps the file's name)")
    get.add_argument(
        "--from",
        dest="peer",
        type=peer_address,
        action="append",
        metavar="HOST:PORT",
        help="a peer to fetch missing chunks from (repeat for several)",
    )
    get.add_argument("--timeout", type=float, default=30.0, help="seconds without progress")
    actions.add_parser("ls", help="list the files").add_argument("--json", action="store_true")
    rm = actions.add_parser("rm", help="remove a file you added, for everyone")
    rm.add_argument("id", help="file id prefix")
    policy = actions.add_parser("policy", help="show or set this device's storage policy")
    policy.add_argument("policy", nargs="?", choices=["all", "thumbnails", "on_demand"])
    for parser in (add, get, actions.choices["ls"], rm, policy):
        parser.add_argument("--group", help="group name or id prefix")
    for parser in (add, get):
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
