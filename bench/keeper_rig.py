"""What the keeper benchmarks share: a keeper (and the network floor's server) in a subprocess
on 127.0.0.1, and records made of real post entries.

``python -m bench.keeper_rig --echo`` is the network floor's server: a ``websockets`` server
with the keeper's settings that answers every binary message with the bytes of a 64-item
STORED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import microsync
from microsync import encoding
from microsync.feed import parse_entry
from microsync.group.mailbox import ITEM_OVERHEAD, ITEM_SIZES, SealedItem
from microsync.net.keeper_client import Record
from microsync.protocol.keeper import BATCH_BYTES, ITEM_ROOM, MAX_BATCH, MAX_MESSAGE, Stored, encode

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"keeper listening on (ws://127\.0\.0\.1:\d+)")


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def _scratch(prefix: str) -> str:
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=where)


# ---------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class Running:
    """A subprocess listening on 127.0.0.1."""

    process: subprocess.Popen[str]
    url: str

    def memory(self) -> tuple[int, int]:
        """``(VmRSS, VmHWM)`` of the process, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss, peak = (int(re.findall(rf"{k}:\s+(\d+) kB", status)[0]) for k in ("VmRSS", "VmHWM"))
        return rss * 1024, peak * 1024


@contextlib.contextmanager
def _process(
    command: list[str], pattern: re.Pattern[str], *, stdin: bool = False
) -> Iterator[Running]:
    """Run ``command`` until the block ends (its stdin closed, then SIGINT, then SIGKILL);
    ``Running.url`` is the first group of ``pattern`` in its first line of output."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = pattern.search(line)
        if found is None:
            raise RuntimeError(
                f"did not start: {line}{process.stderr.read() if process.stderr else ''}"
            )
        yield Running(process, found[1])
    finally:
        if process.stdin is not None:
            process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def keeper(data: Path) -> contextlib.AbstractContextManager[Running]:
    """A real ``microsync keeper --data DATA`` on 127.0.0.1, stopped with SIGINT at the end
    (as Ctrl-C, or SIGTERM: it commits what is queued and closes its store)."""
    command = [sys.executable, "-m", "microsync", "keeper", "--data", str(data), "--port", "0"]
    return _process(command, _LISTENING)


def echo_server() -> contextlib.AbstractContextManager[Running]:
    """The network floor's server: ``python -m bench.keeper_rig --echo``."""
    command = [sys.executable, "-m", "bench.keeper_rig", "--echo"]
    return _process(command, re.compile(r"echo listening on (ws://127\.0\.0\.1:\d+)"))


ACK = encode(Stored(request=1, cursors=tuple(range(1, 65)), duplicates=(False,) * 64))


async def serve_echo() -> None:
    """Answer every binary message with :data:`ACK`, with the keeper's server settings."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handle(conn: ServerConnection) -> None:
        async for _message in conn:
            await conn.send(ACK)

    async with serve(
        handle,
        "127.0.0.1",
        0,
        compression=None,
        max_size=MAX_MESSAGE,
        max_queue=4,
        write_limit=256 * 1024,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"echo listening on ws://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


# ---------------------------------------------------------------- the records


async def _posts(path: Path, posts: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    async with await microsync.Device.open(path, name="Writer") as device:
        group = await device.create_group("Family")
        for i in range(posts):
            await group.post(f"post {i}: " + "x" * rng.randrange(20, 200))
        items = device.entries_after(group.id)
    return [
        Record(name=bytes(parse_entry(wire).id), data=encoding.encode([wire, body or b""]))
        for wire, body in items
    ]


def post_records(posts: int, seed: int = 1) -> list[Record]:
    """The records of ``posts`` real posts (and the group's own first entries)."""
    scratch = _scratch("microsync-bench-keeper-")
    try:
        return asyncio.run(_posts(Path(scratch) / "writer", posts, seed))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def batches(sealed: Sequence[SealedItem]) -> list[tuple[SealedItem, ...]]:
    """``sealed`` cut into PUSH batches by the client's rule (64 items, one bucket)."""
    out: list[tuple[SealedItem, ...]] = []
    batch: list[SealedItem] = []
    size = 0
    for item in sealed:
        cost = len(item.payload) + ITEM_ROOM
        if batch and (len(batch) == MAX_BATCH or size + cost > BATCH_BYTES):
            out.append(tuple(batch))
            batch, size = [], 0
        batch.append(item)
        size += cost
    if batch:
        out.append(tuple(batch))
    return out


def shares(records: Sequence[Record], clients: int) -> list[list[Record]]:
    """Each client's records: every ``clients``-th one."""
    return [list(records[i::clients]) for i in range(clients)]


def sealed_size(record: Record) -> int:
    """Bytes of ``record``'s sealed payload (its padded size, nonce and tag)."""
    return next(s for s in ITEM_SIZES if 4 + len(record.data) <= s) + ITEM_OVERHEAD


if __name__ == "__main__" and sys.argv[1:] == ["--echo"]:
    asyncio.run(serve_echo())
