"""One task group per running device: every background task has a parent that waits for it.

Theory of operation: :meth:`TaskTree.open` starts one supervisor task that holds an
:class:`asyncio.TaskGroup` open; :meth:`TaskTree.spawn` starts a child in it. A child handles
the errors it can (a peer that fails ends its own connection, and the child returns); any other
error is a bug, and it does what the task group does with it: its siblings are cancelled, the
supervisor ends with it, it is logged at once, and :meth:`TaskTree.close` raises it. ``close``
cancels what is still running and waits until every child has ended.

Invariants: no child outlives ``close``; no child's exception goes unread; nothing is spawned
once closing has begun (the coroutine is closed unrun and ``spawn`` returns ``None``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskTree"]

log = logging.getLogger("microsync.node")


class TaskTree:
    """A device's task group, run by a supervisor task (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._group: asyncio.TaskGroup | None = None
        self._main: asyncio.Task[None] | None = None
        self._children: set[asyncio.Task[None]] = set()  # to cancel them at close
        self._closing = False
        self._failed = False  # a child ended with an error: the group is cancelling the rest

    async def open(self) -> None:
        """Start the supervisor; from now on :meth:`spawn` starts children."""
        if self._main is not None:
            raise RuntimeError("this task group is already open")
        ready = asyncio.Event()
        self._main = asyncio.create_task(self._supervise(ready), name=self._name)
        self._main.add_done_callback(self._ended)
        await ready.wait()

    async def _supervise(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set()
            await asyncio.Future()  # until close() cancels it, or a child fails

    def _ended(self, main: asyncio.Task[None]) -> None:
        self._group = None
        if not main.cancelled() and main.exception() is not None:
            log.error("%s stopped: a task failed", self._name, exc_info=main.exception())

    @property
    def running(self) -> bool:
        """Open, not closing, and no child has failed."""
        return self._group is not None and not (self._closing or self._failed)

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """Run ``coroutine`` as a child; ``None`` (and it never runs) once closing began."""
        if not self.running or self._group is None:
            coroutine.close()
            return None
        task = self._group.create_task(coroutine, name=name)
        self._children.add(task)
        task.add_done_callback(self._child_ended)
        return task

    def _child_ended(self, task: asyncio.Task[None]) -> None:
        self._children.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failed = True

    async def close(self) -> None:
        """Cancel every child still running, wait for all, and raise what failed in one
        (the error itself when one child failed, else the group of them). Idempotent."""
        self._closing = True
        main = self._main
        if main is None:
            return
        for task in list(self._children):
            task.cancel()
        main.cancel()
        try:
            await main
        except asyncio.CancelledError:
            if not main.cancelled():
                raise  # it is the caller being cancelled
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise
