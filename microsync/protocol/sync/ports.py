"""The ports of a sync session: what it needs from the local device (:class:`SyncHost`), the
optional capabilities a host may add (:class:`PeerReceiver`, :class:`ExitHost`,
:class:`ChunkHost`; forks: :class:`~microsync.protocol.forks.ForkHost`), and the proofs of the
groups it holds (:class:`GroupProof`). The session touches the device through these only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from microsync.crypto import fingerprint
from microsync.feed.entry import EntryId, GroupId
from microsync.identity import DeviceId
from microsync.protocol.messages import Item

__all__ = ["ChunkHost", "ChunkRelayHost", "ExitHost", "GroupProof", "PeerReceiver", "SyncHost"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupProof:
    """A group the host holds and the secrets that prove it (16 to 64 bytes each): ``keys``
    are offered in ``Hello`` (newest first); ``older`` are held but not offered, and only
    recognise a peer that is behind (it offered one of them). The keys are secret: ``repr``
    shows the group's fingerprint and how many keys there are, never their bytes."""

    group: GroupId
    keys: tuple[bytes, ...]
    older: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        group = fingerprint(self.group)
        return f"GroupProof(group={group}, keys={len(self.keys)}, older={len(self.older)})"


class SyncHost(Protocol):
    """What a session needs from the local device. Every method is synchronous and must not
    block on the network; each group argument is a group :meth:`sync_groups` listed."""

    def sync_groups(self) -> Sequence[GroupProof]:
        """Every group this device holds, each with its proof keys (at most
        ``SyncOptions.max_proofs_per_group`` are used): the control keys (``EpochKey.control``
        bytes) of the latest 3 epochs it holds, newest first, then the ids of the latest adds
        whose devices have not written to the group yet. A device holding no key of a group
        it joined offers the id of the add that admitted it (its ``Welcome.add``); a group
        with no proof key is left out (it cannot be matched)."""
        ...

    def frontier(self, group: GroupId) -> Mapping[DeviceId, tuple[int, EntryId]]:
        """For each non-empty feed of ``group``: its head ``(seq, entry id)``."""
        ...

    def entries_after(
        self, group: GroupId, frontier: Mapping[DeviceId, int], *, newest_first: bool, limit: int
    ) -> list[Item]:
        """At most ``limit`` entries ``(wire, body)`` of ``group`` that a holder of
        ``frontier`` (device -> head seq; absent = 0) lacks. ``newest_first=False``: feed by
        feed, each feed in seq order from its frontier (so any prefix is chain-contiguous).
        ``newest_first=True``: the newest ones across all feeds (by HLC), newest first."""
        ...

    def receive(self, group: GroupId, items: Sequence[Item]) -> int:
        """Validate and store entries from the peer (one transaction); return how many were
        accepted. Rejected items change nothing. Raise only on local failure."""
        ...

    def may_serve(self, group: GroupId, peer: DeviceId) -> bool:
        """Is ``peer`` an active device of a current member of ``group`` in this view?"""
        ...

    def certificates(self, group: GroupId) -> list[bytes]:
        """Device certificates (``DeviceCertificate.to_bytes``) of every device with a feed
        in ``group`` and of every current member device, this device's own included."""
        ...

    def learn_certificates(self, certificates: Sequence[bytes]) -> None:
        """Keep certificates from the peer, verifying each; skip bad ones silently."""
        ...

    def missing_keys(self, group: GroupId) -> list[tuple[int, bytes]]:
        """Epoch slots ``(number, commitment or 16-byte key ref)`` this device lacks
        (``GroupReplica.missing_keys``)."""
        ...

    def answer_key_request(
        self, group: GroupId, peer: DeviceId, wanted: Sequence[tuple[int, bytes]]
    ) -> bytes | None:
        """Keys for ``peer`` as an opaque encoded bundle, or ``None`` to refuse
        (``GroupReplica.answer_key_request``; ``NotAMember`` becomes ``None``)."""
        ...

    def accept_key_response(self, group: GroupId, peer: DeviceId, response: bytes) -> int:
        """Open and keep the keys of a response (``GroupReplica.accept_key_response``); return
        how many were new. A malformed or forged response raises ``DecodeError`` or
        ``DecryptionError`` and changes nothing."""
        ...

    def ephemeral(self, group: GroupId, peer: DeviceId, data: bytes) -> None:
        """An ephemeral message (presence, location) from ``peer``; the app verifies it."""
        ...


@runtime_checkable
class PeerReceiver(Protocol):
    """A host that bounds per peer what it holds back (entries of devices not admitted yet):
    the session hands it each batch with the peer's device id instead of calling ``receive``."""

    def receive_from(self, group: GroupId, peer: DeviceId, items: Sequence[Item]) -> int: ...


@runtime_checkable
class ExitHost(Protocol):
    """Optional: what a host adds to tell a former member that it is out."""

    def exit_limit(
        self, group: GroupId, peer: DeviceId
    ) -> Mapping[DeviceId, tuple[int, EntryId]] | None:
        """For a device that was a member of ``group`` and is out now: per feed, the last
        ``(seq, entry id)`` in the causal past of the operations that put it out (those
        included); ``None`` for any other device. The session serves such a peer exactly that
        much, so it learns it is out and nothing written after."""
        ...


@runtime_checkable
class ChunkHost(Protocol):
    """What a host that serves and fetches vault chunks adds to :class:`SyncHost`."""

    def chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bytes | None:
        """The sealed chunk ``chunk`` of ``group`` for ``peer``, or ``None``."""
        ...

    def chunk_received(self, group: GroupId, peer: DeviceId, chunk: bytes, data: bytes) -> None:
        """A chunk this side asked ``peer`` for (the host verifies it before keeping it)."""
        ...

    def chunks_missing(self, group: GroupId, peer: DeviceId, chunks: Sequence[bytes]) -> None:
        """``peer`` does not hold these requested chunks."""
        ...


@runtime_checkable
class ChunkRelayHost(Protocol):
    """A :class:`ChunkHost` that can get a chunk it lacks from its own peers, for a peer that
    asked with hops to spare; it answers later through the session's ``answer_chunk``."""

    def relay_chunk(self, group: GroupId, peer: DeviceId, chunk: bytes) -> bool:
        """Try to get ``chunk`` for ``peer`` elsewhere: ``True`` if it will answer later
        (exactly once, with the chunk or as missing), ``False`` to answer missing now."""
        ...
