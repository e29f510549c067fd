"""Known-answer vectors for the app operation codec: the plaintext bytes of one operation of
each kind, pinned as they were before the per-kind classes (wire bytes must never change)."""

from __future__ import annotations

from typing import assert_never

import pytest

from microsync.app.ops import (
    AppOp,
    AppOperation,
    CursorOp,
    DeleteOp,
    DocOp,
    EditOp,
    ForgetOp,
    HideOp,
    Kind,
    LocationOp,
    PostOp,
    Precision,
    ReactOp,
    UnreactOp,
)
from microsync.app.parts import AttachmentPart, LinkPart, PlacePart, TextPart

POST_ID = bytes(range(32))
OTHER_ID = bytes(range(32, 64))
DEVICE_ID = bytes(range(64, 96))
PARTS = (
    TextPart(text="Landed"),
    LinkPart(url="https://example.org/f/BA123", title="BA123"),
    PlacePart(label="Heathrow", lat=51_450_000, lon=-450_000, precision="city"),
    AttachmentPart(ref=POST_ID),
)

# name -> (the operation, built the historical way, and its bytes)
VECTORS: dict[str, tuple[AppOp, str]] = {
    "post": (
        AppOp(Kind.POST, text="Landed in Oxford"),
        "830101a16474657874704c616e64656420696e204f78666f7264",
    ),
    "post_full": (
        AppOp(
            Kind.POST,
            text="re",
            reply_to=POST_ID,
            attachments=(b"blob-1", OTHER_ID),
            ttl_ms=86_400_000,
        ),
        "830101a464746578746272656674746c5f6d731a05265c00687265706c795f746f5820000102030405060708"
        "090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f6b6174746163686d656e74738246626c6f622d3158"
        "20202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    ),
    # structured posts (issue 18): ``parts`` is additive, the vectors above are unchanged
    "post_parts": (
        AppOp(Kind.POST, text="BA123", parts=PARTS),
        "830101a26474657874654241313233657061727473848201664c616e6465648302781b68747470733a2f2f"
        "6578616d706c652e6f72672f662f42413132336542413132338503684865617468726f771a031110903a00"
        "06ddcf646369747982045820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ),
    "edit": (
        AppOp(Kind.EDIT, post=POST_ID, text="Landed in Oxford!"),
        "830102a264706f73745820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f64"
        "74657874714c616e64656420696e204f78666f726421",
    ),
    "delete": (
        AppOp(Kind.DELETE, post=POST_ID),
        "830103a164706f73745820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ),
    "react": (
        AppOp(Kind.REACT, post=POST_ID, emoji="❤️"),
        "830104a264706f73745820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f65"
        "656d6f6a6966e29da4efb88f",
    ),
    "unreact": (
        AppOp(Kind.UNREACT, post=POST_ID, emoji="❤️", removes=(OTHER_ID,)),
        "830105a364706f73745820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f65"
        "656d6f6a6966e29da4efb88f6772656d6f766573815820202122232425262728292a2b2c2d2e2f3031323334"
        "35363738393a3b3c3d3e3f",
    ),
    "cursor": (
        AppOp(Kind.CURSOR, cursor=((DEVICE_ID, 7), (POST_ID, 1))),
        "830106a166637572736f7282825820404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c"
        "5d5e5f07825820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f01",
    ),
    "cursor_empty": (AppOp(Kind.CURSOR, cursor=()), "830106a166637572736f7280"),
    "location": (
        AppOp(Kind.LOCATION, lat=51_750_000, lon=-1_250_000, precision="city"),
        "830107a3636c61741a0315a470636c6f6e3a001312cf69707265636973696f6e6463697479",
    ),
    "doc": (
        AppOp(Kind.DOC, doc="calendar", payload=b"\x01\x02\x03"),
        "830108a263646f636863616c656e646172677061796c6f616443010203",
    ),
    # per-viewer location (issue 18): a place label is additive, "location" above is unchanged
    "location_label": (
        AppOp(Kind.LOCATION, lat=51_750_000, lon=-1_250_000, precision="city", label="Oxford"),
        "830107a4636c61741a0315a470636c6f6e3a001312cf656c6162656c664f78666f726469707265636973"
        "696f6e6463697479",
    ),
    "forget": (
        AppOp(Kind.FORGET, up_to=1_700_000_000_000),
        "830109a16575705f746f1b0000018bcfe56800",
    ),
    "hide": (
        AppOp(Kind.HIDE, upto=((DEVICE_ID, 7),)),
        "830114a1647570746f81825820404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f07",
    ),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_each_kind_encodes_to_its_pinned_bytes(name: str) -> None:
    op, expected = VECTORS[name]
    assert op.to_bytes().hex() == expected


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_the_pinned_bytes_decode_to_the_same_operation(name: str) -> None:
    op, data = VECTORS[name]
    decoded = AppOp.from_bytes(bytes.fromhex(data))
    assert decoded == op
    assert decoded.kind is op.kind
    assert decoded.to_bytes().hex() == data


def test_every_kind_has_a_vector() -> None:
    assert {op.kind for op, _ in VECTORS.values()} == set(Kind)


def test_the_per_kind_classes_give_the_same_bytes() -> None:
    built = {
        "post": PostOp(text="Landed in Oxford"),
        "post_full": PostOp(
            text="re", reply_to=POST_ID, attachments=(b"blob-1", OTHER_ID), ttl_ms=86_400_000
        ),
        "post_parts": PostOp(text="BA123", parts=PARTS),
        "edit": EditOp(post=POST_ID, text="Landed in Oxford!"),
        "delete": DeleteOp(post=POST_ID),
        "react": ReactOp(post=POST_ID, emoji="❤️"),
        "unreact": UnreactOp(post=POST_ID, emoji="❤️", removes=(OTHER_ID,)),
        "cursor": CursorOp(cursor=((DEVICE_ID, 7), (POST_ID, 1))),
        "cursor_empty": CursorOp(cursor=()),
        "location": LocationOp(lat=51_750_000, lon=-1_250_000, precision=Precision.CITY),
        "doc": DocOp(doc="calendar", payload=b"\x01\x02\x03"),
        "location_label": LocationOp(
            lat=51_750_000, lon=-1_250_000, precision=Precision.CITY, label="Oxford"
        ),
        "forget": ForgetOp(up_to=1_700_000_000_000),
        "hide": HideOp(upto=((DEVICE_ID, 7),)),
    }
    assert set(built) == set(VECTORS)
    for name, op in built.items():
        old, data = VECTORS[name]
        assert op == old and type(op) is type(old)
        assert op.to_bytes().hex() == data


def describe(op: AppOperation) -> str:
    """A consumer that names every kind (mypy checks it is exhaustive)."""
    match op:
        case PostOp(reply_to=None):
            return "post"
        case PostOp():
            return "reply"
        case EditOp() | DeleteOp() | ReactOp() | UnreactOp():
            return f"{op.kind.name.lower()} of {op.post[:2].hex()}"
        case CursorOp(cursor=cursor):
            return f"cursor over {len(cursor)} devices"
        case LocationOp(precision=precision):
            return f"location to the {precision}"
        case DocOp(doc=doc):
            return f"change to {doc}"
        case ForgetOp(up_to=up_to):
            return f"kept locations forgotten up to {up_to}"
        case HideOp(upto=upto):
            return f"hide of {len(upto)} devices"
        case _:
            assert_never(op)


def test_decoded_operations_match_on_their_classes() -> None:
    seen = {name: describe(AppOp.from_bytes(bytes.fromhex(v))) for name, (_, v) in VECTORS.items()}
    assert seen["post"] == "post" and seen["post_full"] == "reply"
    assert seen["unreact"] == "unreact of 0001"
    assert seen["location"] == "location to the city"
    location = AppOp.from_bytes(bytes.fromhex(VECTORS["location"][1]))
    assert isinstance(location, LocationOp) and location.precision is Precision.CITY
    assert location.precision == "city"  # type: ignore[comparison-overlap]  # a StrEnum


def test_a_kind_with_fields_of_another_is_refused() -> None:
    with pytest.raises(TypeError):
        AppOp(Kind.DELETE, post=POST_ID, text="not a delete's")
    with pytest.raises(ValueError):
        LocationOp(lat=0, lon=0, precision="nearby")  # type: ignore[arg-type]
