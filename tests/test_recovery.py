"""Recovery from the words over real TCP and a real relay on 127.0.0.1: a device restored with
``Device.restore`` is taken back by any member's device into every group where its person has
no device left, keeps the person's role, and syncs; a thief holding the person key while the
owner still has a device there gets nothing; a replayed proof and a stranger are refused."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import microsync
from microsync.errors import InviteRefused, RecoveryRefused, StillHasDevices
from microsync.group.invite import Abort, RecoverHello, decode_message
from microsync.group.invite.payloads import JoinRequest
from microsync.group.recovery import recovery_proof
from microsync.net.connection import handshake
from microsync.net.relay import RelayServer
from microsync.net.stream import open_tcp
from microsync.protocol.handshake import Purpose
from tests.test_devices import opened, texts
from tests.test_net_sync import eventually

WORDS_NAME = "Alice restored"


async def both_devices_out(
    stack: AsyncExitStack, tmp_path: Path
) -> tuple[microsync.Device, microsync.Device, microsync.Group, list[str]]:
    """Alice (admin, phone and laptop) and Bob in "Family" (shared) and "Quiet" (none); the
    phone and the laptop revoke each other at once, so Alice has no device left in either.
    Returns Bob (serving on 127.0.0.1), the phone, Bob's Family, and Alice's words."""
    phone = await opened(stack, tmp_path / "phone", "Alice phone")
    bob = await opened(stack, tmp_path / "bob", "Bob")
    family = await phone.create_group("Family")
    quiet = await phone.create_group("Quiet", history="none")
    await phone.start(lan=False, port=0, bind="127.0.0.1")
    for group in (family, quiet):
        await bob.join((await group.invite(ttl=60)).link)
    pairing = await phone.link_device(ttl=60)
    laptop = await stack.enter_async_context(
        await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
    )
    await family.post("before the loss")
    await bob.start(lan=False, port=0, bind="127.0.0.1")
    await phone.sync_with("127.0.0.1", bob.port or 0)
    await laptop.sync_with("127.0.0.1", bob.port or 0)
    await phone.stop()
    words = phone.export_recovery_words()
    # each revokes the other before it hears of the other's revocation
    await phone.revoke_device(laptop.id)
    await laptop.revoke_device(phone.id)
    await phone.sync_with("127.0.0.1", bob.port or 0)
    await laptop.sync_with("127.0.0.1", bob.port or 0)
    on_bob = bob.group(family.id)
    [alice] = [m for m in on_bob.members() if m.person_id == phone.person_id]
    assert alice.devices == ()
    await laptop.close()
    return bob, phone, on_bob, words


async def test_restored_device_is_taken_back_with_its_role(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        bob, phone, on_bob, words = await both_devices_out(stack, tmp_path)
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "restored", words, name=WORDS_NAME)
        )
        assert restored.groups() == []
        result = await restored.sync_with("127.0.0.1", bob.port or 0)
        assert len(result.groups) == 2
        with pytest.raises(ValueError, match="revoked already"):  # said, never a silent no-op
            await restored.revoke_device(phone.id)
        mine = restored.group(on_bob.id)
        assert mine.is_member()
        assert texts(mine) == ["before the loss"]  # history: shared
        [me] = [m for m in mine.members() if m.person_id == restored.person_id]
        assert me.role == "admin" and me.devices == (restored.id,)
        # an admin still: it can invite and remove
        await mine.invite(ttl=60)
        bob_person = bob.person_id
        await mine.remove(bob_person)
        await restored.sync_with("127.0.0.1", bob.port or 0)
        assert bob_person not in {m.person_id for m in mine.members()}


async def test_a_thief_with_the_person_key_gets_nothing_while_a_device_is_left(
    tmp_path: Path,
) -> None:
    """The laptop revoked the lost phone: Alice still has the laptop. Whoever restores from
    the person key (read off the phone) is refused by Bob, typed, and no group changes."""
    async with AsyncExitStack() as stack:
        phone = await opened(stack, tmp_path / "phone", "Alice phone")
        bob = await opened(stack, tmp_path / "bob", "Bob")
        family = await phone.create_group("Family")
        await phone.start(lan=False, port=0, bind="127.0.0.1")
        await bob.join((await family.invite(ttl=60)).link)
        pairing = await phone.link_device(ttl=60)
        laptop = await stack.enter_async_context(
            await microsync.Device.link(tmp_path / "laptop", pairing.link, name="Alice laptop")
        )
        words = phone.export_recovery_words()
        await phone.stop()
        await bob.start(lan=False, port=0, bind="127.0.0.1")
        await laptop.revoke_device(phone.id)
        await laptop.sync_with("127.0.0.1", bob.port or 0)
        before = bob.group(family.id).members()

        thief = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "thief", words, name="Alice new phone")
        )
        with pytest.raises(StillHasDevices, match="link this device from"):
            await thief.sync_with("127.0.0.1", bob.port or 0)
        assert thief.groups() == []
        assert bob.group(family.id).members() == before


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
        with pytest.raises(RecoveryRefused, match="member of none"):
            await restored.recover(at=f"127.0.0.1:{bob.port}")


async def test_a_replayed_proof_is_refused(tmp_path: Path) -> None:
    """A proof signs one session's handshake hash: sent again on a new connection (by
    someone who saw it but holds only the device key), the member refuses it."""
    async with AsyncExitStack() as stack:
        bob, phone, on_bob, words = await both_devices_out(stack, tmp_path)
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "restored", words, name=WORDS_NAME)
        )
        identity = restored._identity
        assert identity.person_key is not None
        old_proof = recovery_proof(identity.person_key, b"\x01" * 32)  # another session's
        stream = await open_tcp("127.0.0.1", bob.port or 0, timeout=5)
        secure = await handshake(
            stream, identity, initiator=True, purpose=Purpose.INVITE, rng=restored.rng
        )
        try:
            forged = RecoverHello(request=JoinRequest.of(identity).to_bytes(), proof=old_proof)
            await secure.send(forged.to_bytes())
            reply = await asyncio.wait_for(secure.receive(), 10)
            assert reply is not None
            abort = decode_message(reply)
            assert isinstance(abort, Abort)
            with pytest.raises(InviteRefused):
                raise abort.error()
        finally:
            await secure.close()
        [alice] = [m for m in on_bob.members() if m.person_id == phone.person_id]
        assert alice.devices == ()


async def test_recovered_through_the_relay_only(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(RelayServer("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{relay.port}"
        bob, _, on_bob, words = await both_devices_out(stack, tmp_path)
        await bob.stop()
        await bob.start(lan=False, relay=url)
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "restored", words, name=WORDS_NAME)
        )
        done = await restored.sync_via_relay(url, timeout=30)
        assert done
        mine = restored.group(on_bob.id)
        await eventually(lambda: texts(mine) == ["before the loss"])


async def test_a_started_restored_device_recovers_from_its_peers(tmp_path: Path) -> None:
    """``start(peers=...)`` (what ``serve --peer`` does) on a recovering device: the first
    peer that takes it back gives the groups, and the device stays live with it."""
    async with AsyncExitStack() as stack:
        bob, _, on_bob, words = await both_devices_out(stack, tmp_path)
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "restored", words, name=WORDS_NAME)
        )
        await restored.start(lan=False, port=None, peers=(f"127.0.0.1:{bob.port}",))
        mine = restored.group(on_bob.id)
        await eventually(lambda: texts(mine) == ["before the loss"])
        await mine.post("live again")
        await eventually(lambda: "live again" in texts(on_bob))


async def test_a_request_for_another_device_or_malformed_is_refused(tmp_path: Path) -> None:
    """The device taken back is always the session's own: a proof that verifies with a
    request naming another device (or garbage) is refused, and nothing is added."""
    async with AsyncExitStack() as stack:
        bob, phone, on_bob, words = await both_devices_out(stack, tmp_path)
        restored = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "restored", words, name=WORDS_NAME)
        )
        other = await stack.enter_async_context(
            await microsync.Device.restore(tmp_path / "other", words, name="Alice other")
        )
        identity = restored._identity
        assert identity.person_key is not None
        for request in (JoinRequest.of(other._identity).to_bytes(), b"\xa0", b""):
            stream = await open_tcp("127.0.0.1", bob.port or 0, timeout=5)
            secure = await handshake(
                stream, identity, initiator=True, purpose=Purpose.INVITE, rng=restored.rng
            )
            try:
                proof = recovery_proof(identity.person_key, secure.channel.handshake_hash)
                await secure.send(RecoverHello(request=request, proof=proof).to_bytes())
                reply = await asyncio.wait_for(secure.receive(), 10)
                assert reply is not None
                abort = decode_message(reply)
                assert isinstance(abort, Abort)
                with pytest.raises(InviteRefused):
                    raise abort.error()
            finally:
                await secure.close()
        [alice] = [m for m in on_bob.members() if m.person_id == phone.person_id]
        assert alice.devices == ()
