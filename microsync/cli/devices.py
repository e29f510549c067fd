"""Command-line commands for one person's devices: ``link`` (on the new device), ``devices``
(the list), ``devices add`` (on an existing device: a QR code, a link and a short code) and
``devices revoke ID`` (a lost device)."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from microsync.cli.args import DEFAULT_PORT
from microsync.cli.control import open_device
from microsync.errors import MicrosyncError

if TYPE_CHECKING:  # the device stack (and rich) load only when a command runs
    from rich.console import Console

    from microsync.node.devices import DeviceRecord

__all__ = ["add_parsers", "cmd_devices", "cmd_link", "describe"]


async def cmd_link(args: argparse.Namespace, out: Console) -> int:
    from microsync.node import Device

    if not args.pairing.startswith("microsync:") and args.at is None:
        raise MicrosyncError(
            "a short code needs the address of your other device: microsync link CODE "
            "--at HOST:PORT (its `devices add` shows it)"
        )
    name = args.name or (platform.node() or "new device")[:64]
    device = await Device.link(args.home, args.pairing, name=name, at=args.at, relay=args.relay)
    async with device:
        out.print(f"Linked [bold]{device.name}[/] in {args.home}: a device of the same person")
        for group in device.groups():
            out.print(f"  {group.name}  ({len(group.feed())} posts here so far)")
        if not device.groups():
            out.print("  (that person is in no group yet)")
    return 0


async def cmd_devices(args: argparse.Namespace, out: Console) -> int:
    action = getattr(args, "devices_command", None)
    if action == "add":
        return await _add(args, out)
    if action == "revoke":
        return await _revoke(args, out)
    async with open_device(args.home) as device:
        records = device.devices()
        if args.json:
            out.print_json(json.dumps([_as_json(r) for r in records]))
            return 0
        for record in records:
            out.print(f"{record.id_prefix}  {record.name}  {describe(record)}")
    return 0


def describe(record: DeviceRecord) -> str:
    """``this device``, ``revoked``, ``last seen 2026-12-02 03:40 UTC`` or ``never seen``."""
    if record.this:
        return "this device"
    if record.revoked:
        return "revoked"
    if record.last_seen is None:
        return "not synced with yet"
    when = datetime.fromtimestamp(record.last_seen / 1000, UTC)
    return f"last seen {when:%Y-%m-%d %H:%M} UTC"


def _as_json(record: DeviceRecord) -> dict[str, object]:
    return {
        "id": record.id.hex(),
        "name": record.name,
        "this": record.this,
        "last_seen": record.last_seen,
        "revoked": record.revoked,
    }


async def _add(args: argparse.Namespace, out: Console) -> int:
    from microsync.cli.social import lan_addresses, qr_text

    async with open_device(args.home) as device:
        online = device.port is not None or device.relay is not None
        addresses = args.at
        if not online and addresses is None:  # serve is not running: where it will listen
            addresses = lan_addresses(args.port or DEFAULT_PORT)
        pairing = await device.link_device(ttl=args.ttl, addresses=addresses, relay=args.relay)
        if args.json:
            out.print_json(json.dumps({"link": pairing.link, "code": str(pairing.code)}))
            return 0
        out.print(
            f"Link a new device of [bold]{device.name}[/]'s person (single use, expires in "
            f"{args.ttl:.0f} s). It gets every group, and your recovery key: link only your own."
        )
        if not args.no_qr:
            out.print(qr_text(pairing.link, light=args.qr_light), end="", markup=False)
        out.print(f"link: {pairing.link}", soft_wrap=True)
        out.print(f"code: [bold]{pairing.code}[/]  (one wrong guess burns it)")
        out.print(
            "On the new device: [bold]microsync --home DIR link LINK[/] (or CODE --at HOST:PORT)"
        )
        if not online:
            out.print(f"Keep [bold]microsync --home {args.home} serve[/] running meanwhile.")
    return 0


async def _revoke(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        prefix = args.device.strip().lower()
        named = [r for r in device.devices() if r.id.hex().startswith(prefix)]
        await device.revoke_device(args.device)  # one line if it names none, or several
        out.print(
            f"Revoked [bold]{named[0].name}[/] ({named[0].id_prefix}) in every group: it reads "
            "nothing new, and nothing it writes from now on counts. Sync with the others "
            "(or keep serve running) to tell them."
        )
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``link`` and ``devices`` on the top-level parser."""
    from microsync.cli.args import peer_address, port_number, relay_url

    link = sub.add_parser("link", help="make this profile a new device of a person you are")
    link.add_argument("pairing", metavar="LINK_OR_CODE", help="from `devices add` on your device")
    link.add_argument(
        "--at", type=peer_address, metavar="HOST:PORT", help="your other device (for a code)"
    )
    link.add_argument("--name", help="this device's name (default: this machine's name)")
    link.add_argument("--relay", type=relay_url, help="a relay to reach your other device through")

    devices = sub.add_parser("devices", help="your devices: list, add (link one), revoke")
    devices.add_argument("--json", action="store_true", help="machine-readable output")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION")
    add = actions.add_parser("add", help="a QR code, link and short code for a new device")
    add.add_argument("--ttl", type=float, default=600, help="seconds until it expires")
    add.add_argument(
        "--at",
        type=peer_address,
        action="append",
        metavar="HOST:PORT",
        help="where the new device reaches this one (default: where your serve listens)",
    )
    add.add_argument("--port", type=port_number, help="your serve port (default: 7425)")
    add.add_argument("--relay", type=relay_url, help="a relay (ws://HOST:PORT) to put in the link")
    add.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    add.add_argument("--qr-light", action="store_true", help="a QR code for a light terminal")
    add.add_argument("--json", action="store_true", help="machine-readable output")
    revoke = actions.add_parser("revoke", help="revoke a lost device in every group")
    revoke.add_argument("device", metavar="ID", help="its id or id prefix (see `devices`)")
