"""Which device keys may author entries: certificates and revocations, checked on the way in.

The store keeps only records that passed these checks, so validation can ask it a plain
question (:meth:`FeedStore.author_status`) without re-verifying signatures per entry.
"""

from __future__ import annotations

from typing import Protocol

from microsync.errors import AuthorNotCertified, VerificationError
from microsync.identity import DeviceCertificate, DeviceId, DeviceRevocation

__all__ = ["TrustStore", "add_certificate", "add_revocation"]


class TrustStore(Protocol):
    def certificate(self, device: DeviceId) -> DeviceCertificate | None: ...

    def put_certificate(self, certificate: DeviceCertificate) -> None: ...

    def put_revocation(self, revocation: DeviceRevocation) -> None: ...


def add_certificate(store: TrustStore, certificate: DeviceCertificate) -> bool:
    """Verify and keep ``certificate``. Returns ``False`` if an identical one was already kept.

    A device key is certified by exactly one person: a certificate naming another person for a
    known device is rejected (``VerificationError``), whatever its signature.
    """
    certificate.verify()
    known = store.certificate(certificate.device)
    if known is not None:
        if known.person != certificate.person:
            raise VerificationError("device is already certified by another person")
        return False
    store.put_certificate(certificate)
    return True


def add_revocation(store: TrustStore, revocation: DeviceRevocation) -> None:
    """Verify and keep ``revocation``: only the person that certified a device may revoke it."""
    revocation.verify()
    known = store.certificate(revocation.device)
    if known is None:
        raise AuthorNotCertified("cannot revoke a device that was never certified")
    if known.person != revocation.person:
        raise VerificationError("only the certifying person may revoke a device")
    store.put_revocation(revocation)
