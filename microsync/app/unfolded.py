"""What arrived while the app state was not loaded: kept in memory, so loading it does not read
back and parse again what was just stored.

Theory of operation
-------------------
The app state is folded on first read (:meth:`AppState.timeline
<microsync.app.state.AppState.timeline>`). A new member's catch-up stores its whole history
before anything reads it, and the first read used to read every entry back from the store and
parse it again. :class:`Unfolded` keeps, while the state is not loaded, each entry that joined
a feed in this process (handed in by :meth:`AppState.received
<microsync.app.state.AppState.received>`, with the bodies it came with), and
:meth:`Unfolded.entries_after` answers what ``saved.app_entries_after`` answers, reading from
the store only what it does not hold.

Invariants: per feed, what is kept is one run of consecutive positions ``lo..hi`` (entries join
a feed in order; an entry that does not extend the run starts it again, the old run dropped);
the answer for a feed is the stored app entries after the frontier below ``lo``, then the kept
ones, then the stored ones after ``hi`` (none, unless something was stored past this run without
being handed in), none from a fork on. At most :data:`MAX_KEPT_BYTES` of bodies and
:data:`MAX_KEPT_ENTRIES` entries are kept; past either, everything kept is dropped and nothing
more is kept until :meth:`Unfolded.clear`: the read falls back to the store (correct, only
slower).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from microsync.app.ops import APP_TYPE
from microsync.feed.entry import Entry, EntryId
from microsync.feed.store import StoredEntry
from microsync.identity import DeviceId

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica

__all__ = ["MAX_KEPT_BYTES", "MAX_KEPT_ENTRIES", "Unfolded"]

MAX_KEPT_BYTES: Final = 64 * 1024 * 1024
MAX_KEPT_ENTRIES: Final = 200_000


@dataclass(slots=True)
class _Run:
    """Consecutive positions ``lo..hi`` of one feed; the app entries among them, in order."""

    lo: int
    hi: int
    kept: list[StoredEntry] = field(default_factory=list)


class Unfolded:
    """Entries of one group that joined their feeds while its app state was not loaded."""

    def __init__(self) -> None:
        self._runs: dict[DeviceId, _Run] = {}
        self._bytes = 0
        self._entries = 0
        self._full = False

    def __repr__(self) -> str:
        return f"Unfolded({self._entries} entries, {self._bytes} bytes, full={self._full})"

    def clear(self) -> None:
        """Forget everything (the state was loaded, or must be rebuilt from the store)."""
        self._runs, self._bytes, self._entries, self._full = {}, 0, 0, False

    def note(self, accepted: Sequence[Entry], known: Mapping[EntryId, bytes | None] | None) -> None:
        """``accepted`` joined their feeds, in order; ``known``: the bodies they came with (an
        app entry without one is not kept: the run restarts after it)."""
        if self._full:
            return
        bodies = known or {}
        for entry in accepted:
            h = entry.header
            run = self._runs.get(h.device)
            if run is None or h.seq != run.hi + 1:
                run = self._restart(h.device, h.seq)
            if h.type == APP_TYPE:
                body = bodies.get(entry.id)
                if body is None:
                    self._drop(h.device)
                    continue
                run.kept.append(StoredEntry(entry=entry, body=body))
                self._bytes += len(body)
                self._entries += 1
            run.hi = h.seq
            if self._bytes > MAX_KEPT_BYTES or self._entries > MAX_KEPT_ENTRIES:
                self.clear()
                self._full = True
                return

    def entries_after(
        self, replica: GroupReplica, frontier: Mapping[DeviceId, int]
    ) -> list[StoredEntry]:
        """The stored app entries after ``frontier`` (device -> seq), none from a fork on: what
        ``saved.app_entries_after`` returns, the kept ones taken from memory."""
        store, group = replica.store, replica.id
        found: list[StoredEntry] = []
        for device, status in store.feeds(group).items():
            after = frontier.get(device, 0)
            forked = status.forked_at
            stop = status.head_seq if forked is None else min(status.head_seq, forked - 1)
            run = self._runs.get(device)
            if run is None or run.hi <= after or run.lo > stop:
                found.extend(_stored(replica, device, after, stop))
                continue
            found.extend(_stored(replica, device, after, min(run.lo - 1, stop)))
            found.extend(s for s in run.kept if after < s.entry.header.seq <= stop)
            found.extend(_stored(replica, device, max(run.hi, after), stop))
        return found

    def _restart(self, device: DeviceId, seq: int) -> _Run:
        self._drop(device)
        run = self._runs[device] = _Run(seq, seq - 1)
        return run

    def _drop(self, device: DeviceId) -> None:
        run = self._runs.pop(device, None)
        if run is not None:
            self._bytes -= sum(len(s.body or b"") for s in run.kept)
            self._entries -= len(run.kept)


def _stored(
    replica: GroupReplica, device: DeviceId, after: int, last: int
) -> Iterator[StoredEntry]:
    """Stored app entries of ``device``'s feed with ``after < seq <= last``."""
    if last <= after:
        return
    entries = replica.store.entries(replica.id, device, after_seq=after, limit=last - after)
    yield from (s for s in entries if s.entry.header.type == APP_TYPE)
