"""One person, several devices: linking a new device over the network, and the list of the
person's devices (:meth:`~microsync.node.Device.devices`).

Theory of operation: the new device makes fresh keys (a
:class:`~microsync.group.invite.DeviceCandidate`), reaches the existing device like a guest
redeeming an invite (under a one-off certificate of its own keys, for the handshake only),
and runs the ``link`` pairing. The existing device certifies the new device with the person
key and adds it to every group it is in; the answer carries the certificate, the id of each
add (the new device's welcome, its proof of membership before it holds a key) and the person
key. The same connection then goes on as a sync session, so the adds, and the keys they wrap
to the new device, arrive at once.

The device list is read from what the groups know: every device of this person any group
admits now, every device of this person a group revoked (by its stored certificate), and the
last time this device synced with each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from microsync.clock import Clock, system_clock
from microsync.crypto import Rng, system_rng
from microsync.group.invite import InvitePurpose, PairingGuest
from microsync.group.invite.payloads import DeviceCandidate
from microsync.identity import DeviceId
from microsync.node.pairing import reach_inviter, run_guest

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["DeviceRecord", "device_id_of", "device_records", "link_new_device"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """One device of this person, as :meth:`~microsync.node.Device.devices` lists it.

    ``last_seen``: when this device last synced with it (ms since the Unix epoch; ``None``
    for this device itself and for a device it never synced with). ``revoked``: some group
    revoked it (it reads nothing new and nothing it writes after its cut-off counts)."""

    id: DeviceId
    name: str
    this: bool
    last_seen: int | None
    revoked: bool

    @property
    def id_prefix(self) -> str:
        """The first 8 hex digits of the id: what ``microsync devices`` shows."""
        return self.id.hex()[:8]


async def link_new_device(
    cls: type[Device],
    directory: Path,
    link_or_code: str,
    name: str,
    at: str | None,
    relay: str | None,
    clock: Clock | None,
    rng: Rng | None,
) -> Device:
    """:meth:`~microsync.node.Device.link` (see the module docstring)."""
    clock_ = system_clock if clock is None else clock
    rng_ = system_rng if rng is None else rng
    candidate = DeviceCandidate.generate(name, rng_, clock_())
    request = candidate.request().to_bytes()
    guest = PairingGuest.redeem(link_or_code, purpose=InvitePurpose.LINK, request=request, rng=rng_)
    provisional = candidate.provisional(rng_, clock_())
    secure = await reach_inviter(link_or_code, at, provisional, rng_, relay, clock_)
    try:
        response = await run_guest(secure, guest)
        device = await cls.complete_link(directory, candidate, response, clock=clock_, rng=rng_)
    except BaseException:
        await secure.close()
        raise
    try:
        await device._network.sync_after_pairing(secure)
    except BaseException:
        await device.close()
        raise
    return device


def device_records(device: Device) -> list[DeviceRecord]:
    """This person's devices as ``device``'s groups know them: this one first, then by name."""
    person = device.person_id
    names: dict[DeviceId, str] = {device.id: device.name}
    revoked: set[DeviceId] = set()
    for group in device._groups.values():
        state = group._replica.state
        member = state.members.get(person)
        if member is not None:
            names.update({d: info.name for d, info in member.devices.items()})
        for gone in state.revoked:
            certificate = device._store.certificate(gone)
            if certificate is not None and certificate.person == person:
                names.setdefault(gone, certificate.device_name)
                revoked.add(gone)
    seen = _last_seen(device)
    found = [
        DeviceRecord(
            id=d,
            name=n,
            this=d == device.id,
            last_seen=None if d == device.id else seen.get(d),
            revoked=d in revoked,
        )
        for d, n in names.items()
    ]
    return sorted(found, key=lambda r: (not r.this, r.name, r.id))


def device_id_of(device: Device, named: bytes | str) -> DeviceId:
    """The id of ``device``'s person's device ``named``: an id, or a hex prefix of one that
    names exactly one of :func:`device_records` (else ``ValueError``)."""
    if isinstance(named, bytes):
        return DeviceId(bytes(named))
    prefix = named.strip().lower()
    found = [r.id for r in device_records(device) if r.id.hex().startswith(prefix)]
    if len(found) != 1 or not prefix:
        what = "matches none" if not found else "matches several"
        raise ValueError(f"the device id {named!r} {what} of this person's devices")
    return found[0]


def _last_seen(device: Device) -> dict[DeviceId, int]:
    """Per peer device: the latest sync with it in any group."""
    seen: dict[DeviceId, int] = {}
    for group in device._groups.values():
        for peer, record in device._sync_log.records(group.id).items():
            seen[peer] = max(seen.get(peer, 0), record.at)
    return seen
