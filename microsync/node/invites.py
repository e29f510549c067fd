"""This device's side of invites and device links, off the wire: where an invite says to reach
it, the host answering redemptions, issuing a link for a new device of this person (and
certifying that device), and the guest redeeming an invite. The wire is
:mod:`microsync.node.runtime` (host) and :mod:`microsync.node.pairing` (guest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from microsync.errors import InviteError, NotAMember
from microsync.feed.trust import add_certificate
from microsync.group.invite import Invite, InvitePurpose, PairingGuest
from microsync.group.join import InviteHost, JoinRequest, LinkRequest, LinkResponse
from microsync.group.ops import DeviceGrant
from microsync.identity import DeviceCertificate
from microsync.node.addresses import DEFAULT_PORT

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["DeviceInvites"]


class DeviceInvites:
    """Invites and links of ``device`` (see the module docstring)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def reachable(
        self, addresses: Sequence[str] | None, relay: str | None
    ) -> tuple[tuple[str, ...], str | None]:
        """Where an invite says to reach this device: what the caller gave, else where the
        running device really is (its listen addresses, its relay), and nothing it does not
        listen on. A device not started yet names this machine's default serve address,
        ``127.0.0.1:7425``, where ``microsync serve`` will listen."""
        device = self.device
        if device._net is None:
            fallback = (f"127.0.0.1:{DEFAULT_PORT}",)
            return (tuple(addresses) if addresses is not None else fallback), relay
        found = tuple(addresses) if addresses is not None else device.listen_addresses()
        relay = relay if relay is not None else device.relay
        if not found and relay is None:
            raise InviteError(
                "this device listens on no port and uses no relay, so nobody could redeem "
                "an invite: start it with a port or a relay, or name addresses"
            )
        return found, relay

    def host(self) -> InviteHost:
        """Answers incoming invite redemptions and device links for this device."""
        device = self.device
        return InviteHost(
            {gid: g._replica for gid, g in device._groups.items()},
            device._book,
            rng=device.rng,
            now=device.clock,
            link_device=self._certify if device._identity.person_key is not None else None,
        )

    def link_device(self, ttl: float, addresses: Sequence[str] | None, relay: str | None) -> Invite:
        """A one-time pairing secret for a new device of this person (needs the person key)."""
        device = self.device
        if device._identity.person_key is None:
            raise NotAMember("only a device holding the person key may link devices")
        addresses_, relay_ = self.reachable(addresses, relay)
        invite = Invite.issue(
            rng=device.rng,
            now=device.clock(),
            purpose=InvitePurpose.LINK,
            addresses=addresses_,
            relay=relay_,
            ttl_ms=int(ttl * 1000),
            taken_nameplates=device._book.open_nameplates(),
        )
        with device._store.transaction():
            device._book.add(invite, None)
        return invite

    def _certify(self, request: LinkRequest) -> LinkResponse:
        """Certify a linked device with the person key and add it to every group; answer with
        the id of each add (the new device's welcome: how it proves membership at its first
        sync, before it holds a key) and the person key (so it may link and revoke too)."""
        device = self.device
        person_key = device._identity.person_key
        assert person_key is not None  # only offered to InviteHost with one
        now = device.clock()
        certificate = DeviceCertificate.issue(person_key, request.device, request.name, now)
        grant = DeviceGrant(certificate.to_bytes(), request.prekey.to_bytes())
        joined, adds = [], []
        with device._store.transaction():
            add_certificate(device._store, certificate)
            for group in device._groups.values():
                if group._replica.is_member:
                    adds.append(group._replica.add_device(grant, now=now).id)
                    joined.append(group.id)
        recovery = device._identity.recovery_key
        return LinkResponse(certificate, tuple(joined), tuple(adds), person_key, recovery)

    def guest(self, link_or_code: str) -> PairingGuest:
        """The guest side of redeeming an invite (a link, or a short code)."""
        device = self.device
        request = JoinRequest.of(device._identity).to_bytes()
        if link_or_code.startswith("microsync:"):
            return PairingGuest.for_link(link_or_code, request=request)
        return PairingGuest.for_code(
            link_or_code, purpose=InvitePurpose.INVITE, request=request, rng=device.rng
        )
