"""Print what two devices say to each other in a sync, record by record.

    python examples/sync_transcript.py [DIR]

Bob joins Alice's group by invite, then, while both are connected live, Alice posts once. Every
frame of the handshake and every record of the session is listed with its direction, size and
message type (the contents are encrypted on the wire; the session messages are decoded here
from inside, where the devices see them).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import microsync
from microsync.net import connection as connection_module
from microsync.net import stream as stream_module
from microsync.protocol.messages import decode_message, message_type

LINES: list[str] = []


def watch(alice_port: int) -> None:
    """Log Bob's side: raw bytes of the handshake, then each session record he sends or gets."""
    send = connection_module.SecureStream.send
    receive = connection_module.SecureStream.receive
    write = stream_module.TcpStream.write

    def mine(stream: object) -> bool:
        return str(getattr(stream, "peer", "")).endswith(f":{alice_port}")

    async def logged_write(self: stream_module.TcpStream, data: bytes) -> None:
        if mine(self) and not getattr(self, "_secure", False):
            LINES.append(f"  Bob  -> Alice  {len(data):5} B  handshake bytes")
        await write(self, data)

    async def logged_send(self: connection_module.SecureStream, record: bytes) -> None:
        if mine(self.stream):
            self.stream._secure = True  # type: ignore[attr-defined]
            try:
                text = _describe(decode_message(record))
            except microsync.MicrosyncError:
                text = "(invite pairing message)"
            LINES.append(f"  Bob  -> Alice  {len(record):5} B  {text}")
        await send(self, record)

    async def logged_receive(self: connection_module.SecureStream) -> bytes | None:
        record = await receive(self)
        if record is not None and mine(self.stream):
            self.stream._secure = True  # type: ignore[attr-defined]
            try:
                text = _describe(decode_message(record))
            except microsync.MicrosyncError:
                text = "(invite pairing message)"
            LINES.append(f"  Alice -> Bob   {len(record):5} B  {text}")
        return record

    stream_module.TcpStream.write = logged_write  # type: ignore[method-assign]
    connection_module.SecureStream.send = logged_send  # type: ignore[method-assign]
    connection_module.SecureStream.receive = logged_receive  # type: ignore[method-assign]


def _describe(message: object) -> str:
    kind = message_type(message).name  # type: ignore[arg-type]
    details = {
        "HELLO": lambda m: f"{len(m.tags)} tags (real ones and random padding)",
        "DIGEST": lambda m: "frontier digest",
        "FRONTIER": lambda m: f"{len(m.heads)} feed heads",
        "ENTRIES": lambda m: f"{len(m.items)} entries",
        "CERTIFICATES": lambda m: f"{len(m.certificates)} device certificates",
        "CREDIT": lambda m: "credit for more batches",
    }
    describe = details.get(kind)
    return kind + (f": {describe(message)}" if describe else "")


async def main(root: Path) -> None:
    async with (
        await microsync.Device.open(root / "alice", name="Alice") as alice,
        await microsync.Device.open(root / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        assert alice.port is not None
        family = await alice.create_group("Family")
        await family.post("before Bob")
        invite = await family.invite(ttl=600)
        watch(alice.port)
        LINES.append("Bob redeems an invite; the connection goes on as a sync session:")
        group = await bob.join(invite.link)
        LINES.append("Bob connects again, already in sync:")
        await bob.sync_with("127.0.0.1", alice.port)
        LINES.append("Bob stays connected live; Alice posts once:")
        await bob.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.port}",))
        for _ in range(500):
            if any(p.synced for p in bob.peers()):
                break
            await asyncio.sleep(0.01)
        post = await family.post("live")
        for _ in range(500):
            if any(p.id == post.id for p in group.feed()):
                break
            await asyncio.sleep(0.01)
        await bob.stop()
    print("\n".join(LINES))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())))
