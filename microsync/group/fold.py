"""The one content fold: open what this device can, lock what it cannot yet, and open the
locked again when keys or cut-offs arrive. Sans-IO and pure of policy: what an opened entry
means is the caller's (membership records, app operations, vault operations).

Theory of operation
-------------------
An entry of a group reaches a layer above the feed as ``(entry, body)``. :meth:`ContentFold.fold`
takes a batch of them and, for each, in order:

1. **gate** — with a ``state`` the entry must count (:meth:`GroupState.counts`: admitted and
   before any cut-off); one that does not is *locked*, not dropped, because a later operation
   may admit its device or lift the line.
2. **body** — the body handed in (``known``) is used as is; otherwise it is read once with
   ``read`` (an entry the store does not hold is dropped). A purged body (``None``) is
   folded with ``value=None``: the caller decides what stands for it.
3. **open** — ``open(entry, body)`` decrypts and decodes. :class:`DecryptionError` means no key
   here opens it yet: the entry is *locked*. :class:`DecodeError` means a member wrote
   garbage: it never counts, and is dropped.
4. **author** — with ``person_of``, the entry's author person is looked up once per device
   (and kept: a device's certificate names its person for good); an entry of a device with no
   known person is dropped.

What opened comes back as :class:`Folded` values, in the order given; the locked wait in
:attr:`ContentFold.locked` (entry ids in arrival order). :meth:`ContentFold.retry` folds them
again (call it when keys arrive); :meth:`ContentFold.cutoffs_moved` says whether a device's
counted stretch changed since :meth:`ContentFold.mark`, in which case what was folded before
may no longer count and the caller folds again from the store.

An author folds its own entry with :meth:`ContentFold.accept`: it knows the plaintext, so
nothing is read back or decrypted.

Invariants: an entry id is in :attr:`locked` at most once; an entry that opened leaves it; the
fold never writes (the caller stores, purges and emits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from microsync.errors import DecodeError, DecryptionError
from microsync.feed import Entry, EntryId, StoredEntry
from microsync.group.membership import GroupState, Window
from microsync.identity import DeviceId, PersonId

__all__ = ["ContentFold", "Folded"]

T = TypeVar("T")

Opener = Callable[[Entry, bytes], T]
"""Decrypt and decode one body: raise ``DecryptionError`` (locked) or ``DecodeError`` (dropped)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Folded(Generic[T]):
    """One entry that opened: its body as received (``None``: purged), the value ``open``
    made of it (``None`` exactly when the body is), and its author's person (``None`` when the
    fold was built without ``person_of``)."""

    entry: Entry
    body: bytes | None
    value: T | None
    person: PersonId | None


class ContentFold(Generic[T]):
    """Decrypt-or-lock, gate on the group's cut-offs, and hand on what opened (module doc).

    ``open``: decrypt and decode one body. ``state``: the group's current state, for the gate
    and for :meth:`cutoffs_moved` (``None``: no gate, as for membership operations, which are
    what draws the lines). ``read``: the stored entry for one not handed in with a body (its
    body read once). ``person_of``: the author person of a device (``None``: not looked up).
    """

    def __init__(
        self,
        open: Opener[T],
        *,
        state: Callable[[], GroupState] | None = None,
        read: Callable[[Entry], StoredEntry | None] | None = None,
        person_of: Callable[[DeviceId], PersonId | None] | None = None,
    ) -> None:
        self._open = open
        self._state = state
        self._read = read
        self._person_of = person_of
        self.locked: dict[EntryId, Entry] = {}
        """Entries waiting for a key, or for their device's stretch to count."""
        self._windows: dict[DeviceId, tuple[Window, ...]] | None = None
        # a device's person, once known: a certificate binds a device to its person for good
        # (the first one kept stays), so a live entry does not look it up again
        self._people: dict[DeviceId, PersonId] = {}

    def __repr__(self) -> str:
        return f"ContentFold(locked={len(self.locked)})"

    # ------------------------------------------------------------------ folding

    def fold(
        self, entries: Iterable[Entry], known: Mapping[EntryId, bytes | None] | None = None
    ) -> list[Folded[T]]:
        """Open ``entries`` (bodies from ``known``, else read once); lock what cannot open
        yet, drop garbage. Returns what opened, in the order given."""
        state = self._state() if self._state is not None else None
        out: list[Folded[T]] = []
        for entry in entries:
            h = entry.header
            if state is not None and not state.counts(h.device, h.seq):
                self.locked[entry.id] = entry  # its add may not be open here, or a cut-off
                continue
            found = self._body(entry, known)
            if found is None:
                continue  # not stored (any more): nothing to fold
            body = found[0]
            if body is None:
                value = None
            else:
                try:
                    value = self._open(entry, body)
                except DecryptionError:
                    self.locked[entry.id] = entry
                    continue
                except DecodeError:
                    self.locked.pop(entry.id, None)
                    continue  # a member wrote garbage: it never counts
            self.locked.pop(entry.id, None)
            person = self._author(h.device)
            if self._person_of is not None and person is None:
                continue
            out.append(Folded(entry=entry, body=body, value=value, person=person))
        return out

    def retry(self, known: Mapping[EntryId, bytes | None] | None = None) -> list[Folded[T]]:
        """Fold the locked entries again (keys arrived, or a line moved)."""
        return self.fold(list(self.locked.values()), known) if self.locked else []

    def accept(self, entry: Entry, body: bytes, value: T) -> Folded[T]:
        """This device's own entry, whose ``value`` it just wrote: nothing is decrypted."""
        self.locked.pop(entry.id, None)
        person = self._author(entry.header.device)
        return Folded(entry=entry, body=body, value=value, person=person)

    # ------------------------------------------------------------------ cut-offs

    def mark(self) -> None:
        """Remember the counted stretches of every device as of now (what was folded)."""
        self._windows = None if self._state is None else dict(self._state().windows)

    def cutoffs_moved(self) -> bool:
        """Did a device's counted stretch change since :meth:`mark`? Then what was folded may
        not count any more: fold again from the store."""
        if self._state is None or self._windows is None:
            return False
        windows = self._state().windows
        return any(windows.get(device) != stretch for device, stretch in self._windows.items())

    # ------------------------------------------------------------------ helpers

    def _body(
        self, entry: Entry, known: Mapping[EntryId, bytes | None] | None
    ) -> tuple[bytes | None] | None:
        if known is not None and entry.id in known:
            return (known[entry.id],)
        if self._read is None:
            return None
        stored = self._read(entry)
        return None if stored is None else (stored.body,)

    def _author(self, device: DeviceId) -> PersonId | None:
        if self._person_of is None:
            return None
        person = self._people.get(device)
        if person is None:
            person = self._person_of(device)
            if person is not None:  # none yet: its certificate may still arrive
                self._people[device] = person
        return person
