"""The vault's bulk path vs its floors, measured in one run.

    python -m bench.vault [--mb 1024] [--chunk-kib 1024] [--repeat 3] [--dir DIR]

Rows (each moves the same ``--mb`` MiB file over loopback TCP on 127.0.0.1; sender and receiver
are tasks of ONE process, as two devices in one process are, so the rows compare like with
like on one core):

* **socket**: raw asyncio TCP, 1 MiB writes from memory, the reader discards: the floor;
* **pipeline**: the raw encrypted pipeline with the fastest primitives here and no protocol:
  read the file, ChaCha20-Poly1305 (``cryptography``) + keyed BLAKE3 per chunk, a 4-byte
  length prefix, socket, then BLAKE3 check + decrypt + write to a file;
* **vault add**: ``group.vault.add(path)``: read, seal, hash, store each chunk (fsynced file);
* **vault fetch**: ``group.vault.fetch(ref, dest)`` on a second device that holds no chunk,
  from the first over a live sync session (Noise transport, chunk messages, id check,
  decrypt, write into ``dest``), under the ``on_demand`` policy (nothing else written) and
  the default ``thumbnails`` one (each sealed chunk also kept in the chunk store).

Medians of ``--repeat`` runs (a fetch is repeated after ``vault.evict``). Files live in a
temporary directory under ``--dir`` (default: the system's temporary directory); the disk is
part of every row but the socket one, so run it with ``--dir /dev/shm`` too to see the floor
without the disk. The vault rows run in a child process that also reports its memory:
``peak`` is VmHWM, and ``delta`` is the peak above the resident size just before the
operation (the high-water mark is reset through ``/proc/self/clear_refs``), i.e. what adding
or fetching the file costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import blake3
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bench.report import Figure, Report

MiB = 1024 * 1024


def write_source(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as file:
        left = size
        while left > 0:
            file.write(block[: min(left, MiB)])
            left -= MiB


# --- floors ----------------------------------------------------------------------------------


async def _loopback(send: Any, receive: Any) -> float:
    """Seconds from connecting to the receiver's end, for a sender and a receiver coroutine."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receive(reader)
        writer.close()
        done.set_result(None)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, limit=4 * MiB)
    port = server.sockets[0].getsockname()[1]
    start = time.perf_counter()
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await send(writer)
    writer.close()
    await done
    elapsed = time.perf_counter() - start
    server.close()
    await server.wait_closed()
    return elapsed


async def raw_socket(size: int) -> float:
    block = os.urandom(MiB)

    async def send(writer: asyncio.StreamWriter) -> None:
        for start in range(0, size, MiB):
            writer.write(block[: min(MiB, size - start)])
            await writer.drain()

    async def receive(reader: asyncio.StreamReader) -> None:
        got = 0
        while got < size:
            got += len(await reader.read(MiB))

    return await _loopback(send, receive)


async def raw_pipeline(source: Path, dest: Path, chunk: int) -> float:
    key, hash_key = os.urandom(32), os.urandom(32)
    aead = ChaCha20Poly1305(key)

    async def send(writer: asyncio.StreamWriter) -> None:
        with open(source, "rb") as file:
            index = 0
            while piece := file.read(chunk):
                sealed = aead.encrypt(index.to_bytes(12, "big"), piece, b"")
                digest = blake3.blake3(sealed, key=hash_key).digest()
                writer.write(len(sealed).to_bytes(4, "big") + digest)
                writer.write(sealed)
                await writer.drain()
                index += 1
        writer.write(b"\0\0\0\0")

    async def receive(reader: asyncio.StreamReader) -> None:
        with open(dest, "wb") as file:
            index = 0
            while n := int.from_bytes(await reader.readexactly(4), "big"):
                digest = await reader.readexactly(32)
                sealed = await reader.readexactly(n)
                assert blake3.blake3(sealed, key=hash_key).digest() == digest
                file.write(aead.decrypt(index.to_bytes(12, "big"), sealed, b""))
                index += 1
            file.flush()
            os.fsync(file.fileno())

    return await _loopback(send, receive)


# --- the vault, in a child process -----------------------------------------------------------


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> int:
    """Reset the resident high-water mark; return the resident size now."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss("VmRSS")


async def vault_run(root: Path, source: Path, chunk: int, repeat: int) -> dict[str, float]:
    """Add ``source`` on one device and fetch it on another over loopback TCP."""
    import microsync

    out: dict[str, float] = {}
    async with (
        await microsync.Device.open(root / "alice", name="Alice") as alice,
        await microsync.Device.open(root / "bob", name="Bob") as bob,
    ):
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        invite = await family.invite(ttl=600)
        theirs = await bob.join(invite.link)
        base = _reset_peak()
        start = time.perf_counter()
        ref = await family.vault.add(source, chunk_size=chunk)
        out["add_s"] = time.perf_counter() - start
        out["add_delta"] = _rss("VmHWM") - base
        await bob.start(lan=False, port=None, peers=(f"127.0.0.1:{alice.port}",))
        while not any(p.synced for p in bob.peers()):
            await asyncio.sleep(0.01)
        theirs.vault.refresh()
        base = _reset_peak()
        out["base_rss"] = base
        for policy in ("on_demand", "thumbnails"):
            theirs.vault.policy = policy
            times = []
            for _ in range(repeat):
                theirs.vault.evict(ref)
                start = time.perf_counter()
                await theirs.vault.fetch(ref, root / "fetched", timeout=60)
                times.append(time.perf_counter() - start)
            out[f"fetch_{policy}_s"] = statistics.median(times)
        out["fetch_delta"] = _rss("VmHWM") - base
        out["peak"] = _rss("VmHWM")
    same = _same(source, root / "fetched")
    out["identical"] = float(same)
    return out


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            p, q = x.read(MiB), y.read(MiB)
            if p != q:
                return False
            if not p:
                return True


def run_child(mb: int, chunk: int, repeat: int = 1, where: str | None = None) -> dict[str, float]:
    """Run :func:`vault_run` in a fresh interpreter; its measurements as a dict."""
    code = f"import bench.vault as v; v._child({mb}, {chunk}, {repeat}, {where!r})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child(mb: int, chunk: int, repeat: int, where: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        write_source(source, mb * MiB)
        print(json.dumps(asyncio.run(vault_run(root, source, chunk, repeat))))


def measure(mb: int, chunk: int, repeat: int, where: str | None = None) -> dict[str, float]:
    """Median seconds of the socket and pipeline floors, then the vault rows (child)."""
    size = mb * MiB
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        source = Path(tmp) / "source.bin"
        write_source(source, size)
        socket_s = statistics.median(asyncio.run(raw_socket(size)) for _ in range(repeat))
        pipeline_s = statistics.median(
            asyncio.run(raw_pipeline(source, Path(tmp) / "out.bin", chunk)) for _ in range(repeat)
        )
    return {"socket_s": socket_s, "pipeline_s": pipeline_s, **run_child(mb, chunk, repeat, where)}


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: 64 MiB once (quick) or 1 GiB, median of 3 (full), on disk."""
    mb, repeat = (64, 1) if quick else (1024, 3)
    m = measure(mb, MiB, repeat)
    pipeline = m["pipeline_s"]

    def row(measure: str, key: str) -> Figure:
        return Figure(
            bench="vault",
            measure=f"{measure}, {mb:,} MiB",
            value=f"{mb * MiB / m[key] / 1e6:,.0f} MB/s",
            floor=f"{mb * MiB / pipeline / 1e6:,.0f} MB/s (raw encrypted pipeline)",
            ratio=m[key] / pipeline,
            target="<= 1.43",
        )

    return Report(
        figures=[
            row("vault add", "add_s"),
            row("vault fetch (on_demand)", "fetch_on_demand_s"),
            row("vault fetch (thumbnails)", "fetch_thumbnails_s"),
        ],
        notes=[
            f"raw loopback TCP {mb * MiB / m['socket_s'] / 1e6:,.0f} MB/s; memory: add "
            f"+{m['add_delta'] / MiB:.1f} MiB, fetch +{m['fetch_delta'] / MiB:.1f} MiB; "
            f"fetched file identical: {bool(m['identical'])}"
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="chunk size in KiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (median)")
    parser.add_argument("--dir", help="where the files go (default: the temporary directory)")
    args = parser.parse_args()
    size, chunk = args.mb * MiB, args.chunk_kib * 1024
    vault = measure(args.mb, chunk, args.repeat, args.dir)
    socket_s, pipeline_s = vault["socket_s"], vault["pipeline_s"]
    mb = size / 1e6
    rows = [
        ("socket (raw loopback TCP)", socket_s),
        ("pipeline (enc+hash+socket+dec+hash+write)", pipeline_s),
        ("vault add (read+seal+hash+store)", vault["add_s"]),
        ("vault fetch, on_demand (session+verify+decrypt+write)", vault["fetch_on_demand_s"]),
        ("vault fetch, thumbnails (... + keep sealed chunks)", vault["fetch_thumbnails_s"]),
    ]
    where = args.dir or tempfile.gettempdir()
    print(f"vault bench: {args.mb} MiB, {args.chunk_kib} KiB chunks, files in {where}")
    for name, seconds in rows:
        ratio = pipeline_s / seconds
        print(f"  {name:52} {mb / seconds:8.0f} MB/s   {ratio:5.2f}x of pipeline")
    fetch_ratio = socket_s / vault["fetch_on_demand_s"]
    print(f"  fetch / socket: {fetch_ratio:.2f}x   identical: {bool(vault['identical'])}")
    add, fetch = vault["add_delta"] / MiB, vault["fetch_delta"] / MiB
    base, peak = vault["base_rss"] / MiB, vault["peak"] / MiB
    print(
        f"  memory: add +{add:.1f} MiB, fetch +{fetch:.1f} MiB over {base:.0f} MiB resident"
        f" (peak {peak:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
