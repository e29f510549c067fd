"""App state on simulated devices: write app operations (posts, reactions, documents...) from
a :class:`~microsync.testing.SimDevice` and read back what its replica shows, so a property
test can check that every device that holds the same entries shows the same state.

>>> from microsync.testing import AppOp, Kind, SimNetwork, app_view, write_app_op
>>> from microsync.testing import check_app_convergence
>>> net = SimNetwork(seed=2)
>>> alice, bob = net.add_device("alice"), net.add_device("bob")
>>> group = net.create_group(alice, "Family")
>>> _ = alice.replica(group).add(bob.person_id, "Bob", [bob.grant()], now=net.clock.now)
>>> _ = net.settle(group)
>>> post = write_app_op(net, alice, group, AppOp(Kind.POST, text="hello"))
>>> _ = net.settle(group)
>>> [p.text for p in app_view(bob, group).timeline.visible()]
['hello']
>>> check_app_convergence(net, group)
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from microsync.app.docs import SharedDoc
from microsync.app.ops import APP_TYPE, AppOp, DocOp, Kind
from microsync.app.state import AppState
from microsync.app.timeline import AppEntry, Timeline, deps_for
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import MAX_DEPS, Entry, GroupId
from microsync.group.membership import Window
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId
from microsync.state import Document, Op
from microsync.state import encode_op as _encode_op
from microsync.testing.device import SimDevice
from microsync.testing.network import SimNetwork

if TYPE_CHECKING:
    from microsync.net.connection import SyncConnection
    from microsync.node import Device, Group
    from microsync.storage.base import Store

__all__ = [
    "AppOp",
    "AppView",
    "Kind",
    "app_state",
    "app_view",
    "check_app_convergence",
    "connections_of",
    "doc_op",
    "replica_of",
    "store_of",
    "write_app_op",
]


async def _no_publish(op: Op) -> None:
    raise RuntimeError("a view is read-only; write with write_app_op")


@dataclass(slots=True)
class AppView:
    """What one device shows of a group: its timeline (posts, threads, reactions, cursors,
    locations) and its documents, folded from the entries it holds and can open."""

    timeline: Timeline
    docs: dict[str, SharedDoc] = field(default_factory=dict)

    def digest(self) -> tuple[object, ...]:
        """Comparable: equal for devices that show the same state."""
        return (
            self.timeline.summary(),
            tuple((name, d._doc.snapshot_bytes()) for name, d in sorted(self.docs.items())),
        )

    def doc(self, name: str) -> Document:
        """Document ``name`` as shown here (an empty one if it has no operation yet)."""
        found = self.docs.get(name)
        return found._doc if found is not None else Document(b"\x00")


@dataclass(slots=True)
class _Cached:
    view: AppView
    seen: set[bytes]
    windows: dict[DeviceId, tuple[Window, ...]]
    admins: dict[DeviceId, tuple[Window, ...]]


_VIEWS: weakref.WeakKeyDictionary[GroupReplica, _Cached] = weakref.WeakKeyDictionary()


def app_view(device: SimDevice, group: GroupId, *, fresh: bool = False) -> AppView:
    """What ``device`` shows of ``group``, folded the way :class:`microsync.Group` folds it:
    incrementally, each call adding the entries that arrived (and became readable) since the
    last call, in the order they are applied, so the order of arrival matters exactly as much
    as it does on a real device. ``fresh=True`` folds everything held from scratch instead (a
    restart); both must give the same state. A cut-off that reaches back over entries already
    folded (a removal seen late) makes the next call fold again from scratch, as a device
    does."""
    replica = device.replica(group)
    windows = dict(replica.state.windows)
    admins = dict(replica.state.admin_windows)
    cached = None if fresh else _VIEWS.get(replica)
    if cached is not None and any(windows.get(d) != w for d, w in cached.windows.items()):
        cached = None
    if cached is not None and cached.admins != admins:
        cached = None  # a promotion or demotion seen late: moderation is decided again
    if cached is None:
        timeline = Timeline(moderates=lambda d, s: replica.state.moderates(d, s))
        cached = _Cached(AppView(timeline), set(), windows, admins)
        if not fresh:
            _VIEWS[replica] = cached
    cached.windows = windows
    view, seen = cached.view, cached.seen
    store = device.store
    found: list[AppEntry] = []
    for author in store.feeds(group):
        for stored in store.entries(group, author):
            h = stored.entry.header
            if h.type != APP_TYPE or stored.entry.id in seen:
                continue
            if not replica.state.counts(h.device, h.seq):
                continue  # not admitted, or past a removal's or revocation's cut-off
            certificate = store.certificate(h.device)
            if certificate is None:
                continue
            try:
                op = AppOp.from_bytes(replica.decrypt(stored))
            except DecryptionError:
                continue  # no key yet: tried again next time
            except DecodeError:
                seen.add(stored.entry.id)
                continue
            seen.add(stored.entry.id)
            found.append(
                AppEntry(stored.entry.id, h.device, certificate.person, h.seq, h.hlc, h.deps, op)
            )
    for change in view.timeline.add(found):
        op = change.entry.op
        if isinstance(op, DocOp) and op.doc and op.payload:
            if op.doc not in view.docs:
                view.docs[op.doc] = SharedDoc(
                    op.doc, Document(bytes(device.device_id)), _no_publish, lambda: 0
                )
            view.docs[op.doc]._apply(change.entry, op.payload)
    return view


def write_app_op(net: SimNetwork, device: SimDevice, group: GroupId, op: AppOp) -> Entry:
    """Write ``op`` from ``device`` the way :class:`microsync.Group` does: its targets (and,
    for a document operation, this device's previous entry) in ``deps``, a timestamp after
    everything it answers."""
    view = app_view(device, group)
    timeline = view.timeline
    deps = deps_for(op, timeline.heads)
    mine = timeline.latest.get(device.device_id)
    if op.kind is Kind.DOC and mine is not None and mine not in deps:
        deps = (mine, *deps[: MAX_DEPS - 1])
    now = max([net.clock.advance(), *(timeline.applied[d].hlc + 1 for d in deps)])
    return device.replica(group).append_content(APP_TYPE, op.to_bytes(), now=now, deps=deps)


def doc_op(device: SimDevice, group: GroupId, name: str, make: object) -> AppOp:
    """An app operation carrying one document operation: ``make(document)`` performs a local
    edit on ``device``'s current view of document ``name`` and returns the operation."""
    view = app_view(device, group)
    shown = view.docs.get(name)
    document = shown._doc if shown is not None else Document(bytes(device.device_id))
    assert callable(make)
    op = make(document)
    return DocOp(doc=name, payload=_encode_op(op))


def check_app_convergence(net: SimNetwork, group: GroupId) -> None:
    """Raise ``AssertionError`` unless every device holding ``group`` and able to read it
    shows the same app state (use after :meth:`SimNetwork.settle`)."""
    views = {d.name: app_view(d, group) for d in net.holders(group) if d.replica(group).is_member}
    digests = {name: v.digest() for name, v in views.items()}
    first = next(iter(digests.values()), None)
    different = [name for name, d in digests.items() if d != first]
    if different:
        raise AssertionError(f"app state differs on {sorted(different)} from {sorted(digests)[0]}")
    for device in net.holders(group):
        if device.name in views and app_view(device, group, fresh=True).digest() != first:
            raise AssertionError(f"{device.name}: a fresh fold differs from the incremental one")


def app_state(group: Group) -> AppState:
    """The :class:`~microsync.app.state.AppState` a real :class:`microsync.Group` composes:
    its fold, snapshot and documents, for tests that check them directly (every call takes
    ``now``; nothing it returns is delivered to the group's listeners)."""
    return group._app_state


def replica_of(group: Group) -> GroupReplica:
    """The :class:`~microsync.group.replica.GroupReplica` behind a real
    :class:`microsync.Group`: its membership state, keyring and feeds, for tests that check
    what a device resolved or stored, or craft entries as a member would (see also
    :class:`Hostile`). Writing through it bypasses the app layer's checks."""
    return group._replica


def store_of(device: Device) -> Store:
    """The store of a real :class:`microsync.Device` (its ``profile.db``), for tests that
    check what was stored, byte for byte (``dump()``), or that nothing was."""
    return device._store


def connections_of(device: Device) -> list[SyncConnection]:
    """The live sync connections of a started :class:`microsync.Device` (none when it is
    not started), for tests that check what each peer sent or was asked for
    (``connection.session.stats``)."""
    runtime = device._network.runtime
    return [] if runtime is None else list(runtime._connections)
