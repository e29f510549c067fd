"""A new member's catch-up over loopback TCP, against the floor of the same work, in one run.

    python -m bench.catch_up [--posts 3000,20000] [--repeat 3] [--profile-posts N]

For each size N:

* **host**: a real device (``microsync.Device``) creates a group and posts N posts (texts of
  30-210 bytes) through ``Group.post``; its profile is built on ``/dev/shm`` where there is one,
  only so that building is quick (it is not timed). A separate process then opens it, loads the
  group's feed, listens on 127.0.0.1 and issues one invite per catch-up.
* **catch-up** (timed): a new device on a fresh profile on disk, started without a listener,
  redeems the invite with ``Device.join`` (handshake, invite redemption, then the same
  connection goes on as a sync session) until its feed is complete: the host's every feed is
  stored up to its head and ``Group.feed()`` shows all N posts. Only public API is used, so
  the benchmark keeps measuring the same thing whatever the layers below look like.
* **floor** (timed, right after each catch-up, same process): the physical work a receiver
  cannot avoid for the same entries, the host's own ``(wire, body)`` pairs: PyNaCl Ed25519
  verify of every header, XChaCha20-Poly1305 decrypt (``nacl.bindings``) of a ciphertext as
  long as every body, and one insert of the same wire and body bytes into one bare table
  with an integer key, exactly as durable as the catch-up's own commits (WAL,
  ``synchronous=NORMAL``: entries received in a sync session commit without an fsync, safe
  against ``kill -9``; a power cut rolls back to an earlier commit the next sync makes good,
  ``SqliteStore.replaceable``), 1,000 rows per ``executemany`` and transaction. (The group's
  content key is not public API, so the floor decrypts ciphertexts of the same lengths that
  it made itself, with the header as associated data; the cost of the AEAD depends on the
  lengths only.)

The ratio is catch-up time / floor time, the median over ``--repeat`` of each repeat's ratio.
Then one more catch-up of ``--profile-posts`` posts runs under cProfile, and the time is summed
by the layer that spent it (a C function's time goes to the layer of the Python code that
called it): crypto (``microsync.crypto`` and PyNaCl), feed, group, app, protocol, storage
(``microsync.storage`` and sqlite3), net, node, encoding (CBOR), waiting (the event loop's
``epoll``, idle until bytes arrive) and asyncio/other. The profiler slows Python code more than
C code, so read the shares, not the seconds. The host runs in its own process (on the other
core when the machine has one free); the catch-up and the floor each run on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import microsync
from bench.floors import receive_floor, receive_work
from bench.report import Figure, Report

ROOT = Path(__file__).resolve().parent.parent
Item = tuple[bytes, bytes | None]
LAYERS = (
    "crypto",
    "feed",
    "group",
    "app",
    "protocol",
    "storage",
    "net",
    "node",
    "encoding",
    "waiting",
    "asyncio/other",
)


@dataclass(frozen=True, slots=True)
class Host:
    """A built host profile: where it is, what it holds."""

    path: Path
    posts: int
    items: list[Item]  # every entry of the group, as a sync sends it
    frontier: dict[bytes, int]


# ---------------------------------------------------------------- the host


async def build_host(path: Path, posts: int, seed: int) -> Host:
    """A device that created a group and wrote ``posts`` posts through the public API."""
    rng = random.Random(seed)
    async with await microsync.Device.open(path, name="Host") as host:
        group = await host.create_group("Family")
        for i in range(posts):
            await group.post(f"post {i}: " + "x" * rng.randrange(20, 200))
        items = host.entries_after(group.id)
        frontier = {bytes(d): s for d, s in host.frontier(group.id).items()}
    return Host(path, posts, items, frontier)


async def serve_host(path: Path) -> None:
    """The host process: serve the profile on 127.0.0.1; print ``ready``, then one invite link
    per ``invite`` line read from stdin; stop at end of input."""
    loop = asyncio.get_running_loop()
    async with await microsync.Device.open(path) as device:
        (group,) = device.groups()
        group.feed()  # fold before going online, as `microsync serve` does
        await device.start(lan=False, port=0, bind="127.0.0.1")
        print("ready", flush=True)
        while (line := await loop.run_in_executor(None, sys.stdin.readline)) != "":
            if line.strip() == "invite":
                invite = await group.invite(ttl=600)
                print(invite.link, flush=True)


@contextlib.contextmanager
def hosted(path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.catch_up", "--host", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def invite(process: subprocess.Popen[str]) -> str:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("invite\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


# ---------------------------------------------------------------- the catch-up


async def catch_up(
    link: str, path: Path, host: Host, profile: cProfile.Profile | None = None
) -> float:
    """Seconds from ``join`` to a complete feed, on a fresh profile at ``path``."""
    async with await microsync.Device.open(path, name="Newcomer") as newcomer:
        await newcomer.start(lan=False, port=None)  # so the join's connection stays live
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        group = await newcomer.join(link)
        while not _complete(newcomer, group, host):
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        await newcomer.stop()
    return elapsed


def _complete(device: microsync.Device, group: microsync.Group, host: Host) -> bool:
    held = {bytes(d): seq for d, seq in device.frontier(group.id).items()}
    if any(held.get(d, 0) < seq for d, seq in host.frontier.items()):
        return False
    return len(group.feed()) == host.posts


# ---------------------------------------------------------------- the profile by layer


def layer_of(filename: str, function: str) -> str | None:
    """The layer a profiled function belongs to (``None``: a C function, charged to its
    caller)."""
    path = filename.replace("\\", "/")
    if path == "~":
        waits = ("<method 'poll' of 'select.", "<built-in method select.select>")
        return "waiting" if function.startswith(waits) else None
    if "/microsync/" in path:
        first = path.rsplit("/microsync/", 1)[1].split("/")[0].removesuffix(".py")
        return {"identity": "crypto", "encoding": "encoding"}.get(first, first)
    if any(p in path for p in ("/nacl/", "/cryptography/", "/blake3", "_cffi")):
        return "crypto"
    if "/sqlite3/" in path:
        return "storage"
    if "/cbor2/" in path:
        return "encoding"
    return "asyncio/other"


def by_layer(profile: cProfile.Profile) -> dict[str, float]:
    """Own time per layer, in seconds; a C function's time goes to its callers' layers."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    spent = dict.fromkeys(LAYERS, 0.0)
    for (filename, _line, function), (_cc, _nc, own, _cum, callers) in stats.items():
        layer = layer_of(filename, function)
        if layer is not None:
            spent[layer if layer in spent else "asyncio/other"] += own
            continue
        for (cfile, _cline, cfunction), edge in callers.items():
            caller = layer_of(cfile, cfunction)
            caller = caller if caller in spent and caller != "waiting" else "asyncio/other"
            spent[caller] += edge[2]
    return spent


def layer_summary(spent: dict[str, float]) -> str:
    total = sum(spent.values()) or 1.0
    shown = sorted(((t, n) for n, t in spent.items() if t / total >= 0.005), reverse=True)
    return ", ".join(f"{name} {t / total:.0%}" for t, name in shown)


# ---------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Measured:
    posts: int
    entries: int
    catch_up: float  # median seconds
    floor: float  # median seconds
    ratio: float  # median of each repeat's catch-up / floor


def _scratch(prefix: str) -> str:
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=where)


def measure(
    sizes: Sequence[int], repeat: int, profile_posts: int | None, seed: int = 1
) -> tuple[list[Measured], dict[str, float] | None]:
    """Catch-up and floor for each size, and the profile by layer (if ``profile_posts``)."""
    results, spent = [], None
    wanted = sorted({*sizes, *([profile_posts] if profile_posts else [])})
    with tempfile.TemporaryDirectory(prefix="microsync-bench-") as disk:
        for posts in wanted:
            scratch = _scratch("microsync-bench-host-")
            try:
                host = asyncio.run(build_host(Path(scratch) / "host", posts, seed))
                work = receive_work(host.items)
                with hosted(host.path) as process:
                    runs = []
                    for run in range(repeat if posts in sizes else 0):
                        here = Path(disk) / f"{posts}-{run}"
                        here.mkdir()
                        t = asyncio.run(catch_up(invite(process), here / "newcomer", host))
                        runs.append(
                            (t, receive_floor(here / "floor.db", work, synchronous="NORMAL"))
                        )
                    if posts == profile_posts:
                        profile = cProfile.Profile()
                        here = Path(disk) / f"{posts}-profile"
                        asyncio.run(catch_up(invite(process), here, host, profile))
                        spent = by_layer(profile)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            if runs:
                results.append(
                    Measured(
                        posts,
                        len(host.items),
                        statistics.median(t for t, _ in runs),
                        statistics.median(f for _, f in runs),
                        statistics.median(t / f for t, f in runs),
                    )
                )
    return results, spent


def report(
    results: Sequence[Measured], spent: dict[str, float] | None, profiled: int | None
) -> Report:
    figures = [
        Figure(
            bench="catch_up",
            measure=f"new member's catch-up, {m.posts:,} posts (join to feed complete)",
            value=f"{m.catch_up:.2f} s",
            floor=f"{m.floor:.2f} s",
            ratio=m.ratio,
            target="<= 1.40",
        )
        for m in results
    ]
    notes = [
        "floor: Ed25519 verify + XChaCha20-Poly1305 decrypt + insert (WAL, "
        "synchronous=NORMAL as the catch-up's received commits, 1,000 rows per executemany, "
        "integer key) of the same entries"
    ]
    if spent is not None:
        notes.append(
            f"where the catch-up of {profiled:,} posts spends its time (cProfile, own "
            f"time by layer): {layer_summary(spent)}"
        )
    return Report(figures=figures, notes=notes)


def figures(quick: bool = False) -> Report:
    """The catch-up figures for ``python -m bench``: 3,000 posts once (quick), or 3,000 and
    20,000 posts, median of 3, profiled at 20,000 (full)."""
    sizes, repeat, profiled = ((3_000,), 1, 3_000) if quick else ((3_000, 20_000), 3, 20_000)
    results, spent = measure(sizes, repeat, profiled)
    return report(results, spent, profiled)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", default="3000,20000", help="sizes, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-posts", type=int, default=None, help="default: the smallest")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--host", type=Path, help=argparse.SUPPRESS)  # the host process
    args = parser.parse_args()
    if args.host is not None:
        asyncio.run(serve_host(args.host))
        return
    sizes = [int(s) for s in args.posts.split(",")]
    profiled = None if args.no_profile else (args.profile_posts or min(sizes))
    results, spent = measure(sizes, args.repeat, profiled, args.seed)
    print(f"catch_up: a new member joins over loopback TCP, median of {args.repeat}")
    for m in results:
        print(
            f"  {m.posts:>7,} posts ({m.entries:,} entries): catch-up {m.catch_up:6.2f} s, "
            f"floor {m.floor:5.2f} s -> {m.ratio:.2f}x the floor (target <= 1.40)"
        )
    if spent is not None:
        total = sum(spent.values())
        print(f"  where the catch-up of {profiled:,} posts spends its time (cProfile, own time):")
        for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"    {name:<14} {seconds:7.2f} s  {seconds / total:6.1%}")


if __name__ == "__main__":
    main()
