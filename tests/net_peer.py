"""A microsync device in a process of its own, driven by JSON lines (the multi-process tests).

``python tests/net_peer.py PROFILE --name NAME [--lan] [--bind ADDR] [--port N]
[--interface ADDR]... [--peer HOST:PORT]...`` opens (or creates) the profile, starts the device
and prints ``{"event": "ready", "port", "device"}``. Each stdin line is then a command
``{"id": N, "cmd": ..., ...}``, run as a task of its own (a ``frontier`` is answered while a
``join`` is still streaming); its answer is one stdout line ``{"id": N, "ok": true, ...}`` or
``{"id": N, "ok": false, "error": "Type: message"}``:

=========  ===============================  ==============================================
command    arguments                        answer
=========  ===============================  ==============================================
create     name                             group (hex)
invite     group, addresses (optional)      link, code
join       link, at (optional)              group
post       group, n, text (optional)        ids (hex)
frontier   group                            frontier ({device hex: seq}), entries (sum)
state      group, texts (a count)           frontier, entries, count, digest, members, texts
has        group, ids                       has (those of ids the feed shows)
peers                                       peers ([{name, address}])
connect    address                          (keeps a connection, reconnecting with backoff)
quit                                        (stops the device, closes the profile, exits 0)
=========  ===============================  ==============================================

EOF on stdin and SIGTERM quit cleanly too. :class:`PeerProcess` is the test side: it starts
this script (optionally inside a namespace), sends commands and waits for their answers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# --- the peer (runs in its own process) ---------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def digest_of(texts: Sequence[tuple[str, str | None]]) -> str:
    """One value for a feed: equal on two devices iff they show the same posts."""
    lines = sorted(f"{post_id} {text}" for post_id, text in texts)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class Peer:
    """One started device and the commands it obeys."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.done = asyncio.Event()

    def group(self, args: dict[str, Any]) -> Any:
        return self.device.group(bytes.fromhex(args["group"]))

    def frontier(self, args: dict[str, Any]) -> dict[str, Any]:
        group_id = bytes.fromhex(args["group"])
        if group_id not in {g.id for g in self.device.groups()}:
            return {"frontier": {}, "entries": 0}
        heads = {d.hex(): seq for d, seq in self.device.frontier(group_id).items()}
        return {"frontier": heads, "entries": sum(heads.values())}

    async def run(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        device = self.device
        match cmd:
            case "create":
                return {"group": (await device.create_group(args["name"])).id.hex()}
            case "invite":
                invite = await self.group(args).invite(ttl=600, addresses=args.get("addresses"))
                return {"link": invite.link, "code": invite.code}
            case "join":
                return {"group": (await device.join(args["link"], at=args.get("at"))).id.hex()}
            case "post":
                group, text, n = self.group(args), args.get("text", "post"), args.get("n", 1)
                return {"ids": [(await group.post(f"{text} {i}")).id.hex() for i in range(n)]}
            case "frontier":
                return self.frontier(args)
            case "state":
                return self.state(args)
            case "has":
                shown = {p.id.hex() for p in self.group(args).feed()}
                return {"has": [i for i in args["ids"] if i in shown]}
            case "peers":
                found = device.peers()
                return {"peers": [{"name": p.name, "address": p.address} for p in found]}
            case "connect":
                device.connect(args["address"])
                return {}
            case "quit":
                self.done.set()
                return {}
        raise ValueError(f"unknown command {cmd!r}")

    def state(self, args: dict[str, Any]) -> dict[str, Any]:
        group = self.group(args)
        posts = group.feed()
        return {
            **self.frontier(args),
            "count": len(posts),
            "digest": digest_of([(p.id.hex(), p.text) for p in posts]),
            "members": sorted(m.name for m in group.members()),
            "texts": [p.text for p in posts[: args.get("texts", 0)]],
        }

    async def answer(self, line: str) -> None:
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            reply = {"id": request["id"], "ok": True, **await self.run(request["cmd"], request)}
        except Exception as exc:  # any failure is the answer: the peer itself keeps serving
            reply = {"id": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        emit(reply)


async def serve(options: argparse.Namespace) -> None:
    import microsync

    device = await microsync.Device.open(options.profile, name=options.name)
    try:
        await device.start(
            lan=options.lan,
            port=options.port,
            bind=options.bind,
            peers=tuple(options.peer),
            interfaces=options.interface or None,
        )
        peer = Peer(device)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, peer.done.set)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        emit({"event": "ready", "port": device.port, "device": device.id.hex()})
        await read_commands(peer, reader)
    finally:
        await device.close()
    emit({"event": "closed"})


async def read_commands(peer: Peer, reader: asyncio.StreamReader) -> None:
    tasks: set[asyncio.Task[None]] = set()
    done = asyncio.ensure_future(peer.done.wait())
    try:
        while not peer.done.is_set():
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({line, done}, return_when="FIRST_COMPLETED")
            if not line.done():
                line.cancel()
                break
            if not line.result():
                break  # EOF: the test went away
            task = asyncio.ensure_future(peer.answer(line.result().decode()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        done.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--name", default=None)
    parser.add_argument("--lan", action="store_true")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--peer", action="append", default=[])
    return parser.parse_args(argv)


# --- the test side ------------------------------------------------------------------------------


class PeerFailed(AssertionError):
    """A peer process answered with an error, did not answer in time, or died."""


class PeerProcess:
    """``tests/net_peer.py`` as a subprocess: ``ask(cmd, **args)`` waits for the answer.

    ``prefix`` runs it inside a namespace (``["ip", "netns", "exec", NAME]``, which execs, so the
    pid is the peer's own). The constructor waits up to ``ready`` seconds for the device to
    start (``ready=0``: call :meth:`wait_ready` later, to start several at once). Stopped by
    its own pid: :meth:`kill` (SIGKILL) or :meth:`stop`.
    """

    def __init__(
        self,
        profile: Path,
        name: str,
        *options: str,
        prefix: Sequence[str] = (),
        ready: float = 30,
    ) -> None:
        argv = [*prefix, sys.executable, "tests/net_peer.py", str(profile), "--name", name]
        self.name = name
        self.popen = subprocess.Popen(
            [*argv, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._answers: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._changed = threading.Condition()
        self._next = 0
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.port: int | None = None
        self.device = ""
        if ready:
            self.wait_ready(ready)

    def wait_ready(self, timeout: float = 30) -> PeerProcess:
        """Wait for the peer's ``ready`` line (its port and device id)."""
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise PeerFailed(f"{self.name} did not start: {''.join(self.stderr)[-2000:]}") from None
        if event.get("event") != "ready":
            self.kill()
            raise PeerFailed(f"{self.name} did not start: {event} {''.join(self.stderr)[-2000:]}")
        self.port = event["port"]
        self.device = event["device"]
        return self

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            message = json.loads(line)
            if message.get("id") is None:
                self._events.put(message)
            with self._changed:
                if message.get("id") is not None:
                    self._answers[message["id"]] = message
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()
        self._events.put({"event": "exited"})

    def _pump_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr.append(line)

    def send(self, cmd: str, **args: Any) -> int:
        """Send a command without waiting; :meth:`result` collects its answer."""
        assert self.popen.stdin is not None
        self._next += 1
        self.popen.stdin.write(json.dumps({"id": self._next, "cmd": cmd, **args}) + "\n")
        self.popen.stdin.flush()
        return self._next

    def result(self, request: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while request not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    tail = "".join(self.stderr)[-2000:]
                    raise PeerFailed(f"{self.name}: no answer to request {request}\n{tail}")
                self._changed.wait(min(left, 0.2))
            answer = self._answers.pop(request)
        if not answer["ok"]:
            raise PeerFailed(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, cmd: str, *, timeout: float = 30, **args: Any) -> dict[str, Any]:
        return self.result(self.send(cmd, **args), timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no clean close (a crash, a pulled plug)."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, grace: float = 5.0) -> int | None:
        """``quit``, then SIGTERM, then SIGKILL; returns the exit status."""
        if self.popen.poll() is None:
            try:
                self.send("quit")
                self.popen.wait(grace)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.popen.pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    self.kill()
        return self.popen.returncode


if __name__ == "__main__":
    asyncio.run(serve(parse(sys.argv[1:])))
