"""Live latency through a keeper: two devices whose only link is one keeper (a real
``microsync keeper`` subprocess on 127.0.0.1); Alice posts, and the time until Bob's
``events()`` yields the post is measured, N times.

    python -m bench.keeper_live [N]

Compare with ``python -m bench.sync``'s live row (a direct connection): the keeper adds one
hop each way. Uses the test suite's keeper and family helpers (run from the repository root).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

from tests.keeper_helpers import keeper
from tests.test_keeper_group import kept_family, online, pushed_all, until


async def measure(posts: int) -> list[float]:
    """Milliseconds from each ``post`` to the event at the other device, in order."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with keeper(root / "keeper") as running:
            async with AsyncExitStack() as stack:
                alice, bob = await kept_family(stack, root, running.url, "alice", "bob")
                await online(alice)
                await online(bob)
                await until(lambda: pushed_all(alice) and pushed_all(bob))
                await asyncio.sleep(1.0)  # both watching the mailbox
                events = bob.events()
                delays = []
                for n in range(posts):
                    text = f"live {n}"
                    began = time.perf_counter()
                    await alice.post(text)
                    async for event in events:
                        if event.post is not None and event.post.text == text:
                            break
                    delays.append((time.perf_counter() - began) * 1000)
                    await asyncio.sleep(0.02)
                await alice.device.stop()
                await bob.device.stop()
    return delays


def main() -> None:
    posts = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    delays = sorted(asyncio.run(measure(posts)))
    p99 = delays[max(0, round(len(delays) * 0.99) - 1)]
    print(f"keeper live: p50 {statistics.median(delays):.2f} ms, p99 {p99:.2f} ms over {posts}")


if __name__ == "__main__":
    main()
