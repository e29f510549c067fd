"""Where a vault fetch's chunks come from, measured in one run (``docs/vault.md``).

    python -m bench.vault_relay [--mb 64]

Four devices of ONE process over loopback TCP and a keeper subprocess (``microsync keeper``)
on 127.0.0.1. Alice adds a ``--mb`` MiB file; rows:

* **direct**: Hub, connected to Alice, fetches it (policy ``on_demand``: it keeps nothing);
* **relayed**: Viewer, connected to Hub alone, fetches it: Hub gets every chunk from Alice
  for it (checked, not kept);
* **keeper**: Late, connected to nobody, fetches it from the group's keeper, where Alice's
  device pushed it.

Each row is one fetch into a file on the same disk; read the ratios (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import microsync

_LISTENING = re.compile(r"keeper listening on (ws://127\.0\.0\.1:\d+)")


async def _synced(device: microsync.Device) -> None:
    while not any(p.synced for p in device.peers()):
        await asyncio.sleep(0.01)


async def _timed(group: microsync.Group, ref: microsync.BlobRef, dest: Path) -> float:
    while not any(r.id == ref.id for r in group.vault.list()):  # the manifest first
        await asyncio.sleep(0.02)
    start = time.perf_counter()
    await group.vault.fetch(ref, dest, timeout=60)
    return time.perf_counter() - start


async def run(root: Path, mb: int, keeper_url: str) -> dict[str, float]:
    """The three fetches of one ``mb`` MiB file; seconds each."""
    names = ("Alice", "Hub", "Viewer", "Late")
    devices = [await microsync.Device.open(root / n, name=n) for n in names]
    alice, hub, viewer, late = devices
    try:
        await alice.start(lan=False, port=0)
        family = await alice.create_group("Family")
        await family.add_keeper(keeper_url)  # before the invites: they carry it
        await family.vault.set_keeper_originals(1 << 40)
        groups = [family]
        for device in devices[1:]:
            groups.append(await device.join((await family.invite(ttl=600)).link))
        ref = await family.vault.add(os.urandom(mb << 20), name="film.mp4")
        while family.vault.at_keeper(ref, keeper_url) < ref.chunks:
            await asyncio.sleep(0.05)
        await hub.start(lan=False, port=0, peers=(f"127.0.0.1:{alice.port}",))
        await viewer.start(lan=False, port=None, peers=(f"127.0.0.1:{hub.port}",))
        await _synced(hub)
        await _synced(viewer)
        groups[1].vault.policy = "on_demand"
        out = {"direct": await _timed(groups[1], ref, root / "direct")}
        out["relayed"] = await _timed(groups[2], ref, root / "relayed")
        await late.start(lan=False, port=None)
        out["keeper"] = await _timed(groups[3], ref, root / "keeper")
        return out
    finally:
        for device in devices:
            await device.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = [sys.executable, "-m", "microsync", "keeper", "--data", str(root / "k")]
        proc = subprocess.Popen([*command, "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            found = _LISTENING.search(proc.stdout.readline())
            assert found is not None, "the keeper did not start"
            out = asyncio.run(run(root, args.mb, found[1]))
        finally:
            proc.terminate()
            proc.wait(10)
    direct = out["direct"]
    print(f"{'row':<10} {'MB/s':>8} {'of direct':>10}")
    for row, seconds in out.items():
        print(f"{row:<10} {args.mb * 1.048576 / seconds:>8.0f} {direct / seconds:>9.2f}x")


if __name__ == "__main__":
    main()
