"""The clock port: one millisecond wall clock for the package.

The sans-IO layers (``feed/`` ... ``protocol/``) never read a clock: they take ``now`` (Unix
milliseconds) as an argument. The I/O layers (``storage/``, ``net/``, ``node/``, ``cli/``) read it
through a :data:`Clock`, which a :class:`~microsync.node.Device` takes at
:meth:`~microsync.node.Device.open` (``clock=``) and hands to its groups and its network, so a
test passes :class:`microsync.testing.FakeClock` instead of patching privates.

>>> now_ms() > 1_700_000_000_000
True
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "now_ms", "system_clock"]

Clock = Callable[[], int]
"""A function returning the time now in milliseconds since the Unix epoch."""


def system_clock() -> int:
    """This machine's wall clock, in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


now_ms: Clock = system_clock
"""The same clock under the name the network code has always used."""
