"""What arrives at a device from its peers: entries of a group, and device certificates.

Theory of operation: the sync host (:class:`~microsync.node.host.DeviceHost`) hands each batch
of entries to :meth:`Inbound.receive`, which stores what the group's replica accepts, lets the
app state and the group's events see it, and counts every refusal by error type (the device's
``refused``). Certificates a peer sends are verified, and kept only for devices some group here
admits; the others wait in memory (bounded) in case a peer vouches for the joiner they are.

Invariants: a rejected entry changes nothing; an unverified certificate is never stored; at
most :data:`MAX_UNADMITTED_CERTIFICATES` certificates wait in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from microsync.errors import DecodeError, MicrosyncError, VerificationError
from microsync.feed import GroupId, Ingested
from microsync.feed.ingest import Outcome
from microsync.feed.trust import add_certificate
from microsync.identity import DeviceCertificate, DeviceId

if TYPE_CHECKING:
    from microsync.node import Device, Group

__all__ = ["MAX_UNADMITTED_CERTIFICATES", "WELCOME_PREFIX", "Inbound"]

MAX_UNADMITTED_CERTIFICATES: Final = 1024  # certificates of devices no group admits, in memory
WELCOME_PREFIX: Final = "welcome/"
"""Meta key prefix: the id of the add that admitted this device to a group it joined."""


class Inbound:
    """Stores what peers send to ``device`` (see the module docstring)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.refused: dict[str, int] = {}
        """Entries refused from peers since the profile was opened, by error type."""
        self.forked = False
        """Whether the last :meth:`receive` found a fork (fork points change only then)."""
        self.results: Sequence[Ingested | MicrosyncError] = ()
        """Each item's result in the last :meth:`receive`, in its place (a keeper link learns
        from it which pulled entries it need not push back)."""
        self._unadmitted: dict[DeviceId, DeviceCertificate] = {}  # from peers, not kept

    def welcomes(self) -> dict[GroupId, bytes]:
        """For groups this device joined by invite: the id of the add that admitted it (how
        it proves membership to a peer before it holds any key)."""
        store = self.device._store
        found = {}
        for group in self.device._groups.values():
            add = store.get_meta(f"{WELCOME_PREFIX}{group.id.hex()}")
            if add is not None:
                found[group.id] = add
        return found

    def receive(
        self, group_id: GroupId, items: Sequence[tuple[bytes, bytes | None]], peer: DeviceId | None
    ) -> int:
        """Store entries of a group from ``peer``; how many joined this device's feeds."""
        self.results = ()
        group = self.device._held(group_id) or self.device._adopt(group_id)
        if peer is not None:
            self._vouch_for_joiner(group, peer)
        replica = group._replica
        batch = replica.receive_batch(items, peer=peer)
        results = self.results = batch.results
        accepted = [e for r in results if isinstance(r, Ingested) for e in r.accepted]
        accepted += replica.released
        pending = [
            (r.entry, body)
            for r, (_, body) in zip(results, items, strict=True)
            if isinstance(r, Ingested) and r.outcome is Outcome.PENDING and body is not None
        ]
        group._app_pending(pending)
        # bodies as the intake stored them: those of pending entries a gap-filler released too
        known = {s.entry.id: s.body for s in batch.accepted if s.body is not None}
        group._app_received(accepted, known)
        group.vault.received(batch.accepted)  # removals purge chunks right away
        group._check_members()
        self.forked = batch.forked
        if batch.forked:  # no fork point moved otherwise: spare the query
            group._check_forks()
        for r in results:
            if isinstance(r, MicrosyncError):  # a refusal, returned (not raised) per entry
                self.refused[type(r).__name__] = self.refused.get(type(r).__name__, 0) + 1
        # what joined a feed in this call: entries that waited (held for their author's
        # admission, pending behind a gap) count once, when stored; duplicates never
        return len(batch.accepted)

    def _vouch_for_joiner(self, group: Group, peer: DeviceId) -> None:
        """While this device has joined ``group`` by invite and cannot check membership yet,
        the peer it syncs with proved it holds the add that admitted this device (the sync
        match used that add's id): its own feed is stored as it streams."""
        replica = group._replica
        if replica.is_member or group.id not in self.welcomes():
            return
        certificate = self.device._store.certificate(peer) or self._unadmitted.get(peer)
        if certificate is not None:
            replica.vouch(certificate)

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        """Keep the device certificates a peer sent of devices some group here admits (each is
        verified; bad ones, and ones of devices no group admits, are skipped: an admitted
        device's certificate also rides in the grant that admitted it)."""
        store = self.device._store
        with store.transaction():
            for data in certificates:
                try:
                    certificate = DeviceCertificate.from_bytes(data)
                    certificate.verify()
                except (DecodeError, VerificationError):
                    continue
                if not self._admitted_anywhere(certificate.device):
                    self._unadmitted[certificate.device] = certificate  # memory only, bounded
                    while len(self._unadmitted) > MAX_UNADMITTED_CERTIFICATES:
                        del self._unadmitted[next(iter(self._unadmitted))]
                    continue
                try:
                    add_certificate(store, certificate)
                except VerificationError:
                    continue  # certified by another person already: the first one stays

    def _admitted_anywhere(self, device: DeviceId) -> bool:
        return any(g._replica.admits(device, 1) for g in self.device._groups.values())

    def known_certificates(self) -> list[DeviceCertificate]:
        """The stored certificates of every other device of every group's members."""
        store = self.device._store
        found: list[DeviceCertificate] = []
        for group in self.device._groups.values():
            for member in group._replica.state.members.values():
                for info in member.devices.values():
                    cert = store.certificate(info.device)
                    if cert is not None and cert.device != self.device.id:
                        found.append(cert)
        return found
