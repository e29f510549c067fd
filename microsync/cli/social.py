"""Command-line commands for a group's everyday life: invite, join, post, reply, edit, delete,
react, feed (members and locations: :mod:`microsync.cli.members`, re-exported here)."""

from __future__ import annotations

import argparse
import io
import json
import re
import unicodedata
from typing import TYPE_CHECKING

from microsync.cli import members
from microsync.cli.args import DEFAULT_PORT
from microsync.cli.control import open_device, open_group
from microsync.cli.members import (  # their home before the split: importable from here too
    PRECISION_FLAGS,
    cmd_demote,
    cmd_leave,
    cmd_location_set,
    cmd_location_show,
    cmd_location_stop,
    cmd_promote,
    cmd_remove,
    find_member,
    member_id,
)
from microsync.errors import InviteError, MicrosyncError

if TYPE_CHECKING:  # the device stack (and rich) load only when a command runs
    from rich.console import Console

    from microsync.app.api import Post
    from microsync.node import Device, Group

__all__ = [
    "PRECISION_FLAGS",
    "cmd_delete",
    "cmd_demote",
    "cmd_edit",
    "cmd_feed",
    "cmd_invite",
    "cmd_join",
    "cmd_leave",
    "cmd_location_set",
    "cmd_location_show",
    "cmd_location_stop",
    "cmd_post",
    "cmd_promote",
    "cmd_react",
    "cmd_remove",
    "cmd_reply",
    "find_group",
    "find_member",
    "lan_addresses",
    "member_id",
    "qr_text",
]


def find_group(device: Device, name_or_id: str | None) -> Group:
    """The group named ``name_or_id`` (any case), else the one whose name or id starts with
    it; the only one if ``None``. One line listing the candidates otherwise."""
    groups = device.groups()
    if name_or_id is None:
        if len(groups) == 1:
            return groups[0]
        if not groups:
            raise MicrosyncError("this profile holds no group yet (microsync group create NAME)")
        raise MicrosyncError(f"name the group with --group: {_listed(groups)}")
    wanted = name_or_id.strip().lower()
    found = [g for g in groups if g.name.lower() == wanted]
    if not found:
        found = [
            g for g in groups if g.name.lower().startswith(wanted) or g.id.hex().startswith(wanted)
        ]
    if len(found) == 1:
        return found[0]
    if found:
        raise MicrosyncError(f"{name_or_id!r} matches several groups: {_listed(found)}")
    held = f"; this profile holds {_listed(groups)}" if groups else ""
    raise MicrosyncError(f"no group matches {name_or_id!r}{held}")


def _listed(groups: list[Group]) -> str:
    return ", ".join(f"{g.name} ({g.id.hex()[:8]})" for g in groups)


def _find_post(group: Group, prefix: str) -> bytes:
    matches = [p.id for p in group.feed() if p.id.hex().startswith(prefix.lower())]
    if len(matches) != 1:
        raise MicrosyncError(
            f"no post starts with {prefix!r}" if not matches else f"{prefix!r} is ambiguous"
        )
    return matches[0]


def lan_addresses(port: int) -> list[str]:
    """``host:port`` for this machine's IPv4 addresses, loopback last."""
    from microsync.node.runtime import machine_addresses

    return [f"{a}:{port}" for a in machine_addresses()]


_HALVES = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}


def qr_text(text: str, *, light: bool = False) -> str:
    """``text`` as a QR code drawn with half blocks, two rows of modules per line. For a dark
    terminal (the default) the blocks are the light modules; for a light one (``light``), the
    dark modules, with a margin of blank (light) space either way."""
    import segno

    if not light:
        buffer = io.StringIO()
        segno.make(text, error="m").terminal(out=buffer, compact=True)
        return buffer.getvalue()
    matrix = segno.make(text, error="m").matrix
    size, border = len(matrix), 2

    def ink(row: int, col: int) -> bool:
        return 0 <= row < size and 0 <= col < size and bool(matrix[row][col])

    span = range(-border, size + border)
    lines = (
        "".join(_HALVES[ink(row, col), ink(row + 1, col)] for col in span)
        for row in range(-border, size + border, 2)
    )
    return "\n".join(lines) + "\n"


async def cmd_invite(args: argparse.Namespace, out: Console) -> int:
    async with open_device(args.home) as device:
        group = find_group(device, args.group)
        online = device.port is not None or device.relay is not None
        addresses = args.at
        if not online and addresses is None:  # serve is not running: where it will listen
            addresses = lan_addresses(args.port or DEFAULT_PORT)
        invite = await group.invite(
            ttl=args.ttl, role=args.role, addresses=addresses, relay=args.relay
        )
        if args.json:
            out.print_json(json.dumps({"link": invite.link, "code": invite.code}))
            return 0
        from microsync.group.membership import INVITE_CLOCK_TOLERANCE_MS

        slack = INVITE_CLOCK_TOLERANCE_MS // 1000
        out.print(
            f"Invite to [bold]{group.name}[/] (single use, expires in {args.ttl:.0f} s, "
            f"give or take {slack} s for clocks that differ)"
        )
        if not args.no_qr:
            out.print(qr_text(invite.link, light=args.qr_light), end="", markup=False)
        out.print(f"link: {invite.link}", soft_wrap=True)
        out.print(f"code: [bold]{invite.code}[/]  (read it aloud; one wrong guess burns it)")
        if online:
            out.print("Your serve is running: they can join now.")
        else:
            out.print(f"Keep [bold]microsync --home {args.home} serve[/] running while they join.")
    return 0


async def cmd_join(args: argparse.Namespace, out: Console) -> int:
    if not args.invite.startswith("microsync:") and args.at is None:
        raise MicrosyncError(
            "a short code needs the inviter's address: microsync join CODE --at HOST:PORT "
            "(their invite shows it)"
        )
    async with open_device(args.home) as device:
        try:
            group = await device.join(args.invite, at=args.at)
        except InviteError as error:
            if args.invite.startswith("microsync:") or "does not know" not in str(error):
                raise
            raise InviteError(
                f"{error}: a code works once, and one wrong guess burns it "
                "(ask for a new invite; check the code and --at)"
            ) from None
        names = ", ".join(m.name for m in group.members())
        out.print(f"Joined [bold]{group.name}[/] ({names})")
    return 0


def _text(text: str, what: str) -> str:
    """A post's or reply's text: refused when there is nothing to read."""
    if not text.strip():
        raise MicrosyncError(f"{what} needs some text (it is empty or only spaces)")
    return text


async def cmd_post(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        post = await group.post(_text(args.text, "a post"), ttl=args.ttl)
        out.print(f"{post.id.hex()[:12]}  posted to {group.name}")
    return 0


async def cmd_reply(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        post = await group.reply(_find_post(group, args.post), _text(args.text, "a reply"))
        out.print(f"{post.id.hex()[:12]}  replied in {group.name}")
    return 0


async def cmd_edit(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        post = await group.edit(_find_post(group, args.post), _text(args.text, "an edit"))
        out.print(f"{post.id.hex()[:12]}  edited in {group.name}")
    return 0


async def cmd_delete(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        target = _find_post(group, args.post)
        await group.delete(target)
        out.print(
            f"{target.hex()[:12]}  deleted for everyone in {group.name} "
            "(each device purges its text as it hears of this)"
        )
    return 0


async def cmd_react(args: argparse.Namespace, out: Console) -> int:
    emoji = args.emoji.strip()
    if not is_one_emoji(emoji):
        raise MicrosyncError(f"a reaction is one emoji, such as 👍 or ❤️ (not {args.emoji!r})")
    async with open_device(args.home) as device:
        group = find_group(device, args.group)
        target = _find_post(group, args.post)
        if args.remove:
            post = next(p for p in group.feed() if p.id == target)
            if device.person_id not in post.reactions.get(emoji, frozenset()):
                raise MicrosyncError(f"you have not reacted {emoji} to that post")
            await group.unreact(target, emoji)
            out.print(f"Withdrew your {emoji} in {group.name}")
        else:
            await group.react(target, emoji)
            out.print(f"Reacted {emoji} in {group.name}")
    return 0


async def cmd_feed(args: argparse.Namespace, out: Console) -> int:
    async with open_group(args) as group:
        posts = group.feed(since="last_opened" if args.unread else None)
        if args.limit:
            posts = posts[: args.limit]
        if args.json:
            out.print_json(json.dumps([_post_json(p) for p in posts]))
            return 0
        if not posts:
            out.print("Nothing new." if args.unread else "No posts yet.")
        for post, depth in threaded(posts):
            out.print(_post_line(post, depth), markup=False)
    return 0


def _post_json(p: Post) -> dict[str, object]:
    return {
        "id": p.id.hex(),
        "author": p.author_name,
        "text": p.text,
        "created_at": p.created_at.isoformat(),
        "reply_to": p.reply_to.hex() if p.reply_to else None,
        "reactions": {e: len(who) for e, who in p.reactions.items()},
        "edited": p.edited,
    }


def threaded(posts: list[Post]) -> list[tuple[Post, int]]:
    """``posts`` (newest first) as threads: each post not replying to a shown one, newest
    first, followed by its replies oldest first, nested; with each post's depth."""
    shown = {p.id for p in posts}
    replies: dict[bytes, list[Post]] = {}
    for p in reversed(posts):
        if p.reply_to is not None and p.reply_to in shown:
            replies.setdefault(p.reply_to, []).append(p)
    found: list[tuple[Post, int]] = []

    def walk(post: Post, depth: int) -> None:
        found.append((post, depth))
        for child in replies.get(post.id, []):
            walk(child, depth + 1)

    for p in posts:
        if p.reply_to is None or p.reply_to not in shown:
            walk(p, 0)
    return found


def _post_line(p: Post, depth: int) -> str:
    """One post as the feed shows it; later lines of a multi-line text keep its indent."""
    when = p.created_at.strftime("%Y-%m-%d %H:%M")
    reactions = " ".join(f"{e}{len(who)}" for e, who in p.reactions.items())
    arrow = "  " * (depth - 1) + "  ↳ " if depth else ""
    head = f"{p.id.hex()[:12]}  {when}  {arrow}{p.author_name}: "
    text = p.text if p.text is not None else "(deleted)"
    edited = " (edited)" if p.edited else ""
    body = text.replace("\n", "\n" + " " * len(head))
    return f"{head}{body}{edited}  {reactions}".rstrip()


_MODIFIERS = {0xFE0E, 0xFE0F, *range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)}
_KEYCAP = re.compile("[#*0-9]\ufe0f?\u20e3")


def is_one_emoji(text: str) -> bool:
    """Is ``text`` exactly one emoji: a symbol with its modifiers (skin tone, presentation,
    tags), a ZWJ sequence of those, a flag (two regional indicators) or a keycap?"""
    if _KEYCAP.fullmatch(text):
        return True
    if len(text) == 2 and all(0x1F1E6 <= ord(c) <= 0x1F1FF for c in text):
        return True
    return bool(text) and all(_one_symbol(part) for part in text.split("\u200d"))


def _one_symbol(part: str) -> bool:
    return (
        bool(part)
        and unicodedata.category(part[0]) == "So"
        and not 0x1F1E6 <= ord(part[0]) <= 0x1F1FF  # half a flag
        and all(ord(c) in _MODIFIERS for c in part[1:])
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's commands on the top-level parser."""
    from microsync.cli.args import peer_address, port_number, positive_count, relay_url

    invite = sub.add_parser("invite", help="invite someone: a link, a QR code and a short code")
    invite.add_argument("--group", help="group name or id prefix")
    invite.add_argument("--ttl", type=float, default=3600, help="seconds until it expires")
    invite.add_argument("--role", choices=["member", "admin"], default="member")
    invite.add_argument(
        "--at",
        type=peer_address,
        action="append",
        metavar="HOST:PORT",
        help="where the joiner reaches you (default: where your serve listens)",
    )
    invite.add_argument(
        "--port",
        type=port_number,
        help="your serve port (default: the running serve's, else 7425)",
    )
    invite.add_argument(
        "--relay", type=relay_url, help="a relay (ws://HOST:PORT) to put in the link"
    )
    invite.add_argument("--no-qr", action="store_true", help="do not draw the QR code")
    invite.add_argument(
        "--qr-light", action="store_true", help="draw the QR code for a light terminal background"
    )
    invite.add_argument("--json", action="store_true", help="machine-readable output")

    join = sub.add_parser("join", help="join a group with an invite link or short code")
    join.add_argument("invite", help="the link (microsync:...) or the short code")
    join.add_argument(
        "--at", type=peer_address, metavar="HOST:PORT", help="the inviter's address (for a code)"
    )

    post = sub.add_parser("post", help="post to a group")
    post.add_argument("text")
    post.add_argument("--group", help="group name or id prefix")
    post.add_argument("--ttl", type=float, help="disappear after this many seconds")

    reply = sub.add_parser("reply", help="reply to a post")
    reply.add_argument("post", help="post id prefix (as `feed` shows it)")
    reply.add_argument("text")
    reply.add_argument("--group", help="group name or id prefix")

    edit = sub.add_parser("edit", help="change the text of one of your posts")
    edit.add_argument("post", help="post id prefix (as `feed` shows it)")
    edit.add_argument("text")
    edit.add_argument("--group", help="group name or id prefix")

    delete = sub.add_parser("delete", help="delete one of your posts, for everyone")
    delete.add_argument("post", help="post id prefix (as `feed` shows it)")
    delete.add_argument("--group", help="group name or id prefix")

    react = sub.add_parser("react", help="react to a post with an emoji")
    react.add_argument("post", help="post id prefix")
    react.add_argument("emoji")
    react.add_argument("--remove", action="store_true", help="withdraw your reaction")
    react.add_argument("--group", help="group name or id prefix")

    feed = sub.add_parser("feed", help="show a group's posts, newest first")
    feed.add_argument("--group", help="group name or id prefix")
    feed.add_argument("--unread", action="store_true", help="only what is new; marks it read")
    feed.add_argument("--limit", type=positive_count, help="show at most this many posts")
    feed.add_argument("--json", action="store_true", help="machine-readable output")

    members.add_parsers(sub)


def parse_peer(text: str) -> tuple[str, int]:
    """``HOST:PORT`` for argparse (a clear error otherwise)."""
    from microsync.node.runtime import split_address

    try:
        return split_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
