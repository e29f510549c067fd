"""The presence heartbeat of a started device: every :data:`PRESENCE_EVERY` seconds, an
``"online"`` announcement in each group that opted in (``Group.set_presence_sharing``), and
none at all while the device is quiet (``Device.set_quiet``). One child task of the runtime's
task group, started and ended by :meth:`Heartbeat.changed`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from microsync.errors import NotAMember, StorageError

if TYPE_CHECKING:
    from microsync.node.runtime import Runtime

__all__ = ["PRESENCE_EVERY", "Heartbeat"]

log = logging.getLogger("microsync.node")

PRESENCE_EVERY: Final = 60.0
"""Seconds between two rounds of presence announcements."""


class Heartbeat:
    """Runs while the device is started and not quiet (module doc)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Start the heartbeat, or end it, as the device's quiet mode now says."""
        runtime = self._runtime
        quiet = runtime.device._network.quiet
        if quiet and self._task is not None:
            self._task.cancel()
            self._task = None
        elif not quiet and self._task is None:
            self._task = runtime.spawn(self._beat(), "presence")  # None once stopping

    async def _beat(self) -> None:
        while True:
            for group in list(self._runtime.device.groups()):
                if group.is_member() and group.presence_sharing():
                    try:
                        await group.announce_presence("online")
                    except (NotAMember, StorageError) as exc:  # left meanwhile; store closing
                        log.info("presence in %s: %s", group.name, exc)
            await asyncio.sleep(PRESENCE_EVERY)
