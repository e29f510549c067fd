"""What changed in a group's membership and feeds since the last look: members who joined or
left, this device's own exit, and devices found forked. Synchronous: each look returns the
events it found, for the group to deliver."""

from __future__ import annotations

from microsync.app.events import DeviceForked, ForkDetected, MemberJoined, MemberLeft
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId
from microsync.node.events import Event, Exited
from microsync.node.exits import exit_of

__all__ = ["MembershipWatch"]


class MembershipWatch:
    """Remembers the members, the membership and the fork points of ``replica`` as last seen."""

    def __init__(self, replica: GroupReplica) -> None:
        self._replica = replica
        self._members = set(replica.state.members)
        self._was_member = replica.is_member
        self._forks = self._fork_points()

    def members(self) -> list[Event]:
        """``member_joined`` / ``member_left`` for what changed since the last look (entries
        received, or this device's own operations such as admitting an invite), and this
        device's ``exit`` when it is no longer a member."""
        events: list[Event] = []
        now = set(self._replica.state.members)
        events += [MemberJoined(person=person) for person in sorted(now - self._members)]
        events += [MemberLeft(person=person) for person in sorted(self._members - now)]
        self._members = now
        if self._was_member and not self._replica.is_member:
            found = exit_of(self._replica)
            events.append(Exited(person=None if found is None else found.by, exit=found))
        self._was_member = self._replica.is_member
        return events

    def forked(self, device: DeviceId) -> bool:
        """Was ``device``'s feed forked when last looked (:meth:`forks`, called whenever a
        fork point may have moved)?"""
        return device in self._forks

    def _fork_points(self) -> dict[DeviceId, int]:
        feeds = self._replica.store.feeds(self._replica.id)
        return {d: s.forked_at for d, s in feeds.items() if s.forked_at is not None}

    def forks(self) -> tuple[dict[DeviceId, int], list[Event]]:
        """Every fork point now (device -> seq), and a ``device_forked`` event for each fork
        found, or found earlier in its feed, since the last look (none: nothing changed)."""
        points = self._fork_points()
        fresh = {d: s for d, s in points.items() if s < self._forks.get(d, s + 1)}
        self._forks = points
        events: list[Event] = []
        for device, seq in sorted(fresh.items()):
            certificate = self._replica.store.certificate(device)
            person = None if certificate is None else certificate.person
            events.append(ForkDetected(person=person, fork=DeviceForked(device=device, seq=seq)))
        return points, events
