"""The lost phone, over real TCP and a real relay on 127.0.0.1 (issue 15's main case).

Alice's phone is her only device and the only admin of "Family" (shared history) and "Quiet"
(history none); Bob is a member of both. The phone is lost, NOT revoked: its profile is copied
aside (what a thief has) and deleted. A profile restored from her words syncs with Bob and
is back in every group, still their admin; the recovery revoked the phone. The copy of the
phone then comes online, posts and syncs: nobody shows its post, and it reads nothing posted
after the recovery. On the wire: a replayed hello, a certificate of another device, a
thief's certificate (person key, no words) and a stranger are refused, typed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

import microsync
from microsync.crypto import SigningKey, system_rng
from microsync.errors import InviteRefused, MicrosyncError, RecoveryRefused
from microsync.feed import GroupId
from microsync.group.invite import Abort, RecoverHello, decode_message
from microsync.group.invite.payloads import JoinRequest
from microsync.group.recovery import recovery_proof
from microsync.identity import DeviceId, LocalIdentity, RecoveryCertificate
from microsync.net.connection import handshake
from microsync.net.relay import RelayServer
from microsync.net.stream import open_tcp
from microsync.protocol.handshake import Purpose
from tests.test_devices import opened, texts
from tests.test_net_sync import eventually

WORDS_NAME = "Alice restored"


@dataclass(frozen=True, slots=True)
class Lost:
    bob: microsync.Device
    words: list[str]
    copy: Path  # the lost phone's profile, as a thief has it
    family: GroupId
    quiet: GroupId
    phone: DeviceId


async def phone_lost(stack: AsyncExitStack, tmp_path: Path, *, serve: bool = True) -> Lost:
    """Alice's phone (her only device, the only admin) and Bob in Family and Quiet; Bob is
    serving on 127.0.0.1 (``serve``). The phone's profile is then copied aside and deleted."""
    phone = await microsync.Device.open(tmp_path / "phone", name="Alice phone")
    bob = await opened(stack, tmp_path / "bob", "Bob")
    try:
        family = await phone.create_group("Family")
        quiet = await phone.create_group("Quiet", history="none")
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        for group in (family, quiet):
            await bob.join((await group.invite(ttl=60)).link)
        await family.post("before the loss")
        await quiet.post("quiet before the loss")
        await phone.sync_with("127.0.0.1", await _serve(bob))
        words, phone_id = phone.export_recovery_words(), phone.id
    finally:
        await phone.close()
    copy = tmp_path / "phone copy"
    shutil.copytree(tmp_path / "phone", copy)
    shutil.rmtree(tmp_path / "phone")
    if not serve:
        await bob.stop()
    return Lost(bob, words, copy, family.id, quiet.id, phone_id)


async def _serve(device: microsync.Device) -> int:
    await device.start(lan=False, port=0, bind="127.0.0.1")
    assert device.port is not None
    return device.port


async def restored_device(stack: AsyncExitStack, tmp_path: Path, lost: Lost) -> microsync.Device:
    return await stack.enter_async_context(
        await microsync.Device.restore(tmp_path / "restored", lost.words, name=WORDS_NAME)
    )


def assert_back_as_admin(restored: microsync.Device, lost: Lost) -> None:
    """Back in both groups, Alice's only device there, still their admin; the phone revoked."""
    assert {g.id for g in restored.groups()} == {lost.family, lost.quiet}
    for group_id in (lost.family, lost.quiet):
        [me] = [m for m in restored.group(group_id).members() if m.person_id == restored.person_id]
        assert me.role == "admin" and me.devices == (restored.id,)
    assert texts(restored.group(lost.family)) == ["before the loss"]  # history: shared
    assert texts(restored.group(lost.quiet)) == []  # history: none


async def test_the_words_take_alice_back_and_the_lost_phone_counts_for_nothing(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        lost = await phone_lost(stack, tmp_path)
        bob, at = lost.bob, ("127.0.0.1", lost.bob.port or 0)
        restored = await restored_device(stack, tmp_path, lost)
        assert restored.groups() == []
        result = await restored.sync_with(*at)
        assert set(result.groups) == {lost.family, lost.quiet}
        assert_back_as_admin(restored, lost)
        # the recovery itself revoked the phone: revoking it again says so
        with pytest.raises(ValueError, match="revoked already"):
            await restored.revoke_device(lost.phone)
        assert [r.revoked for r in restored.devices() if r.id == lost.phone] == [True]

        # the copy of the phone comes online, posts and syncs (it may be refused)
        thief = await stack.enter_async_context(await microsync.Device.open(lost.copy))
        await thief.group(lost.family).post("written by whoever has the phone")
        with suppress(MicrosyncError, OSError):
            await thief.sync_with(*at)
        with suppress(MicrosyncError, ValueError):  # it tries to throw the owner out
            await thief.revoke_device(restored.id)
        mine = restored.group(lost.family)
        await mine.post("after the recovery")
        await restored.sync_with(*at)
        with suppress(MicrosyncError, OSError):
            await thief.sync_with(*at)
        await restored.sync_with(*at)
        on_bob = bob.group(lost.family)
        for group in (on_bob, mine):
            assert texts(group) == ["after the recovery", "before the loss"]
        assert "after the recovery" not in texts(thief.group(lost.family))
        [me] = [m for m in on_bob.members() if m.person_id == restored.person_id]
        assert me.devices == (restored.id,) and me.role == "admin"

        # still the admin: it can invite and remove
        await mine.invite(ttl=60)
        await mine.remove(bob.person_id)
        await restored.sync_with(*at)
        assert bob.person_id not in {m.person_id for m in mine.members()}


async def test_the_words_take_alice_back_through_the_relay_only(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        lost = await phone_lost(stack, tmp_path, serve=False)
        await lost.bob.start(lan=False, relay=url)  # no address: the relay only
        restored = await restored_device(stack, tmp_path, lost)
        assert await restored.sync_via_relay(url, timeout=30)
        await eventually(lambda: texts(restored.group(lost.family)) == ["before the loss"])
        assert_back_as_admin(restored, lost)
        with pytest.raises(ValueError, match="revoked already"):
            await restored.revoke_device(lost.phone)
        await restored.group(lost.family).post("back, via the relay")
        on_bob = lost.bob.group(lost.family)
        await restored.sync_via_relay(url, timeout=30)
        await eventually(lambda: "back, via the relay" in texts(on_bob))


async def test_a_started_restored_device_recovers_from_its_peers(tmp_path: Path) -> None:
    """``start(peers=...)`` (what ``serve --peer`` does) on a recovering device: the first
    peer that takes it back gives the groups, and the device stays live with it."""
    async with AsyncExitStack() as stack:
        lost = await phone_lost(stack, tmp_path)
        restored = await restored_device(stack, tmp_path, lost)
        await restored.start(lan=False, port=None, peers=(f"127.0.0.1:{lost.bob.port}",))
        mine = restored.group(lost.family)
        await eventually(lambda: texts(mine) == ["before the loss"])
        await mine.post("live again")
        await eventually(lambda: "live again" in texts(lost.bob.group(lost.family)))


async def hello_answer(
    port: int, identity: LocalIdentity, make: Callable[[bytes], RecoverHello]
) -> BaseException:
    """Open an invite-purpose session to ``port`` as ``identity``, send the hello that
    ``make(handshake_hash)`` gives, and return the error the answer raises."""
    stream = await open_tcp("127.0.0.1", port, timeout=5)
    secure = await handshake(
        stream, identity, initiator=True, purpose=Purpose.INVITE, rng=system_rng
    )
    try:
        hello = make(secure.channel.handshake_hash)
        await secure.send(hello.to_bytes())
        reply = await asyncio.wait_for(secure.receive(), 10)
        assert reply is not None
        abort = decode_message(reply)
        assert isinstance(abort, Abort), abort
        return abort.error()
    finally:
        await secure.close()


async def test_hostile_hellos_are_refused_and_change_nothing(tmp_path: Path) -> None:
    """A hello replayed from another session; a certificate of another device (restored from
    the same words); a thief's device (certified by the person key read off the phone) with
    a certificate by a key of its own; garbage. Each is refused, typed, and Bob's groups do
    not change."""
    async with AsyncExitStack() as stack:
        lost = await phone_lost(stack, tmp_path)
        port = lost.bob.port or 0
        before = lost.bob.group(lost.family).members()
        now = lost.bob.clock()
        one = LocalIdentity.restore(lost.words, "Alice one", system_rng, now)
        other = LocalIdentity.restore(lost.words, "Alice two", system_rng, now)
        assert one.person_key is not None and one.recovery_certificate is not None
        assert other.recovery_certificate is not None
        request = JoinRequest.of(one).to_bytes()
        cert = one.recovery_certificate.to_bytes()

        def replayed(_: bytes) -> RecoverHello:
            assert one.person_key is not None
            proof = recovery_proof(one.person_key, b"\x01" * 32)  # another session's
            return RecoverHello(request=request, proof=proof, certificate=cert)

        def wrong_device(session: bytes) -> RecoverHello:
            assert one.person_key is not None and other.recovery_certificate is not None
            proof = recovery_proof(one.person_key, session)
            certificate = other.recovery_certificate.to_bytes()
            return RecoverHello(request=request, proof=proof, certificate=certificate)

        def garbage(session: bytes) -> RecoverHello:
            assert one.person_key is not None
            proof = recovery_proof(one.person_key, session)
            return RecoverHello(request=request, proof=proof, certificate=b"\xa0")

        for make in (replayed, wrong_device, garbage):
            error = await hello_answer(port, one, make)
            assert isinstance(error, InviteRefused), (make, error)

        # the thief: the copy's person key, a device of its own, a certificate by its own key
        async with await microsync.Device.open(lost.copy) as copy:
            person_key = copy._identity.person_key
        assert person_key is not None
        thief = LocalIdentity.for_person(person_key, "Alice new phone", system_rng, now)
        own = SigningKey.generate(system_rng)
        forged = RecoveryCertificate.issue(own, thief.person_id, thief.device_id, 1).to_bytes()

        def thiefs(session: bytes) -> RecoverHello:
            proof = recovery_proof(person_key, session)
            request = JoinRequest.of(thief).to_bytes()
            return RecoverHello(request=request, proof=proof, certificate=forged)

        error = await hello_answer(port, thief, thiefs)
        assert isinstance(error, RecoveryRefused), error
        assert lost.bob.group(lost.family).members() == before


async def test_a_stranger_is_refused(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        bob = await opened(stack, tmp_path / "bob", "Bob")
        await bob.create_group("Family")
        await bob.start(lan=False, port=0, bind="127.0.0.1")
        stranger = await opened(stack, tmp_path / "eve", "Eve")
        words = stranger.export_recovery_words()
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "eve2", words, name="Eve again")
        )
        with pytest.raises(RecoveryRefused, match="member of no"):
            await restored.recover(at=f"127.0.0.1:{bob.port}")
