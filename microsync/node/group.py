"""The group face: :class:`Group`, one group as a :class:`~microsync.node.Device` holds it.
:class:`Member` and :class:`InviteStatus`, the records its reads return, live in
:mod:`microsync.node.roster` and are re-exported here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from microsync.app.events import Location, Post, Presence
from microsync.app.ops import AppOperation, DeleteOp, EditOp, ReactOp, UnreactOp
from microsync.app.presence import LOCATION_TTL, PRESENCE_TTL, PresenceState
from microsync.app.state import AppState
from microsync.app.timeline import Timeline
from microsync.crypto import fingerprint
from microsync.feed import Entry, EntryId, GroupId
from microsync.group.invite import Invite
from microsync.group.join import issue_invite
from microsync.group.ops import Role
from microsync.group.replica import GroupReplica
from microsync.identity import DeviceId, PersonId
from microsync.node import documents, keeper_settings, posting, sharing, whats_new
from microsync.node.admin import refuse_last_admin
from microsync.node.events import Event, listen
from microsync.node.exits import GroupExit, exit_of
from microsync.node.moderation import cap_of, hide_posts_of, remove_member
from microsync.node.news import Cursor, WhatsNew
from microsync.node.peers import KnownPeer, known_peers
from microsync.node.roster import InviteStatus, Member, invite_statuses, members_of
from microsync.node.sharing import Viewers
from microsync.node.vault import Vault
from microsync.node.watch import MembershipWatch
from microsync.node.whats_new import Since

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["Group", "InviteStatus", "Member"]


class Group:
    """One group as this device holds it. Reads are plain methods; writes are ``async``.

    Get one from :meth:`Device.create_group` or :meth:`Device.groups`. It owns its replica
    and composes the app state (:class:`~microsync.app.state.AppState`: posts, replies,
    reactions, read cursors, documents), the presence board
    (:class:`~microsync.app.presence.PresenceState`) and the vault; their methods here are
    thin delegates that pass the clock in and deliver the events they return.
    """

    max_members = property(cap_of)  # the member cap set at creation (None: no cap)
    hide_posts_of = hide_posts_of  # an admin hides a person's posts, for everyone

    def __init__(self, device: Device, replica: GroupReplica) -> None:
        self._device = device
        self._replica = replica
        replica.on_append = device._changed
        self._app_state = AppState(replica)
        self._app_state.listening = False  # until events() has a listener
        self._presence = PresenceState(replica, self._app_state)
        self._watch = MembershipWatch(replica)
        self._listeners: list[asyncio.Queue[Event]] = []

    @property
    def id(self) -> GroupId:
        return self._replica.id

    @property
    def device(self) -> Device:
        """The :class:`~microsync.Device` that holds this group (to start syncing it, ask for
        its peers, or open another of its groups)."""
        return self._device

    @property
    def name(self) -> str:
        return self._replica.state.name

    @property
    def history(self) -> str:
        """``"shared"`` or ``"none"``: whether later members may read earlier content."""
        return self._replica.state.history

    @property
    def epoch(self) -> int:
        """The number of the epoch this device writes in (-1 while a rotation is due)."""
        current = self._replica.state.current_epoch()
        return -1 if current is None else current.number

    def is_member(self) -> bool:
        return self._replica.is_member

    def exit(self) -> GroupExit | None:
        """How this device came to be out of the group (removed, and by whom; left; revoked),
        or ``None`` while it is a member. Read-only (:mod:`microsync.node.exits`)."""
        return exit_of(self._replica)

    def members(self) -> list[Member]:
        """Current members, admins first, then by name."""
        return members_of(self._replica)

    def _now(self) -> int:
        return self._device.clock()

    def _person(self) -> PersonId:
        return self._device.person_id

    def _device_owner(self, device: DeviceId) -> str | None:
        """The name of the member whose device ``device`` is, if one is."""
        members = self._replica.state.members.values()
        return next((m.name for m in members if device in m.devices), None)

    def _person_name(self, person: PersonId) -> str | None:
        """``person``'s name as a member of this group, if it is one."""
        member = self._replica.state.members.get(person)
        return None if member is None else member.name

    @property
    def vault(self) -> Vault:
        """The group's vault of encrypted files (:class:`~microsync.node.vault.Vault`)."""
        found: Vault | None = self.__dict__.get("_vault")
        if found is None:
            found = self.__dict__["_vault"] = Vault(self)
        return found

    def known_peers(self) -> list[KnownPeer]:
        """Where this device last finished a sync of this group, most recent first: addresses
        it dialled and relays it met members through (:mod:`microsync.node.peers`)."""
        return known_peers(self._device._store, self.id)

    # ------------------------------------------------------------------ events

    def _emit(self, event: Event) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)

    def _deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            self._emit(event)

    def events(self) -> AsyncGenerator[Event, None]:
        """Every change from this call on: posts, replies, edits, deletes, expiries, reactions,
        vault files, members joining or leaving, a device found forked (its posts from the fork
        on leave :meth:`feed`), this device's own ``"exit"`` (``detail``: the :class:`GroupExit`,
        ``person``: who did it). One class per kind (:data:`microsync.Event`); ``async for``."""
        return listen(self)

    def _check_members(self) -> None:
        """Emit ``member_joined`` / ``member_left`` for what changed since the last check
        (entries received, or this device's own operations such as admitting an invite), and
        this device's ``exit``."""
        self._deliver(self._watch.members())

    def _check_forks(self) -> None:
        """Emit ``device_forked`` for every fork found (or found earlier in its feed) since the
        last check, and take what the device wrote from its fork on out of the view."""
        points, events = self._watch.forks()
        if events:
            self._replica.forget_forked()
            self._app_state.forget_forked(points, self._now())
            self._deliver(events)

    # ------------------------------------------------------------------ app state

    @property
    def _app(self) -> AppState | None:
        """The app state once it is loaded in this process (else ``None``)."""
        return self._app_state if self._app_state.loaded else None

    def _timeline(self) -> Timeline:
        return self._app_state.timeline(self._now())

    def _app_pending(self, pending: Sequence[tuple[Entry, bytes]]) -> None:
        """Entries stored as pending (a gap before them in their feed): shown provisionally."""
        self._deliver(self._app_state.pending(pending, self._now()))

    def _app_received(
        self, accepted: Sequence[Entry], known: Mapping[EntryId, bytes | None] | None = None
    ) -> None:
        """Called after entries of this group were stored (sync, or this device's own)."""
        self._deliver(self._app_state.received(accepted, self._now(), known))

    async def _write(self, op: AppOperation) -> Entry:
        stored, events = self._app_state.write_stored(op, self._now())
        net = self._device._net  # committed: live peers get it as it is (Runtime.written)
        if net is not None and not self._watch.forked(stored.entry.header.device):
            net.written(self.id, (stored.entry.wire, stored.body))
        self._deliver(events)
        return stored.entry

    def snapshot(self) -> None:
        """Save a snapshot of this group's app state in the profile, so the next start folds
        it plus the entries stored since instead of decrypting all history again. Devices do
        this themselves when they close; it is never needed for correctness."""
        self._app_state.snapshot(self._now())

    # writing posts and replies (docstrings in microsync.node.posting)
    post = posting.post
    reply = posting.reply

    async def edit(self, post_id: bytes, text: str) -> Post:
        """Change the text of one of your own posts (``NotAMember`` for someone else's)."""
        self._app_state.require(post_id, self._now())
        await self._write(EditOp(post=bytes(post_id), text=text))
        return self._app_state.post(post_id, self._now())

    async def delete(self, post_id: bytes) -> None:
        """Delete a post for everyone (yours; an admin: anyone's): purged, a tombstone kept."""
        self._app_state.require(post_id, self._now())
        await self._write(DeleteOp(post=bytes(post_id)))

    async def react(self, post_id: bytes, emoji: str) -> None:
        """React to a post with ``emoji``."""
        self._app_state.require(post_id, self._now())
        await self._write(ReactOp(post=bytes(post_id), emoji=emoji))

    async def unreact(self, post_id: bytes, emoji: str) -> None:
        """Withdraw your own ``emoji`` reaction to a post (a no-op if you have none)."""
        post = self._app_state.require(post_id, self._now())
        tags = sorted(post.reactions.get(emoji, {}).get(self._person(), set()))
        if tags:
            await self._write(UnreactOp(post=bytes(post_id), emoji=emoji, removes=tuple(tags[:32])))

    doc = documents.doc  # a live handle on a shared document (microsync.node.documents)

    def post_by_id(self, post_id: bytes) -> Post:
        """One post or reply (``KeyError`` if this device has none with that id)."""
        return self._app_state.post(post_id, self._now())

    def thread(self, post_id: bytes) -> list[Post]:
        """The replies to a post, oldest first (nested replies follow their parent)."""
        return self._app_state.thread(post_id, self._now())

    def unread_count(self) -> int:
        """Posts and replies by others that this person has not seen on any of their devices."""
        return len(self._app_state.unseen(self._now()))

    def feed(self, since: Literal["last_opened"] | datetime | None = None) -> list[Post]:
        """Posts and replies, newest first: all of them (``since=None``), those after a moment
        (a ``datetime``), or those unseen since this person last opened the group
        (``"last_opened"``), which also marks them read on every device of this person.
        Deleted and expired posts are left out."""
        posts, events = self._app_state.feed(since, self._now())
        self._deliver(events)
        return posts

    def whats_new(self, since: Since = "last_read", *, limit: int = 100) -> WhatsNew:
        """What happened after ``since``, marking nothing (:mod:`microsync.node.whats_new`)."""
        return whats_new.read(self, since, limit)

    def mark_read(self, up_to: Cursor | None = None) -> None:
        """Mark read up to ``up_to`` (a page's ``cursor``; ``None``: all) on all my devices."""
        whats_new.mark_read(self, up_to)

    # ------------------------------------------------------------------ presence

    def receive_announcement(self, data: bytes) -> bool:
        """Take a sealed announcement (or per-viewer location) a peer passed on: ``True`` if
        news (an event was emitted), ``False`` for a duplicate. Raises a typed error and changes
        nothing for anything else (DecodeError, DecryptionError, BadSignature, NotAMember,
        StaleAnnouncement: expired, from the future, or older than the one held)."""
        return sharing.receive(self, data)

    def announcements(
        self, *, excluding: bytes | None = None, to: DeviceId | None = None
    ) -> list[bytes]:
        """Every unexpired announcement this device holds (its own and other members'),
        sealed, for passing on to a connected peer (``excluding`` that peer's own); with
        ``to`` (that peer) also the per-viewer locations it may be given."""
        return self._presence.announcements(self._now(), excluding=excluding, to=to)

    def presence_sharing(self) -> bool:
        """Whether a started device announces its presence here by itself (default off)."""
        return self._presence.sharing

    def set_presence_sharing(self, on: bool) -> None:
        """Opt in to (or out of) announcing presence here, kept in the profile (default off)."""
        sharing.set_presence_sharing(self, on)

    def _after_announce(self, sealed: bytes) -> None:
        self._device._announced(self.id, sealed)

    async def announce_presence(self, status: str = "online", *, ttl: float = PRESENCE_TTL) -> None:
        """Tell the group this device is ``"online"`` (or ``"away"``, ``"offline"``) for the
        next ``ttl`` seconds. A running device renews this itself."""
        announcement = self._presence.presence_announcement(status, ttl, self._now())
        self._after_announce(self._presence.announce(announcement, self._now()))

    def presence(self) -> dict[PersonId, Presence]:
        """Every current member: online (an unexpired "online"/"away"), status, last seen."""
        return self._presence.presence(self._now())

    async def share_location(
        self,
        lat: float,
        lon: float,
        precision: str = "city",
        *,
        with_: Viewers | None = None,
        label: str | None = None,
        ttl: float = LOCATION_TTL,
        keep_history: bool = False,
    ) -> Location:
        """Share where this person is for ``ttl`` s, coarsened *here* to ``precision``, with the
        group or ``with_`` only (people, or people to a precision each: the others get nothing),
        named ``label``; ``keep_history``: also in the feed (:mod:`microsync.node.sharing`)."""
        return await sharing.share_location(
            self, lat, lon, precision, with_=with_, label=label, ttl=ttl, keep_history=keep_history
        )

    async def stop_sharing_location(self) -> None:
        """Withdraw this person's location from the group and every viewer, durably."""
        await sharing.stop_sharing_location(self)

    def locations(self) -> dict[PersonId, Location]:
        """Each member's latest location shared with this device (else absent), with its age."""
        return self._presence.locations(self._now())

    def location_history(self) -> list[Location]:
        """This person's own kept locations (``keep_history=True``), oldest first."""
        return sharing.location_history(self)

    async def delete_location_history(self) -> int:
        """Delete this person's kept locations on every device; how many were known here."""
        return await sharing.delete_location_history(self)

    # ------------------------------------------------------------------ membership

    # the keepers (docstrings in microsync.node.keeper_settings)
    keepers, add_keeper, remove_keeper, keeper_status = keeper_settings.GROUP_METHODS

    async def rotate_keys(self) -> None:
        """Start a new epoch now, wrapped to every current member device (any member may)."""
        self._replica.rotate(now=self._now())

    remove = remove_member  # an admin removes a member (``hide_posts=True``: their posts too)

    async def leave(self, *, force: bool = False) -> None:
        """Leave the group. The remaining members rotate the key on their next write. Refused
        (:class:`NotAMember`) while you are its only admin and others remain, unless ``force``."""
        self._refuse_last_admin(self._device.person_id, "leave", force)
        self._replica.leave(now=self._now())

    def _refuse_last_admin(self, person: PersonId, verb: str, force: bool) -> None:
        if not force:
            refuse_last_admin(self._replica, self._device.person_id, person, verb)

    async def invite(
        self,
        *,
        ttl: float = 24 * 3600,
        role: str = "member",
        addresses: Sequence[str] | None = None,
        relay: str | None = None,
    ) -> Invite:
        """A single-use invite (admins only) expiring after ``ttl`` seconds: ``.link`` carries a
        256-bit secret and where to reach this device (for a QR code), ``.code`` a short code to
        read aloud (one wrong guess burns it). ``addresses`` and ``relay`` default to where
        this device is reachable while started (its listener's real addresses and port, its
        relay; :class:`InviteError` if neither), else to ``127.0.0.1:7425``."""
        addresses_, relay_ = self._device._reachable(addresses, relay)
        return issue_invite(
            self._replica,
            self._device._book,
            rng=self._device.rng,
            now=self._now(),
            ttl_ms=int(ttl * 1000),
            role=Role.parse(role),
            addresses=addresses_,
            relay=relay_,
        )

    async def revoke_invite(self, invite: Invite | bytes) -> None:
        """Revoke an invite (admins only): no device will admit it any more."""
        invite_id = invite.invite_id if isinstance(invite, Invite) else bytes(invite)
        self._replica.revoke_invite(invite_id, now=self._now())

    def invites(self) -> list[InviteStatus]:
        """Every invite of this group with its state and, once used, who joined."""
        return invite_statuses(self._replica, self._device._book)

    async def promote(self, person_id: bytes) -> None:
        """Make a member an admin (admins only)."""
        self._replica.set_role(PersonId(bytes(person_id)), Role.ADMIN, now=self._now())

    async def demote(self, person_id: bytes, *, force: bool = False) -> None:
        """Make an admin a plain member (admins only). Demoting yourself while you are the
        only admin raises :class:`NotAMember` unless ``force``."""
        person = PersonId(bytes(person_id))
        self._refuse_last_admin(person, "demote", force)
        self._replica.set_role(person, Role.MEMBER, now=self._now())

    def __repr__(self) -> str:
        count = len(self._replica.state.members)
        return f"Group(name={self.name!r}, id={fingerprint(self.id)}, members={count})"
