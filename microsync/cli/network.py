"""Command-line commands that go on the network: serve, sync, relay, peers."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from microsync.cli.args import DEFAULT_PORT
from microsync.cli.control import SOCKET_NAME, open_device, serve_commands
from microsync.errors import MicrosyncError

if TYPE_CHECKING:  # the device stack (and asyncio, rich) load only when a command runs
    import asyncio

    from rich.console import Console
    from rich.progress import Progress

    from microsync.identity import DeviceId
    from microsync.node import Device, DeviceStatus, GroupStatus, PeerStatus, RelayStatus
    from microsync.protocol.session import SessionStats

MAX_CONNECTIONS: Final = 256
MAX_PER_ADDRESS: Final = 16
"""``ServeLimits()``'s defaults, for ``--help`` without the network stack
(``tests/test_cli_startup.py`` holds them equal)."""

__all__ = ["add_parsers", "cmd_relay", "cmd_serve", "cmd_status", "cmd_sync"]


def _stamp() -> str:
    return datetime.now().strftime("%H:%M:%S")


async def _log_peers(device: Device, out: Console) -> None:
    import asyncio

    known: dict[DeviceId, bool] = {}
    while True:
        now = {p.device_id: p.synced for p in device.peers()}
        for peer in device.peers():
            if peer.synced and not known.get(peer.device_id, False):
                out.print(f"{_stamp()}  in sync with {peer.name}")
        known = now
        await asyncio.sleep(0.2)


class _ConsoleLog(logging.Handler):
    """What the node and network layers log (connections, failures), as serve's log lines."""

    def __init__(self, out: Console) -> None:
        super().__init__(logging.INFO)
        self._out = out

    def emit(self, record: logging.LogRecord) -> None:
        self._out.print(f"{_stamp()}  {record.getMessage()}", soft_wrap=True, markup=False)


async def cmd_serve(args: argparse.Namespace, out: Console) -> int:
    import asyncio

    handler = _ConsoleLog(out)
    for name in ("microsync.node", "microsync.net"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    async with open_device(args.home) as device:
        peers = tuple(args.peer or ())
        for group in device.groups():
            group.feed()  # fold each group now (from its snapshot if any), not while syncing
        from microsync.net.limits import ServeLimits

        limits = ServeLimits(
            max_connections=args.max_connections, max_per_address=args.max_per_address
        )
        if args.quiet is not None:  # kept in the profile for the next serve too
            device.set_quiet(args.quiet)
        with _listening(args.bind, args.port):
            await device.start(
                lan=not args.no_lan,
                port=args.port,
                relay=args.relay,
                bind=args.bind,
                peers=peers,
                limits=limits,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        from microsync.cli.servelog import follow_groups

        def say(line: str) -> None:
            out.print(f"{_stamp()}  {line}", soft_wrap=True, markup=False)

        try:
            async with asyncio.TaskGroup() as tasks:  # its log: an error in it stops serve
                logs = [
                    tasks.create_task(follow_groups(device, say, show_text=args.show_text)),
                    tasks.create_task(_log_peers(device, out)),
                ]
                try:
                    await _serve_until_stopped(device, args, out, stop)
                finally:
                    for task in logs:
                        task.cancel()
        finally:
            await device.stop()
        out.print(f"{_stamp()}  stopped")
    return 0


async def _serve_until_stopped(
    device: Device, args: argparse.Namespace, out: Console, stop: asyncio.Event
) -> None:
    """Take commands on the profile's socket and say so; until ``stop`` (or ``--seconds``)."""
    import asyncio

    from microsync.cli.main import build_parser, run_command

    commands = await serve_commands(device, build_parser().parse_args, run_command)
    where = f"port {device.port}" if device.port else "no listener"
    lan = "off" if args.no_lan else "on"
    count = len(device.groups())
    out.print(
        f"{_stamp()}  {device.name} online: {where}, LAN discovery {lan}"
        + (f", relay {args.relay}" if args.relay else "")
        + f", {count} {'group' if count == 1 else 'groups'}"
        + (", quiet (no redials, discovery, relay or keeper links: `sync` syncs)" * device.quiet)
        + ". Ctrl-C to stop."
    )
    try:
        if args.seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
        else:
            await stop.wait()
    finally:
        commands.close()
        with contextlib.suppress(FileNotFoundError):
            (device.path / SOCKET_NAME).unlink()


async def cmd_sync(args: argparse.Namespace, out: Console) -> int:
    """Sync once: with the peer at ``HOST:PORT``, with every member met at ``--relay``, or
    with neither, one round with every known peer, relay and keeper (``Device.sync_now``)."""
    if args.address is not None and args.relay is not None:
        raise ValueError(
            "sync takes HOST:PORT or --relay ws://HOST:PORT (one of the two), or neither: "
            "every known peer, relay and keeper"
        )
    async with open_device(args.home) as device:
        if args.relay is not None:
            return await _sync_via_relay(device, args, out)
        if args.address is None:
            return await _sync_now(device, args, out)
        return await _sync_with(device, args, out)


async def _sync_now(device: Device, args: argparse.Namespace, out: Console) -> int:
    """``sync`` alone: one round with every known way, in one line; 1 if none synced."""
    summary = await device.sync_now(timeout=args.timeout)
    out.print(summary.line(), markup=False, soft_wrap=True)
    return 0 if summary.synced else 1


def _sync_bar(
    args: argparse.Namespace, out: Console, peer: str
) -> tuple[Progress, Callable[[SessionStats], None]]:
    """The transient progress bar of a one-shot sync (none off a terminal or with --quiet)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("syncing with {task.fields[peer]}"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[received]} in, {task.fields[sent]} out, {task.fields[mb]}"),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=out, transient=True, disable=args.quiet or not out.is_terminal)
    task = bar.add_task("sync", total=None, peer=peer, received=0, sent=0, mb="")

    def progress(stats: SessionStats) -> None:
        size = (stats.bytes_received + stats.bytes_sent) / 1e6
        bar.update(
            task, received=stats.entries_received, sent=stats.entries_sent, mb=f"{size:.1f} MB"
        )

    return bar, progress


async def _sync_via_relay(device: Device, args: argparse.Namespace, out: Console) -> int:
    """``sync --relay URL``: every member met at the relay, one line each."""
    bar, progress = _sync_bar(args, out, f"the members at {args.relay}")
    with bar:
        results = await device.sync_via_relay(args.relay, timeout=args.timeout, progress=progress)
    names = {g.id: g.name for g in device.groups()}
    for result in results:
        peer = _peer_words(device, result.peer)
        shared = ", ".join(names.get(g, g.hex()[:8]) for g in result.groups)
        out.print(
            f"Synced with {peer} through {args.relay} ({shared}): "
            f"{_count(result.entries_received)} in, {result.entries_sent} out",
            markup=False,
        )
    return 0


def _peer_words(device: Device, peer: DeviceId) -> str:
    """A peer's person name as a member of one of the groups (else its device id)."""
    for group in device.status().groups:
        for known in group.peers:
            if known.device_id == peer and known.name:
                return known.name
    return peer.hex()[:16]


async def _sync_with(device: Device, args: argparse.Namespace, out: Console) -> int:
    """``sync HOST:PORT``."""
    host, port = args.address
    bar, progress = _sync_bar(args, out, f"{host}:{port}")
    with bar:
        result = await device.sync_with(host, port, timeout=args.timeout, progress=progress)
    if not result.groups:
        raise MicrosyncError(
            f"{host}:{port} answered, but you have no group in common (nothing to sync)"
        )
    names = {g.id: g.name for g in device.groups()}
    shared = ", ".join(names.get(g, g.hex()[:8]) for g in result.groups)
    received = _count(result.entries_received)
    out.print(f"Synced with {host}:{port} ({shared}): {received} in, {result.entries_sent} out")
    return 0


async def cmd_status(args: argparse.Namespace, out: Console) -> int:
    """Whether this profile is online, where, through which relay, and per group who is
    connected now and in sync, when it last synced and how many entries a peer still lacks
    (run it while ``serve`` runs: it is handed to serve, which knows the live connections)."""
    async with open_device(args.home) as device:
        status, quiet = device.status(), device.quiet
    if args.json:
        out.print_json(json.dumps({**_status_json(status), "quiet": quiet}))
        return 0
    hush = "quiet (`microsync sync` syncs on demand)" if quiet else ""
    if not status.online:
        line = "Offline: run `microsync serve` to listen, discover members and sync live."
        out.print(line + (f" {hush[0].upper()}{hush[1:]}." if quiet else ""), markup=False)
    else:
        where = ", ".join(status.listen_addresses) or "no listener"
        hush = f"; {hush}" if quiet else ""
        out.print(f"Online: listening on {where}{_relay_words(status.relay)}{hush}", markup=False)
    for group in status.groups:
        out.print(_group_status(group), markup=False)
    return 0


def _relay_words(relay: RelayStatus | None) -> str:
    if relay is None:
        return ""
    return f"; relay {relay.url} ({'connected' if relay.connected else 'not connected'})"


def _status_json(status: DeviceStatus) -> dict[str, Any]:
    """``status --json``: times in unix milliseconds, ids in hex."""
    relay = status.relay
    return {
        "online": status.online,
        "listening": list(status.listen_addresses),
        "relay": None if relay is None else relay.url,
        "relay_connected": None if relay is None else relay.connected,
        "groups": [
            {
                "id": g.group_id.hex(),
                "name": g.name,
                "member": g.member,
                "epoch": g.epoch,
                "last_sync": g.last_sync,
                "pending_outgoing": g.pending_outgoing,
                "keepers": [
                    {
                        "url": k.url,
                        "connected": k.connected,
                        "status": k.status,
                        "unpushed": k.unpushed,
                    }
                    for k in g.keepers
                ],
                "peers": [
                    {
                        "device": p.device_id.hex(),
                        "name": p.name,
                        "address": p.address,
                        "connected": p.connected,
                        "synced": p.in_sync,
                        "last_sync": p.last_sync,
                        "pending_outgoing": p.pending_outgoing,
                    }
                    for p in g.peers
                ],
            }
            for g in status.groups
        ],
    }


def _when(ms: int) -> str:
    """A sync time, for a person: the time of day today, else the date and time."""
    moment = datetime.fromtimestamp(ms / 1000)
    today = moment.date() == datetime.now().date()
    return moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M")


def _peer_name(peer: PeerStatus) -> str:
    return peer.name or peer.device_id.hex()[:16]


def _group_status(group: GroupStatus) -> str:
    """One group's line for ``status``: who is connected, the last sync, what is pending."""
    if not group.member:
        return f"{group.name}: no longer a member"
    live = [p for p in group.peers if p.connected]
    if live:
        shown = ", ".join(
            f"{_peer_name(p)} ({'in sync' if p.in_sync else 'syncing'})" for p in live
        )
        line = f"{group.name}: epoch {group.epoch}, connected to {shown}"
    else:
        line = f"{group.name}: epoch {group.epoch}, no member connected"
    if group.last_sync is None:
        return line + "; never synced" + _keeper_words(group)
    latest = max(group.peers, key=lambda p: p.last_sync or 0)
    line += f"; last sync {_when(group.last_sync)} with {_peer_name(latest)}"
    lacking = [
        f"{_peer_name(p)} lacks {_count(p.pending_outgoing)}"
        for p in group.peers
        if p.pending_outgoing
    ]
    line += ("; " + ", ".join(lacking)) if lacking else "; nothing pending"
    return line + _keeper_words(group)


def _keeper_words(group: GroupStatus) -> str:
    return "".join(f"; keeper {k.url} {k.status}" for k in group.keepers)


def _count(entries: int | None) -> str:
    return "1 entry" if entries == 1 else f"{entries} entries"


async def cmd_relay(args: argparse.Namespace, out: Console) -> int:
    import asyncio

    from microsync.net.relay import RelayLimits, run_relay

    given = {
        "max_clients": args.max_clients,
        "max_clients_per_address": args.max_per_address,
        "unpaired_timeout": args.unpaired_timeout,
    }
    limits = RelayLimits(**{k: v for k, v in given.items() if v is not None})

    def ready(port: int) -> None:
        out.print(f"{_stamp()}  relay listening on ws://{args.host}:{port} (stores nothing)")

    with contextlib.suppress(asyncio.CancelledError), _listening(args.host, args.port):
        await run_relay(args.host, args.port, limits=limits, ready=ready)
    return 0


@contextlib.contextmanager
def _listening(host: str | None, port: int) -> Iterator[None]:
    """Say in the user's words why listening on ``host:port`` failed, and what to try."""
    try:
        yield
    except OSError as error:
        raise MicrosyncError(_listen_failure(error, host, port)) from None


def _listen_failure(error: OSError, host: str | None, port: int) -> str:
    """One line for a failed bind."""
    where = f"{host or 'all interfaces'}, port {port}"
    if isinstance(error, socket.gaierror) or (error.errno or 0) < 0:
        return f"cannot listen on {host!r}: not an address of this machine (try --bind 127.0.0.1)"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (is another microsync running? "
            "pick another with --port)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {error.strerror or error}"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from microsync.cli.args import peer_address, port_number, positive_count, relay_url
    from microsync.cli.social import parse_peer

    serve = sub.add_parser("serve", help="go online: listen, discover, sync live, log it")
    serve.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}"
    )
    serve.add_argument("--bind", help="listening address (default: all interfaces)")
    serve.add_argument("--no-lan", action="store_true", help="no mDNS discovery")
    serve.add_argument(
        "--relay", type=relay_url, help="meet members through this relay (ws://HOST:PORT)"
    )
    serve.add_argument(
        "--peer",
        type=peer_address,
        action="append",
        metavar="HOST:PORT",
        help="keep a connection to this peer",
    )
    serve.add_argument("--seconds", type=float, default=0, help="stop after this long")
    serve.add_argument(
        "--quiet",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="quiet mode, kept for next time: no heartbeat, redials, LAN discovery, relay or "
        "keeper links; the listener stays; `microsync sync` syncs on demand "
        "(default: as last set)",
    )
    serve.add_argument(
        "--show-text",
        action="store_true",
        help="log the text of posts and replies (a log file keeps what a delete purges)",
    )
    serve.add_argument(
        "--max-connections",
        type=positive_count,
        default=MAX_CONNECTIONS,
        metavar="N",
        help="inbound connections at once (default %(default)s)",
    )
    serve.add_argument(
        "--max-per-address",
        type=positive_count,
        default=MAX_PER_ADDRESS,
        metavar="N",
        help="inbound connections at once from one IP (default %(default)s)",
    )

    status = sub.add_parser("status", help="online or not, where, and who is connected per group")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    sync = sub.add_parser(
        "sync",
        help="sync once with a peer (HOST:PORT), the members at a relay, or (neither) every "
        "known peer, relay and keeper, and exit",
    )
    sync.add_argument("address", type=parse_peer, metavar="HOST:PORT", nargs="?")
    sync.add_argument(
        "--relay",
        type=relay_url,
        help="instead of HOST:PORT: sync with the members serving through this relay "
        "(ws://HOST:PORT)",
    )
    sync.add_argument("--timeout", type=float, default=120)
    sync.add_argument("--quiet", action="store_true", help="no progress bar")

    relay = sub.add_parser("relay", help="run a blind relay (forwards ciphertext only)")
    relay.add_argument("--host", default="127.0.0.1", help="address to listen on")
    relay.add_argument("--port", type=port_number, default=7426)
    relay.add_argument(
        "--max-clients",
        type=positive_count,
        default=None,
        metavar="N",
        help="clients at once (default 1000)",
    )
    relay.add_argument(
        "--max-per-address",
        type=positive_count,
        default=None,
        metavar="N",
        help="clients at once from one IP; behind a proxy, raise it (default 16)",
    )
    relay.add_argument(
        "--unpaired-timeout",
        type=float,
        default=None,
        metavar="S",
        help="close a client whose ids pair with nobody this long (default 300 s)",
    )
