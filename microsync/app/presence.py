"""Presence and coarse location on :class:`microsync.Group`, from ephemeral announcements
(:mod:`microsync.app.ephemeral`): signed, encrypted, short-lived, never in a feed.

A device announces itself (``announce_presence``) and, when its person shares a location,
where it is at the chosen precision. Peers keep the latest announcement of each device, pass it
on to other members (:meth:`PresenceState.announcements`, :meth:`PresenceState.receive`: the
sync layer moves the bytes) and forget it when it expires. The latest ones are kept in the
profile, still sealed, so a restart (or a command-line call after ``microsync serve``) sees them
too; nothing older than the latest is ever kept.

Presence is the user's to give: a device announces itself by itself (the heartbeat) only in a
group that opted in (:attr:`PresenceState.sharing`, kept in the profile, off by default).
Locations for some members only travel as per-viewer envelopes, held by
:attr:`PresenceState.viewers` (:mod:`microsync.app.location`); :meth:`PresenceState.locations`
merges them with the group's announcements and kept entries, the newest per person winning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.app.ephemeral import (
    MAX_TTL_MS,
    STATUSES,
    Announcement,
    AnnouncementKind,
    Board,
    coarsen,
    open_announcement,
    seal_announcement,
)
from microsync.app.events import (
    AppEvent,
    Location,
    LocationChanged,
    Presence,
    PresenceChanged,
    SharingStopped,
)
from microsync.app.location import ViewerBoard
from microsync.app.ops import LocationOp, Precision
from microsync.app.saved import Keys
from microsync.app.viewers import is_envelope
from microsync.app.views import when
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import MicrosyncError, NotAMember
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.app.state import AppState
    from microsync.group.replica import GroupReplica

__all__ = ["LOCATION_TTL", "PRESENCE_TTL", "Location", "Presence", "PresenceState"]

PRESENCE_TTL: Final = 120.0
"""Default lifetime of a presence announcement, seconds (``Device.start`` renews it)."""
LOCATION_TTL: Final = 12 * 3600.0
"""Default lifetime of a shared location, seconds."""


_MAX_BUMP_MS: Final = 60_000
"""Furthest ahead of the clock a new announcement is dated to come after this person's kept
location (a far-future kept entry must not date announcements that receivers would refuse)."""


class PresenceState:
    """The presence and location board of one group (module doc). Synchronous: every call
    takes ``now``; what produces events returns them, and announcing returns the sealed bytes
    for the caller to send. Reads of activity and kept locations come from ``app``."""

    def __init__(self, replica: GroupReplica, app: AppState) -> None:
        self._replica = replica
        self._app = app
        self._key = Keys(replica.id).board
        self._sharing_key = f"app/{replica.id.hex()}/presence-sharing"
        self._announced: Board | None = None
        self.viewers = ViewerBoard(replica)
        """Locations shared with some members only (:mod:`microsync.app.location`)."""

    # ------------------------------------------------------------------ opting in

    @property
    def sharing(self) -> bool:
        """Whether this device announces its presence in this group by itself (the heartbeat
        of a started device). Off until the app opts in; kept in the profile."""
        return self._replica.store.get_meta(self._sharing_key) == b"\x01"

    def set_sharing(self, on: bool, now: int) -> bytes | None:
        """Opt in or out; opting out while this device shows online returns a sealed
        ``"offline"`` announcement to send (peers stop showing it at once)."""
        self._replica.store.put_meta(self._sharing_key, b"\x01" if on else b"\x00")
        me = self._replica.me.device
        shown = [a for a in self._board(now).current("presence", now) if a.device == me]
        if on or not shown or shown[0].status == "offline" or not self._replica.is_member:
            return None
        return self.announce(self.presence_announcement("offline", PRESENCE_TTL, now), now)

    # ------------------------------------------------------------------ the board

    def _board(self, now: int) -> Board:
        if self._announced is None:
            board = Board()
            data = self._replica.store.get_meta(self._key)
            if data is not None:
                for item in expect_list(encoding.decode(data, max_size=2**22), "board"):
                    sealed = expect_bytes(item, "announcement", max_size=4096)
                    try:
                        self._admit(board, sealed, now)
                    except MicrosyncError:
                        continue  # expired since, or its author left: forget it
            self._announced = board
        return self._announced

    def _admit(self, board: Board, sealed: bytes, now: int) -> tuple[Announcement, bool]:
        replica = self._replica
        announcement = open_announcement(sealed, group=replica.id, key_for=replica.key_for)
        if replica.state.device(announcement.device) is None:
            raise NotAMember("announcement from a device that is not in the group")
        return announcement, board.accept(announcement, sealed, now=now)

    def _save(self, board: Board, now: int) -> None:
        board.expire(now)
        value: list[encoding.Value] = list(board.sealed(now))
        self._replica.store.put_meta(self._key, encoding.encode(value))

    def receive(self, data: bytes, now: int, *, listening: bool = True) -> list[AppEvent] | None:
        """Take a sealed announcement (or a per-viewer envelope) a peer passed on: ``None``
        for a duplicate, else the events it made (none unless ``listening``). Raises like
        ``Group.receive_announcement`` and changes nothing for anything else."""
        if is_envelope(data):
            fresh, opened = self.viewers.receive(data, now)
            if not fresh:
                return None
            return self._event(opened, now) if listening and opened is not None else []
        board = self._board(now)
        announcement, fresh = self._admit(board, bytes(data), now)
        if not fresh:
            return None
        self._save(board, now)
        return self._event(announcement, now) if listening else []

    def announcements(
        self, now: int, *, excluding: bytes | None = None, to: DeviceId | None = None
    ) -> list[bytes]:
        """Every unexpired announcement held, sealed (``excluding`` that peer's own), and
        with ``to`` the per-viewer envelopes that device may be given."""
        out = self._board(now).sealed(now, excluding=excluding)
        return out if to is None else out + self.viewers.for_peer(to, now)

    def _event(self, announcement: Announcement, now: int) -> list[AppEvent]:
        person = self._replica.state.person_of(announcement.device)
        if person is None:
            return []
        if announcement.kind is AnnouncementKind.PRESENCE:
            return [PresenceChanged(person=person, presence=self.presence(now).get(person))]
        location = self.locations(now).get(person)
        stopped = None
        if location is None:
            name = self._replica.state.members[person].name
            at = when(announcement.issued_at)
            stopped = SharingStopped(person_id=person, name=name, at=at)
        return [LocationChanged(person=person, location=location, stopped=stopped)]

    def announce(self, announcement: Announcement, now: int) -> bytes:
        """Seal this device's ``announcement``, keep it on the board, and return the sealed
        bytes (the caller sends them to peers)."""
        replica = self._replica
        if not replica.is_member:
            raise NotAMember("this device is not a member of the group")
        epoch = replica.ensure_writable(now=now)
        sealed = seal_announcement(
            announcement,
            group=replica.id,
            epoch=epoch,
            signer=replica.me.identity.device_key,
            rng=replica.me.rng,
        )
        board = self._board(now)
        board.accept(announcement, sealed, now=now)
        self._save(board, now)
        return sealed

    def _lifetime(self, ttl: float, now: int) -> tuple[int, int]:
        ttl_ms = int(ttl * 1000)
        if not 1000 <= ttl_ms <= MAX_TTL_MS:
            raise ValueError("ttl is between 1 second and 7 days")
        # never dated at or before anything this person issued or kept that it may replace
        # (a stop in the same millisecond as its share must win everywhere): the held
        # announcements of this person's devices, their envelopes, the kept location
        held, state, me = self._board(now)._held, self._replica.state, self._replica.me
        mine = [
            h.announcement.issued_at
            for (device, _), h in held.items()
            if device == me.device or state.person_of(device) == me.person
        ]
        mine.append(self.viewers.last_issued(now))
        if self._app.loaded:  # (a kept location needs the fold; it is loaded by any share)
            timeline = self._app.timeline(now)
            kept = timeline.locations.get(me.person)
            if kept is not None:  # (its time may run a little ahead: never more than 1 min)
                mine.append(min(timeline.shown_at(kept), now + _MAX_BUMP_MS))
        issued = max([now, *(t + 1 for t in mine)])
        return issued, issued + ttl_ms

    # ------------------------------------------------------------------ presence

    def presence_announcement(self, status: str, ttl: float, now: int) -> Announcement:
        """This device's announcement that it is ``status`` for ``ttl`` seconds."""
        if status not in STATUSES:
            raise ValueError(f"status is one of {', '.join(STATUSES)}")
        issued, expires = self._lifetime(ttl, now)
        device = self._replica.me.device
        return Announcement(AnnouncementKind.PRESENCE, device, issued, expires, status=status)

    def presence(self, now: int) -> dict[PersonId, Presence]:
        """Every current member: online (a device's unexpired ``"online"``/``"away"``
        announcement), its status, and when it was last seen."""
        board = self._board(now)
        state = self._replica.state
        current: dict[DeviceId, Announcement] = {
            a.device: a for a in board.current("presence", now) if a.status != "offline"
        }
        active = self._app.timeline(now).active
        out: dict[PersonId, Presence] = {}
        for person, member in sorted(state.members.items()):
            devices = [current[d] for d in sorted(member.devices) if d in current]
            seen = [board.last_seen.get(d, 0) for d in member.devices]
            seen.append(active.get(person, 0))
            last = max(seen)
            status = None
            if devices:
                status = "online" if any(a.status == "online" for a in devices) else "away"
            out[person] = Presence(
                person_id=person,
                name=member.name,
                online=bool(devices),
                status=status,
                last_seen=when(last) if last else None,
            )
        return out

    # ------------------------------------------------------------------ location

    def location_announcement(
        self, lat: float, lon: float, precision: str, ttl: float, now: int, label: str | None = None
    ) -> tuple[Announcement, LocationOp]:
        """This device's location announcement, coarsened to ``precision`` *here* (with a
        coarse precision the exact position never leaves this function), and the same as an
        operation to keep in history."""
        micro_lat, micro_lon = coarsen(lat, lon, precision)
        issued, expires = self._lifetime(ttl, now)
        announcement = Announcement(
            AnnouncementKind.LOCATION,
            self._replica.me.device,
            issued,
            expires,
            lat=micro_lat,
            lon=micro_lon,
            precision=precision,
            label=label,
        )
        kept = LocationOp(lat=micro_lat, lon=micro_lon, precision=Precision(precision), label=label)
        return announcement, kept

    def lifetime(self, ttl: float, now: int) -> tuple[int, int]:
        """When an announcement of this device issued now is dated, and expires after ``ttl``
        seconds (never dated before one it issued earlier)."""
        return self._lifetime(ttl, now)

    def stop_announcement(self, now: int) -> Announcement:
        """The announcement that withdraws this person's location from the whole group: it
        lives as long as the longest location of this person's it replaces."""
        issued, expires = self._lifetime(LOCATION_TTL * 2, now)
        state, me = self._replica.state, self._replica.me.person
        for a in self._board(now).current("location", now):
            if state.person_of(a.device) == me:
                expires = max(expires, min(a.expires_at, issued + MAX_TTL_MS))
        device = self._replica.me.device
        return Announcement(AnnouncementKind.LOCATION_STOPPED, device, issued, expires)

    def shares_with_group(self, now: int) -> bool:
        """Whether the whole group sees a location of this person now (a group-wide
        announcement, or a kept one no stop has replaced)."""
        state, me = self._replica.state, self._replica.me.person
        mine = [
            a for a in self._board(now).current("location", now) if state.person_of(a.device) == me
        ]
        latest = max(mine, key=lambda a: a.issued_at, default=None)
        timeline = self._app.timeline(now)
        kept = timeline.locations.get(me)
        if kept is not None and (latest is None or timeline.shown_at(kept) > latest.issued_at):
            return True
        return latest is not None and latest.kind is AnnouncementKind.LOCATION

    def locations(self, now: int) -> dict[PersonId, Location]:
        """Each current member's latest shared location (members who never shared, or who
        stopped, are absent), with its age."""
        state = self._replica.state
        latest: dict[PersonId, tuple[int, int, int, str, str | None] | None] = {}
        stamp: dict[PersonId, int] = {}
        seen = [*self._board(now).current("location", now), *self.viewers.seen(now)]
        # oldest first, so the latest wins; on a tie (two devices of one person in the same
        # millisecond) a stop wins, then the greater device id: the same on every device
        seen.sort(
            key=lambda a: (a.issued_at, a.kind is AnnouncementKind.LOCATION_STOPPED, a.device)
        )
        for a in seen:
            person = state.person_of(a.device)
            if person is None or a.issued_at < stamp.get(person, -1):
                continue
            stamp[person] = a.issued_at
            if a.kind is AnnouncementKind.LOCATION_STOPPED:
                latest[person] = None
            else:
                assert a.lat is not None and a.lon is not None and a.precision is not None
                latest[person] = (a.issued_at, a.lat, a.lon, a.precision, a.label)
        timeline = self._app.timeline(now)
        for person, entry in timeline.locations.items():
            op = entry.op
            shown = timeline.shown_at(entry)  # a far-future entry does not pin it
            if person not in state.members or shown <= stamp.get(person, -1):
                continue
            assert isinstance(op, LocationOp)
            stamp[person] = shown
            latest[person] = (shown, op.lat, op.lon, op.precision, op.label)
        out: dict[PersonId, Location] = {}
        for person, found in sorted(latest.items()):
            if found is None:
                continue
            at, lat, lon, precision, label = found
            out[person] = Location(
                person_id=person,
                name=state.members[person].name,
                lat=lat / 1_000_000,
                lon=lon / 1_000_000,
                precision=Precision(precision),
                at=when(at),
                age=max(0.0, (now - at) / 1000),
                label=label,
            )
        return out
