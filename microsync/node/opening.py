"""How a :class:`~microsync.node.Device` comes to be: a profile opened or created, one
restored from the recovery words, or one completed from a device link. (The bodies of
``Device.open``, ``Device.restore`` and ``Device.complete_link``, which stay its documented
public face.)

Invariants: a directory that already holds a profile is never restored or linked into; the
quiet mode given to ``open`` is kept in the profile before the device is returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from microsync.clock import Clock, system_clock
from microsync.crypto import Rng, system_rng
from microsync.errors import ProfileNotFound, StorageError
from microsync.group.join import DeviceCandidate, LinkResponse
from microsync.identity import LocalIdentity
from microsync.node.inbound import WELCOME_PREFIX
from microsync.node.profile import open_profile
from microsync.node.recovery import mark_recovering
from microsync.storage.sqlite import DATABASE_NAME

if TYPE_CHECKING:
    from microsync.node import Device

__all__ = ["complete_link", "load_or_create", "open_device", "or_system", "restore"]


def or_system(clock: Clock | None, rng: Rng | None) -> tuple[Clock, Rng]:
    """The clock and rng given, else this machine's."""
    return (system_clock if clock is None else clock), (system_rng if rng is None else rng)


def load_or_create(
    cls: type[Device],
    directory: Path,
    make: Callable[[], LocalIdentity] | None,
    clock: Clock = system_clock,
    rng: Rng = system_rng,
) -> Device:
    """The device of the profile at ``directory`` (made with ``make()``'s identity if new)."""
    store, identity = open_profile(directory, make)
    return cls(directory, store, identity, clock=clock, rng=rng)


def _fresh(directory: Path, what: str) -> None:
    if (directory / DATABASE_NAME).exists():
        raise StorageError(f"{directory} already holds a profile; {what} into a new one")


def open_device(
    cls: type[Device],
    path: str | os.PathLike[str],
    name: str | None,
    clock: Clock | None,
    rng: Rng | None,
    quiet: bool | None,
) -> Device:
    """``Device.open``: load or create, then set quiet mode if ``quiet`` is not ``None``."""
    directory = Path(path)
    clock_, rng_ = or_system(clock, rng)
    if name is None:
        if not (directory / DATABASE_NAME).exists():
            raise ProfileNotFound(f"no microsync profile at {directory}")
        device = load_or_create(cls, directory, None, clock_, rng_)
    else:
        new_name = name
        make = lambda: LocalIdentity.create(new_name, rng_, clock_())  # noqa: E731
        device = load_or_create(cls, directory, make, clock_, rng_)
    if quiet is not None:
        try:
            device.set_quiet(quiet)
        except BaseException:
            device._store.close()
            raise
    return device


def restore(
    cls: type[Device],
    path: str | os.PathLike[str],
    words: list[str] | str,
    name: str,
    clock: Clock | None,
    rng: Rng | None,
) -> Device:
    """``Device.restore``: a new profile for the person of ``words``, marked recovering."""
    directory = Path(path)
    _fresh(directory, "restore")
    clock_, rng_ = or_system(clock, rng)
    identity = LocalIdentity.restore(words, name, rng_, clock_())
    return mark_recovering(load_or_create(cls, directory, lambda: identity, clock_, rng_))


def complete_link(
    cls: type[Device],
    path: str | os.PathLike[str],
    candidate: DeviceCandidate,
    response: bytes,
    clock: Clock | None,
    rng: Rng | None,
) -> Device:
    """``Device.complete_link``: the linked device's profile, holding the person's groups."""
    directory = Path(path)
    _fresh(directory, "link")
    answer = LinkResponse.from_bytes(response)
    identity = candidate.complete(answer)
    clock_, rng_ = or_system(clock, rng)
    device = load_or_create(cls, directory, lambda: identity, clock_, rng_)
    welcomes = answer.welcomes()
    with device._store.transaction():
        for group_id in answer.groups:
            add = welcomes.get(group_id)
            if add is not None:  # how it proves membership before it holds a key
                device._store.put_meta(f"{WELCOME_PREFIX}{group_id.hex()}", add)
            device._adopt(group_id)
    return device
