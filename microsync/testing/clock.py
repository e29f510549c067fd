"""A fake clock for simulations: time moves only when a test moves it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FakeClock"]


@dataclass(slots=True)
class FakeClock:
    """Milliseconds since the Unix epoch, advanced explicitly.

    Pass ``clock.now`` wherever the core takes ``now=``, and the clock itself wherever a
    :data:`~microsync.clock.Clock` is taken (``Device.open(path, clock=clock)``): calling it
    reads ``now``. Nothing reads a real clock.

    >>> clock = FakeClock(1_000)
    >>> clock.advance(250)
    1250
    >>> clock.now, clock()
    (1250, 1250)
    """

    now: int = 1_700_000_000_000

    def __call__(self) -> int:
        """The time now: a :data:`~microsync.clock.Clock`."""
        return self.now

    def advance(self, ms: int = 1) -> int:
        """Move time forward by ``ms`` milliseconds (never back) and return the new ``now``."""
        if ms < 0:
            raise ValueError("a fake clock never goes back")
        self.now += ms
        return self.now
