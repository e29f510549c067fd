"""Presence and coarse location on :class:`microsync.Group`, from ephemeral announcements
(:mod:`microsync.app.ephemeral`): signed, encrypted, short-lived, never in a feed.

A device announces itself (``announce_presence``) and, when its person shares a location,
where it is at the chosen precision. Peers keep the latest announcement of each device, pass it
on to other members (:meth:`PresenceMixin.announcements`, :meth:`receive_announcement`: the
sync layer moves the bytes) and forget it when it expires. The latest ones are kept in the
profile, still sealed, so a restart (or a command-line call after ``microsync serve``) sees them
too; nothing older than the latest is ever kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.app.api import AppMixin, when
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
from microsync.app.events import Location, LocationChanged, Presence, PresenceChanged
from microsync.app.ops import LocationOp, Precision
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import MicrosyncError, NotAMember
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica

__all__ = ["Location", "Presence", "PresenceMixin"]

PRESENCE_TTL: Final = 120.0
"""Default lifetime of a presence announcement, seconds (``Device.start`` renews it)."""
LOCATION_TTL: Final = 12 * 3600.0
"""Default lifetime of a shared location, seconds."""


def _when(ms: int) -> datetime:
    return when(ms)


class PresenceMixin(AppMixin):
    """The posts and reads of :class:`~microsync.app.api.AppMixin`, plus presence and
    location; mixed into :class:`microsync.Group`."""

    _replica: GroupReplica
    _announced: Board | None = None

    # ------------------------------------------------------------------ the board

    @property
    def _board_key(self) -> str:
        return f"app/{self._replica.id.hex()}/announcements"

    def _board(self) -> Board:
        if self._announced is None:
            board = Board()
            data = self._replica.store.get_meta(self._board_key)
            now = self._now()
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

    def _save_board(self, board: Board) -> None:
        now = self._now()
        board.expire(now)
        value: list[encoding.Value] = list(board.sealed(now))
        self._replica.store.put_meta(self._board_key, encoding.encode(value))

    def receive_announcement(self, data: bytes) -> bool:
        """Take a sealed presence or location announcement that a peer passed on.

        ``True`` if it was news (and an event was emitted), ``False`` for a duplicate. Raises a
        typed error and changes nothing for anything else: :class:`~microsync.errors.DecodeError`
        (malformed), :class:`~microsync.errors.DecryptionError` (no key of this group opens
        it), :class:`~microsync.errors.BadSignature`, :class:`NotAMember` (its device is not in
        the group), :class:`~microsync.errors.StaleAnnouncement` (expired, from the future, or
        older than the one held).
        """
        board = self._board()
        announcement, fresh = self._admit(board, bytes(data), self._now())
        if fresh:
            self._save_board(board)
            self._announce_event(announcement)
        return fresh

    def announcements(self, *, excluding: bytes | None = None) -> list[bytes]:
        """Every unexpired announcement this device holds (its own and other members'),
        sealed, for passing on to a connected peer (``excluding`` that peer's own)."""
        return self._board().sealed(self._now(), excluding=excluding)

    def _announce_event(self, announcement: Announcement) -> None:
        if not self._wants_events():
            return
        person = self._replica.state.person_of(announcement.device)
        if person is None:
            return
        if announcement.kind is AnnouncementKind.PRESENCE:
            self._emit(PresenceChanged(person=person, presence=self.presence().get(person)))
        else:
            self._emit(LocationChanged(person=person, location=self.locations().get(person)))

    async def _announce(self, announcement: Announcement) -> None:
        replica = self._replica
        if not replica.is_member:
            raise NotAMember("this device is not a member of the group")
        epoch = replica.ensure_writable(now=self._now())
        sealed = seal_announcement(
            announcement,
            group=replica.id,
            epoch=epoch,
            signer=replica.me.identity.device_key,
            rng=replica.me.rng,
        )
        board = self._board()
        board.accept(announcement, sealed, now=self._now())
        self._save_board(board)
        self._after_announce(sealed)

    def _after_announce(self, sealed: bytes) -> None:
        """Hook: an announcement of this device was made (the node sends it to peers)."""

    def _lifetime(self, ttl: float) -> tuple[int, int]:
        ttl_ms = int(ttl * 1000)
        if not 1000 <= ttl_ms <= MAX_TTL_MS:
            raise ValueError("ttl is between 1 second and 7 days")
        now = self._now()
        held = self._board()._held  # never issue an announcement older than our last one
        mine = [
            h.announcement.issued_at
            for (device, _), h in held.items()
            if device == self._replica.me.device
        ]
        issued = max([now, *(t + 1 for t in mine)])
        return issued, issued + ttl_ms

    # ------------------------------------------------------------------ presence

    async def announce_presence(self, status: str = "online", *, ttl: float = PRESENCE_TTL) -> None:
        """Tell the group this device is ``"online"`` (or ``"away"``, ``"offline"``) for the
        next ``ttl`` seconds. A running device renews this itself."""
        if status not in STATUSES:
            raise ValueError(f"status is one of {', '.join(STATUSES)}")
        issued, expires = self._lifetime(ttl)
        device = self._replica.me.device
        await self._announce(
            Announcement(AnnouncementKind.PRESENCE, device, issued, expires, status=status)
        )

    def presence(self) -> dict[PersonId, Presence]:
        """Every current member: online (a device's unexpired ``"online"``/``"away"``
        announcement), its status, and when it was last seen."""
        now = self._now()
        board = self._board()
        state = self._replica.state
        current: dict[DeviceId, Announcement] = {
            a.device: a for a in board.current("presence", now) if a.status != "offline"
        }
        active = self._timeline().active
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
                last_seen=_when(last) if last else None,
            )
        return out

    # ------------------------------------------------------------------ location

    async def share_location(
        self,
        lat: float,
        lon: float,
        precision: str = "city",
        *,
        ttl: float = LOCATION_TTL,
        keep_history: bool = False,
    ) -> Location:
        """Share where this person is, at ``precision`` (``"exact"``, ``"street"``, ``"city"``
        or ``"region"``), for ``ttl`` seconds.

        The position is coarsened to the centre of its cell *here*, before anything is
        encoded or encrypted: with a coarse precision, the exact position never leaves this
        device. By default only the latest location is kept anywhere (an ephemeral
        announcement); ``keep_history=True`` also writes it to the group's feed, where it stays.
        """
        micro_lat, micro_lon = coarsen(lat, lon, precision)
        issued, expires = self._lifetime(ttl)
        device = self._replica.me.device
        announcement = Announcement(
            AnnouncementKind.LOCATION,
            device,
            issued,
            expires,
            lat=micro_lat,
            lon=micro_lon,
            precision=precision,
        )
        await self._announce(announcement)
        if keep_history:
            op = LocationOp(lat=micro_lat, lon=micro_lon, precision=Precision(precision))
            await self._write(op)
        found = self.locations().get(self._person())
        assert found is not None
        return found

    async def stop_sharing_location(self) -> None:
        """Withdraw this person's location: peers drop it as soon as they hear this."""
        issued, expires = self._lifetime(LOCATION_TTL * 2)
        device = self._replica.me.device
        await self._announce(
            Announcement(AnnouncementKind.LOCATION_STOPPED, device, issued, max(expires, issued))
        )

    def locations(self) -> dict[PersonId, Location]:
        """Each current member's latest shared location (members who never shared, or who
        stopped, are absent), with its age."""
        now = self._now()
        state = self._replica.state
        latest: dict[PersonId, tuple[int, int, int, str] | None] = {}
        stamp: dict[PersonId, int] = {}
        for a in self._board().current("location", now):
            person = state.person_of(a.device)
            if person is None or a.issued_at <= stamp.get(person, -1):
                continue
            stamp[person] = a.issued_at
            if a.kind is AnnouncementKind.LOCATION_STOPPED:
                latest[person] = None
            else:
                assert a.lat is not None and a.lon is not None and a.precision is not None
                latest[person] = (a.issued_at, a.lat, a.lon, a.precision)
        timeline = self._timeline()
        for person, entry in timeline.locations.items():
            op = entry.op
            shown = timeline.shown_at(entry)  # a far-future entry does not pin it
            if person not in state.members or shown <= stamp.get(person, -1):
                continue
            assert isinstance(op, LocationOp)
            stamp[person] = shown
            latest[person] = (shown, op.lat, op.lon, op.precision)
        out: dict[PersonId, Location] = {}
        for person, found in sorted(latest.items()):
            if found is None:
                continue
            at, lat, lon, precision = found
            out[person] = Location(
                person_id=person,
                name=state.members[person].name,
                lat=lat / 1_000_000,
                lon=lon / 1_000_000,
                precision=Precision(precision),
                at=_when(at),
                age=max(0.0, (now - at) / 1000),
            )
        return out
