"""A chat between two terminals on one LAN (or one machine).

Terminal 1 (creates the room and prints an invite):

    python examples/lan_chat.py chat --home ./alice --name Alice --create "Chat"

Terminal 2 (paste the link it printed):

    python examples/lan_chat.py chat --home ./bob --name Bob --join 'microsync:join?...'

Type a line and press Enter to send it; Ctrl-D to leave. Devices on the same LAN find each
other by mDNS; the invite link also carries the first device's address. With a DIR argument
only (``python examples/lan_chat.py DIR``) the script runs both sides itself, over loopback
TCP, and exits: that is how the test suite runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import microsync


async def show_messages(group: microsync.Group, me: bytes) -> None:
    """Print what others say, as it arrives."""
    async for event in group.events():
        post = event.post
        if event.kind == "post" and post is not None and post.author != me:
            print(f"{post.author_name}: {post.text}", flush=True)
        elif event.kind == "member_joined":
            print("(someone joined)", flush=True)


async def chat(home: str, name: str, create: str | None, join: str | None, port: int) -> None:
    async with await microsync.Device.open(home, name=name) as device:
        await device.start(lan=True, port=port)
        if create:
            group = await device.create_group(create)
            invite = await group.invite(ttl=3600)
            print(f"Room {create!r} is open. On the other terminal run:\n")
            command = "python examples/lan_chat.py chat --home ./other --name Bob --join"
            print(f"  {command} '{invite.link}'\n")
        elif join:
            group = await device.join(join)
            print(f"Joined {group.name!r} with {', '.join(m.name for m in group.members())}.")
        else:
            group = device.groups()[0]
        listener = asyncio.create_task(show_messages(group, device.person_id))
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                if line.strip():
                    await group.post(line.rstrip("\n"))
        finally:
            listener.cancel()


async def self_test(root: Path) -> None:
    """Both sides in this process, over 127.0.0.1 (no mDNS), with scripted lines."""
    async with (
        await microsync.Device.open(root / "alice", name="Alice") as alice,
        await microsync.Device.open(root / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        room = await alice.create_group("Chat")
        invite = await room.invite(ttl=600)
        bob_room = await bob.join(invite.link)
        await bob.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.port}",))
        script = [(room, "Hi Bob, can you hear me?"), (bob_room, "Loud and clear!")]
        for speaker, text in script:
            post = await speaker.post(text)
            other = bob_room if speaker is room else room
            for _ in range(500):
                if any(p.id == post.id for p in other.feed()):
                    break
                await asyncio.sleep(0.01)
            seen = other.post_by_id(post.id)
            print(f"{seen.author_name}: {seen.text}")
        assert [p.text for p in room.feed()] == ["Loud and clear!", "Hi Bob, can you hear me?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("chat", help="chat from this terminal")
    run.add_argument("--home", required=True)
    run.add_argument("--name", required=True)
    run.add_argument("--create", help="open a new room with this name")
    run.add_argument("--join", help="join with an invite link")
    run.add_argument("--port", type=int, default=0, help="listening port (0: 7425 if free)")
    if len(sys.argv) <= 2 and (len(sys.argv) == 1 or sys.argv[1] != "chat"):
        root = Path(sys.argv[1]) if len(sys.argv) == 2 else Path(tempfile.mkdtemp())
        asyncio.run(self_test(root))
        return
    args = parser.parse_args()
    asyncio.run(chat(args.home, args.name, args.create, args.join, args.port))


if __name__ == "__main__":
    main()
