"""Throughput through the microsync relay vs plain loopback TCP, measured in one run.

    python -m bench.relay [--mb 64] [--write 65537] [--repeat 3]

One sender streams ``--mb`` MiB to one receiver in writes of ``--write`` bytes (default: one
maximal Noise frame, 2-byte length + 65,535 bytes) and the receiver reads until it has it all.
The time runs from the first write to the last byte read. Sender and receiver are tasks of this
process in every row; anything in the middle runs in a child process (spawned, bound to
127.0.0.1 port 0, terminated in a ``finally``):

* **tcp direct**: sender -> receiver over one loopback TCP connection (asyncio streams);
* **tcp forwarder**: sender -> a plain asyncio TCP forwarder (child: streams, read up to
  256 KiB, write, drain) -> receiver: the cost of one extra hop with no framing at all;
* **protocol fwd**: the same hop on ``asyncio.Protocol`` (each read written to the other
  transport, reading paused while it is above its high-water mark): the cheapest forwarder
  asyncio gives, as the relay is built the same way;
* **relay**: :class:`RelayClient` -> :class:`RelayServer` (child) -> :class:`RelayClient`:
  WebSocket framing (``microsync.net.ws_conn``: masked client frames, compression off),
  padding to buckets, the broker's checks and channel rewrite, the channel multiplexing and
  the client's bounded per-channel buffers.

The forwarder and the relay's middle read the same way (asyncio's 256 KiB reads) and both
apply back-pressure; each path is timed the same way (``transfer``: first write to last byte
read) with the same sender and receiver loops. Figures are medians (and bests) of
``--repeat`` runs, the paths interleaved in each round; wire bytes are the padded messages
the relay receives from the sender. Loopback only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bench.report import Figure, Report
from microsync.net.relay import Data as DataMessage
from microsync.net.relay import RelayLimits, RelayServer, data_sizes, encode
from microsync.net.relay_client import RelayClient
from microsync.net.stream import READ_SIZE

RID = bytes(range(32))
UNLIMITED = RelayLimits(max_bytes_per_window=2**62)


# --- the child process: whatever sits in the middle ------------------------------------------


async def _forwarder(ports: Queue[int]) -> None:
    """Pair connections in arrival order and pipe bytes between each pair."""
    waiting: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not waiting:
            waiting.append((reader, writer))
            return
        other_reader, other_writer = waiting.pop()
        for task in (pipe(reader, other_writer), pipe(other_reader, writer)):
            pipes.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    ports.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


class _Pipe(asyncio.Protocol):
    """One side of the protocol-level forwarder: what it reads goes to ``peer``'s transport,
    and it stops reading while that transport is above its high-water mark."""

    def __init__(self, waiting: list[_Pipe]) -> None:
        self._waiting = waiting
        self.peer: _Pipe | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self._waiting:
            self._waiting.append(self)
            transport.pause_reading()
            return
        self.peer = self._waiting.pop()
        self.peer.peer = self
        assert self.peer.transport is not None
        self.peer.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def pause_writing(self) -> None:  # our transport is full: stop reading the other side
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def _protocol_forwarder(ports: Queue[int]) -> None:
    """The same forwarder on ``asyncio.Protocol``: no streams, no task, no copy of its own."""
    waiting: list[_Pipe] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Pipe(waiting), "127.0.0.1", 0)
    ports.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


async def _relay(ports: Queue[int]) -> None:
    async with RelayServer(limits=UNLIMITED) as relay:
        ports.put(relay.port)
        await asyncio.Event().wait()


def _child(kind: str, ports: Queue[int]) -> None:
    middles = {"forwarder": _forwarder, "protocol forwarder": _protocol_forwarder}
    asyncio.run(middles.get(kind, _relay)(ports))


class Middle:
    """A child process running ``kind`` on 127.0.0.1; ``with Middle(kind) as port:``."""

    def __init__(self, kind: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._ports: Queue[int] = context.Queue()
        self._process = context.Process(target=_child, args=(kind, self._ports), daemon=True)

    def __enter__(self) -> int:
        self._process.start()
        return int(self._ports.get(timeout=30))

    def cpu(self) -> float:
        """CPU seconds (user + system) the child has used so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


# --- one measured transfer --------------------------------------------------------------------

Write = Callable[[bytes], Awaitable[None]]
Read = Callable[[], Awaitable[bytes]]


async def transfer(write: Write, read: Read, total: int, chunk: bytes) -> float:
    """Seconds to move ``total`` bytes in writes of ``chunk``."""

    async def receive() -> None:
        got = 0
        while got < total:
            data = await read()
            if not data:
                raise ConnectionError("EOF before the end")
            got += len(data)

    start = time.perf_counter()
    receiver = asyncio.ensure_future(receive())
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        await write(piece)
        sent += len(piece)
    await receiver
    return time.perf_counter() - start


async def tcp_pair(port: int | None) -> tuple[asyncio.StreamWriter, asyncio.StreamReader, object]:
    """(sender writer, receiver reader, closer): direct when ``port`` is None."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    server = None
    if port is None:

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await accepted.put((r, w))

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, sender = await asyncio.open_connection("127.0.0.1", port)
        receiver, receiver_writer = await accepted.get()
    else:
        _, sender = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)  # the forwarder pairs in arrival order
        receiver, receiver_writer = await asyncio.open_connection("127.0.0.1", port)

    async def close() -> None:
        for writer in (sender, receiver_writer):
            writer.close()
        if server is not None:
            server.close()
            await server.wait_closed()

    return sender, receiver, close


async def run_tcp(port: int | None, total: int, chunk: bytes) -> float:
    sender, receiver, close = await tcp_pair(port)

    async def write(data: bytes) -> None:
        sender.write(data)
        await sender.drain()

    try:
        return await transfer(write, lambda: receiver.read(READ_SIZE), total, chunk)
    finally:
        await close()  # type: ignore[operator]


async def run_relay(port: int, total: int, chunk: bytes) -> float:
    url = f"ws://127.0.0.1:{port}"
    async with RelayClient(url) as sender, RelayClient(url) as receiver:
        await sender.join(RID)
        await receiver.join(RID)
        out, into = await sender.accept(), await receiver.accept()
        seconds = await transfer(out.write, into.read, total, chunk)
        await sender.leave(RID)
        await receiver.leave(RID)
        return seconds


def wire_bytes(total: int, write: int) -> int:
    """Padded relay bytes for ``total`` payload bytes sent in writes of ``write``."""
    whole, rest = divmod(total, write)
    per_write = sum(
        len(encode(DataMessage(channel=1, payload=bytes(s)))) for s in data_sizes(write)
    )
    tail = sum(len(encode(DataMessage(channel=1, payload=bytes(s)))) for s in data_sizes(rest))
    return whole * per_write + tail


def measure(mb: int, write: int, repeat: int) -> dict[str, float]:
    """Median seconds per path for ``mb`` MiB in writes of ``write`` bytes, and (``... cpu``)
    the median CPU seconds the middle process and this one (both ends) spent on it: on a
    shared machine the CPU a path costs swings less than its wall time."""
    return {name: statistics.median(times) for name, times in runs(mb, write, repeat).items()}


def runs(mb: int, write: int, repeat: int) -> dict[str, list[float]]:
    """Every run's seconds per path (and ``... cpu``), in the order run."""
    total, chunk = mb * 1024 * 1024, os.urandom(write)
    rows: dict[str, list[float]] = {}
    forwarder, protocol, relay = Middle("forwarder"), Middle("protocol forwarder"), Middle("relay")
    with forwarder as forwarder_port, protocol as protocol_port, relay as relay_port:
        paths: list[tuple[str, Callable[[], Coroutine[Any, Any, float]], Middle | None]] = [
            ("tcp direct", lambda: run_tcp(None, total, chunk), None),
            ("tcp forwarder", lambda: run_tcp(forwarder_port, total, chunk), forwarder),
            ("protocol fwd", lambda: run_tcp(protocol_port, total, chunk), protocol),
            ("relay", lambda: run_relay(relay_port, total, chunk), relay),
        ]
        for _ in range(repeat):
            for name, run, middle in paths:
                before = (middle.cpu() if middle else 0.0), time.process_time()
                rows.setdefault(name, []).append(asyncio.run(run()))
                middle_cpu = (middle.cpu() if middle else 0.0) - before[0]
                rows.setdefault(f"{name} cpu", []).append(
                    middle_cpu + time.process_time() - before[1]
                )
    return rows


def figures(quick: bool = False) -> Report:
    """For ``python -m bench``: 16 MiB once (quick) or 64 MiB, median of 5 (full)."""
    mb, repeat = (16, 1) if quick else (64, 5)
    seconds = measure(mb, 65_537, repeat)
    total = mb * 1024 * 1024

    def rate(path: str) -> str:
        return f"{total / seconds[path] / 1e6:,.0f} MB/s"

    return Report(
        figures=[
            Figure(
                bench="relay",
                measure=f"{mb} MiB through the relay",
                value=rate("relay"),
                floor=f"{rate('tcp forwarder')} (plain forwarder)",
                ratio=seconds["relay"] / seconds["tcp forwarder"],
                target="<= 1.25",
            ),
            Figure(
                bench="relay",
                measure="the same",
                value="",
                floor=f"{rate('protocol fwd')} (asyncio.Protocol forwarder)",
                ratio=seconds["relay"] / seconds["protocol fwd"],
                target="",
            ),
        ],
        notes=[
            f"direct loopback TCP {rate('tcp direct')}; relay padding + framing "
            f"{wire_bytes(total, 65_537) / total - 1:.2%} of the bytes; CPU (middle process "
            f"and both ends) relay / forwarder "
            f"{seconds['relay cpu'] / seconds['tcp forwarder cpu']:.2f}, relay / protocol "
            f"forwarder {seconds['relay cpu'] / seconds['protocol fwd cpu']:.2f}"
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="MiB per transfer")
    parser.add_argument("--write", type=int, default=65_537, help="bytes per write")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    every = runs(args.mb, args.write, args.repeat)
    seconds = {name: statistics.median(times) for name, times in every.items()}
    print(f"{args.mb} MiB in writes of {args.write:,} bytes, median of {args.repeat}")
    direct = seconds["tcp direct"]
    print(f"{'path':<15}{'seconds':>9}{'MB/s':>9}{'vs tcp direct':>15}{'cpu s':>8}")
    for name in ("tcp direct", "tcp forwarder", "protocol fwd", "relay"):
        took, cpu = seconds[name], seconds[f"{name} cpu"]
        rate = total / took / 1e6
        print(f"{name:<15}{took:>9.3f}{rate:>9.0f}{direct / took:>14.2f}x{cpu:>8.3f}")
    forwarder = seconds["tcp forwarder"]
    print(
        f"relay / forwarder: time {seconds['relay'] / forwarder:.2f}, "
        f"cpu {seconds['relay cpu'] / seconds['tcp forwarder cpu']:.2f}"
    )
    for floor in ("tcp forwarder", "protocol fwd"):
        ratios = [r / f for r, f in zip(every["relay"], every[floor], strict=True)]
        print(
            f"relay / {floor} time, each round: "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + f" (median {statistics.median(ratios):.2f}, best {min(ratios):.2f}); "
            f"throughput: median {1 / statistics.median(ratios):.2f}x the {floor}'s"
        )
    print(
        f"relay / protocol fwd: time {seconds['relay'] / seconds['protocol fwd']:.2f}, "
        f"cpu {seconds['relay cpu'] / seconds['protocol fwd cpu']:.2f}"
    )
    overhead = wire_bytes(total, args.write) / total - 1
    print(f"relay padding + framing overhead on the wire: {overhead:.2%}")


if __name__ == "__main__":
    main()
