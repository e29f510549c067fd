"""The codec every signed identity record shares: a canonical CBOR array
``[version, fields..., signature]`` whose signature covers ``label || the array without the
signature`` (:mod:`microsync.identity` has the records).

Records are frozen values, and the same few certificates are decoded again and again (a
store hands out each device's certificate as bytes, once per entry a peer sends): decoding
keeps the last :data:`RECENT_RECORDS` it made, by type and bytes, and answers a repeat with the
same value. Only what decoded is kept; a record's signature is still checked by
:meth:`SignedRecord.verify`, every time it is called."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Self, TypeVar

from microsync import encoding
from microsync.crypto import labels
from microsync.crypto.keys import SIGNATURE_SIZE, SigningKey, VerifyKey
from microsync.encoding import Value, expect_bytes, expect_int, expect_list
from microsync.errors import DecodeError, UnknownVersion

__all__ = ["MAX_NAME_LENGTH", "MAX_RECORD_SIZE", "RECORD_VERSION", "SignedRecord"]

RECORD_VERSION = 1
MAX_RECORD_SIZE = 1024
MAX_NAME_LENGTH = 64
RECENT_RECORDS = 1024
"""How many decoded records :meth:`SignedRecord.from_bytes` keeps (the newest)."""
_KEY = 32


class SignedRecord:
    """Shared codec for the records above: ``[version, *fields, signature]``."""

    __slots__ = ()
    LABEL: ClassVar[labels.Label]
    signature: bytes

    def _fields(self) -> list[Value]:
        raise NotImplementedError

    @classmethod
    def _from_fields(cls, fields: list[Value], signature: bytes) -> Self:
        raise NotImplementedError

    def _signer(self) -> VerifyKey:
        raise NotImplementedError

    def signing_bytes(self) -> bytes:
        """The canonical bytes the signature covers (the label is added by the signer)."""
        return encoding.encode([RECORD_VERSION, *self._fields()])

    def to_bytes(self) -> bytes:
        return encoding.encode([RECORD_VERSION, *self._fields(), self.signature])

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode strictly. Does not check the signature: call :meth:`verify`."""
        key = (cls, bytes(data))
        found = _recent.get(key)
        if found is None:
            found = _recent[key] = cls._decode(key[1])
            while len(_recent) > RECENT_RECORDS:
                del _recent[next(iter(_recent))]
        return found  # type: ignore[return-value]

    @classmethod
    def _decode(cls, data: bytes) -> Self:
        items = expect_list(encoding.decode(data, max_size=MAX_RECORD_SIZE), cls.__name__)
        if len(items) < 2:
            raise DecodeError(f"{cls.__name__}: too short")
        version = expect_int(items[0], "version")
        if version != RECORD_VERSION:
            raise UnknownVersion(f"{cls.__name__} version {version} is not supported")
        signature = expect_bytes(items[-1], "signature", SIGNATURE_SIZE)
        return cls._from_fields(items[1:-1], signature)

    def verify(self) -> None:
        """Raise :class:`~microsync.errors.BadSignature` unless the signature is valid."""
        self._signer().verify(self.LABEL, self.signing_bytes(), self.signature)


_recent: dict[tuple[type[SignedRecord], bytes], SignedRecord] = {}  # oldest first


def _exactly(fields: list[Value], count: int, name: str) -> list[Value]:
    if len(fields) != count:
        raise DecodeError(f"{name}: expected {count} fields, got {len(fields)}")
    return fields


_R = TypeVar("_R", bound=SignedRecord)


def _signed(key: SigningKey, unsigned: _R) -> _R:
    """Sign ``unsigned``, refusing (``ValueError``) to sign anything ``from_bytes`` would reject."""
    try:
        type(unsigned).from_bytes(replace(unsigned, signature=bytes(SIGNATURE_SIZE)).to_bytes())  # type: ignore[type-var]
    except DecodeError as error:
        raise ValueError(f"cannot issue {type(unsigned).__name__}: {error}") from None
    signature = key.sign(unsigned.LABEL, unsigned.signing_bytes())
    return replace(unsigned, signature=signature)  # type: ignore[type-var]
