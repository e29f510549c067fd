"""Locations shared with some members only, each at its own precision
(:mod:`microsync.app.viewers` seals them). Synchronous: every call takes ``now``.

Theory of operation. Sharing with ``{Bob: city, Mum: street}`` seals one envelope per device
of each viewer, coarsened to that viewer's precision before sealing; a viewer dropped since
the last share gets a stop, sealed the same way and padded to the same size. Nothing goes
through the group's shared ciphertext, so a member outside the subset receives nothing: not a
location, not a stop, not an envelope (a viewer cannot tell "stopped" from "never shared").

This device keeps (in its profile, still sealed) the newest envelope per (sender device,
recipient device) that it may hold (:meth:`ViewerBoard.may_hold`): those addressed to it,
and those from or to its own person, which it carries to their recipient whenever it is
connected to it. A stop lives as long as the newest location it replaces, so an offline
viewer gets it from any device that carries it, however long it was away.

Invariants: an envelope is held only from and to current devices of the group, signed by its
sender, never older than the one held for the same pair; only the recipient opens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from microsync import encoding
from microsync.app.ephemeral import MAX_FUTURE_MS, Announcement, AnnouncementKind, coarsen
from microsync.app.ops import Precision
from microsync.app.viewers import Envelope, open_envelope, read_envelope, seal_for
from microsync.encoding import expect_bytes, expect_list
from microsync.errors import MicrosyncError, NotAMember, StaleAnnouncement
from microsync.identity import DeviceId, PersonId

if TYPE_CHECKING:
    from microsync.group.replica import GroupReplica

__all__ = ["ViewerBoard"]

_SLOT = tuple[DeviceId, DeviceId]
_MAX_HELD: Final = 4096  # envelopes kept per group (own person's, to and from): a bound


class ViewerBoard:
    """The per-viewer envelopes this device holds in one group (module doc)."""

    def __init__(self, replica: GroupReplica) -> None:
        self._replica = replica
        self._key = f"app/{replica.id.hex()}/viewer-locations"
        self._held: dict[_SLOT, Envelope] | None = None
        self._opened: dict[DeviceId, Announcement] = {}  # addressed to me, by sender device

    # ------------------------------------------------------------------ holding

    def _board(self, now: int) -> dict[_SLOT, Envelope]:
        if self._held is None:
            self._held = {}
            data = self._replica.store.get_meta(self._key)
            items = [] if data is None else expect_list(encoding.decode(data, max_size=2**24), "")
            for item in items:
                try:
                    self._accept(expect_bytes(item, "envelope", max_size=4096), now)
                except MicrosyncError:
                    continue  # expired since, or its sender or recipient left: forget it
        return self._held

    def _save(self, now: int) -> None:
        held = self._board(now)
        for slot in [s for s, e in held.items() if e.expires_at <= now]:
            del held[slot]
            if slot[1] == self._replica.me.device:
                self._opened.pop(slot[0], None)
        value: list[encoding.Value] = [e.data for _, e in sorted(held.items())]
        self._replica.store.put_meta(self._key, encoding.encode(value))

    def _person(self, device: DeviceId) -> PersonId:
        person = self._replica.state.person_of(device)
        if person is None:
            raise NotAMember("an envelope from or to a device that is not in the group")
        return person

    def may_hold(self, envelope: Envelope, holder: DeviceId) -> bool:
        """Whether ``holder`` may be given ``envelope``: it is its recipient, or a device of
        the sender's or the recipient's person (it carries it there); never its sender."""
        if holder == envelope.sender:
            return False
        if holder == envelope.recipient:
            return True
        holder_person = self._replica.state.person_of(holder)
        ends = {self._person(envelope.sender), self._person(envelope.recipient)}
        return holder_person is not None and holder_person in ends

    def _accept(self, data: bytes, now: int) -> tuple[Envelope, Announcement | None, bool]:
        replica = self._replica
        e = read_envelope(data, group=replica.id)
        me = replica.me.device
        if e.sender != me and not self.may_hold(e, me):
            raise NotAMember("this envelope is not for this device")
        if e.expires_at <= now or e.issued_at > now + MAX_FUTURE_MS:
            raise StaleAnnouncement("envelope expired or dated in the future")
        held = self._board(now)
        slot = (e.sender, e.recipient)
        known = held.get(slot)
        if known is not None and known.data == data:
            return e, self._opened.get(e.sender) if e.recipient == me else None, False
        if known is not None and known.issued_at >= e.issued_at:
            raise StaleAnnouncement("an envelope at least as new is already held")
        opened = None
        if e.recipient == me:
            opened = open_envelope(e, group=replica.id, prekeys=replica.me.prekeys)
        if len(held) >= _MAX_HELD and known is None:
            raise StaleAnnouncement("too many envelopes held in this group")
        held[slot] = e
        if opened is not None:
            self._opened[e.sender] = opened
        return e, opened, True

    def receive(self, data: bytes, now: int) -> tuple[bool, Announcement | None]:
        """Take an envelope a peer passed on: whether it was news, and what it said if it
        was addressed to this device. Raises a typed error and keeps nothing otherwise."""
        _, opened, fresh = self._accept(bytes(data), now)
        if fresh:
            self._save(now)
        return fresh, opened

    def for_peer(self, peer: DeviceId, now: int) -> list[bytes]:
        """The unexpired envelopes held that ``peer`` may be given."""
        out = []
        for e in self._board(now).values():
            try:
                if e.expires_at > now and self.may_hold(e, peer):
                    out.append(e.data)
            except NotAMember:
                continue  # its sender or recipient left since
        return out

    def route(self, data: bytes, peer: DeviceId) -> bool:
        """Whether the envelope ``data`` may go to ``peer`` (``False`` if it is none)."""
        try:
            return self.may_hold(read_envelope(data, group=self._replica.id), peer)
        except MicrosyncError:
            return False

    # ------------------------------------------------------------------ reading

    def seen(self, now: int) -> list[Announcement]:
        """The newest location or stop addressed to this device from each sender device."""
        self._board(now)
        return [a for a in self._opened.values() if a.expires_at > now]

    def last_issued(self, now: int) -> int:
        """When this person's devices last issued an envelope held here (0: never): a new
        one is dated after it, so a stop never ties with the location it replaces."""
        me, state = self._replica.me, self._replica.state
        return max(
            (
                e.issued_at
                for e in self._board(now).values()
                if e.sender == me.device or state.person_of(e.sender) == me.person
            ),
            default=0,
        )

    def _mine(self, now: int) -> dict[DeviceId, Envelope]:
        """The newest unexpired envelope from this person's devices, per recipient device."""
        me = self._replica.me.person
        out: dict[DeviceId, Envelope] = {}
        for (sender, recipient), e in self._board(now).items():
            if e.expires_at <= now or self._replica.state.person_of(sender) != me:
                continue
            if recipient not in out or out[recipient].issued_at < e.issued_at:
                out[recipient] = e
        return out

    # ------------------------------------------------------------------ sharing

    def share(
        self,
        lat: float,
        lon: float,
        viewers: Mapping[PersonId, Precision],
        label: str | None,
        lifetime: tuple[int, int],
        now: int,
    ) -> list[bytes]:
        """Seal this person's location for every device of each of ``viewers`` at its
        precision, and a stop for every device that had one from this person and is no
        longer a viewer's; keep them and return them to send."""
        state, issued = self._replica.state, lifetime[0]
        out = []
        chosen: set[DeviceId] = set()
        for person, precision in sorted(viewers.items()):
            member = state.members.get(person)
            if member is None or person == self._replica.me.person:
                raise NotAMember("share with current members other than yourself")
            micro_lat, micro_lon = coarsen(lat, lon, str(precision))
            for device in sorted(member.devices):
                chosen.add(device)
                a = Announcement(
                    AnnouncementKind.LOCATION,
                    self._replica.me.device,
                    issued,
                    lifetime[1],
                    lat=micro_lat,
                    lon=micro_lon,
                    precision=str(precision),
                    label=label,
                )
                out.append(self._seal(a, device, now))
        out += self.stop(now, issued, keep=chosen)
        return out

    def stop(self, now: int, issued: int, *, keep: set[DeviceId] | None = None) -> list[bytes]:
        """A stop for every device that holds a location from this person (but those in
        ``keep``), living as long as what it replaces."""
        out = []
        for recipient, e in sorted(self._mine(now).items()):
            if keep is not None and recipient in keep:
                continue
            expires = max(e.expires_at, issued + 1000)
            a = Announcement(
                AnnouncementKind.LOCATION_STOPPED, self._replica.me.device, issued, expires
            )
            out.append(self._seal(a, recipient, now))
        return out

    def _seal(self, a: Announcement, recipient: DeviceId, now: int) -> bytes:
        replica = self._replica
        info = replica.state.device(recipient)
        if info is None:
            raise NotAMember("a viewer device that is not in the group")
        sealed = seal_for(
            a,
            group=replica.id,
            recipient=recipient,
            prekey_id=info.prekey_id,
            prekey=info.prekey,
            signer=replica.me.identity.device_key,
            rng=replica.me.rng,
        )
        self._accept(sealed, now)
        self._save(now)
        return sealed
