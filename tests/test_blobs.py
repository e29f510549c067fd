"""The vault's sans-IO core: the STREAM chunk construction (known answers, checked against an
independent ChaCha20-Poly1305), the manifest codec, round trips and every tampering case."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt

from microsync.blobs import (
    BlobDecryptor,
    BlobEncryptor,
    BlobId,
    Manifest,
    VaultIndex,
    VaultKind,
    VaultOp,
    chunk_count,
    id_key,
    open_stream,
)
from microsync.crypto.labels import frame
from microsync.crypto.stream import VAULT_CHUNK, stream_nonce
from microsync.errors import DecodeError, DecryptionError
from microsync.feed.entry import EntryId
from microsync.identity import PersonId

KEY = bytes(range(32))
IDS_KEY = id_key(bytes(range(100, 132)))
FOX = b"The quick brown fox jumps over the lazy dog"

# known answers: chunk_size 16, the fox sentence (43 bytes -> 16 + 16 + 11)
FOX_CHUNKS = [
    "4cd02711dc93cfb278413e13c0342007f424f8f6e5412f394b68f5b4fd098d72",
    "d11e3ae022696415e9c62403a61fbf7b4ed4dde2bda27c23c0f8f9a6037137f7",
    "b80525ce769741f73733084cd51a2d4bbb172e6ada762902ee414f",
]
FOX_IDS = [
    "8d5aec4ca50845edcdf2e934fe7e7d92e90cf39a3dc068078be58ffa87cca6b9",
    "2d6b9b2badffee2e8271a5b0e57a8086e0555e7ff13a09b212d31e25ce6e3baa",
    "44b9ca740060ba0af5d3a09fc5d7cb5d4707d3b8f0d1b2ee5a1c398fe961cf06",
]
FOX_BLOB = "d4cca89ce50b18782b4cd1f1e97aff426e3392783eba3e9b2e03d51ae382e224"
FOX_ADD = (
    "830101885820000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f10182b0258"
    "60" + "".join(FOX_IDS) + "67666f782e7478746a746578742f706c61696e4489504e47"
)


def seal(data: bytes, chunk_size: int, key: bytes = KEY) -> tuple[BlobEncryptor, list[bytes]]:
    enc = BlobEncryptor(key, IDS_KEY, chunk_size)
    chunks = [c.data for c in enc.update(data)]
    chunks.append(enc.finish().data)
    return enc, chunks


def decryptor(enc: BlobEncryptor, key: bytes = KEY) -> BlobDecryptor:
    return BlobDecryptor(key, IDS_KEY, enc.chunk_size, enc.size, enc.ids)


# ---------------------------------------------------------------------- known answers


def test_known_answer_chunks_ids_and_blob_id() -> None:
    enc, chunks = seal(FOX, 16)
    assert [c.hex() for c in chunks] == FOX_CHUNKS
    assert [i.hex() for i in enc.ids] == FOX_IDS
    assert enc.blob_id.hex() == FOX_BLOB


def test_chunk_construction_matches_an_independent_chacha20_poly1305() -> None:
    """nonce = index (8 bytes BE) || last flag || 3 zero bytes; AD = framed label."""
    for index, last in ((0, False), (1, False), (2, True)):
        assert stream_nonce(index, last) == index.to_bytes(8, "big") + bytes([last]) + bytes(3)
        plain = FOX[16 * index : 16 * index + 16]
        expected = crypto_aead_chacha20poly1305_ietf_encrypt(
            plain, frame(VAULT_CHUNK), stream_nonce(index, last), KEY
        )
        assert expected.hex() == FOX_CHUNKS[index]


def test_known_answer_manifest_encoding() -> None:
    enc, _ = seal(FOX, 16)
    manifest = Manifest(
        key=KEY,
        chunk_size=16,
        size=43,
        epoch=2,
        ids=tuple(enc.ids),
        name="fox.txt",
        mime="text/plain",
        thumbnail=b"\x89PNG",
    )
    data = VaultOp(kind=VaultKind.ADD, manifest=manifest).to_bytes()
    assert data.hex() == FOX_ADD
    back = VaultOp.from_bytes(data)
    assert back.manifest == manifest and back.to_bytes() == data
    assert manifest.blob_id(IDS_KEY).hex() == FOX_BLOB
    remove = VaultOp(kind=VaultKind.REMOVE, blob=BlobId(bytes.fromhex(FOX_BLOB)))
    assert remove.to_bytes().hex() == "8301025820" + FOX_BLOB
    assert "000102" not in repr(manifest)  # the key never prints


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: [2, *v[1:]],  # unknown version
        lambda v: [v[0], 9, v[2]],  # unknown kind
        lambda v: [v[0], v[1], v[2][:-1]],  # missing field
        lambda v: [v[0], v[1], [v[2][0][:31], *v[2][1:]]],  # short key
        lambda v: [v[0], v[1], [v[2][0], 8, *v[2][2:]]],  # chunk size below the minimum
        lambda v: [v[0], v[1], [*v[2][:2], 49, *v[2][3:]]],  # size does not match ids
        lambda v: [v[0], v[1], [*v[2][:4], v[2][4] + b"x", *v[2][5:]]],  # ragged ids
        lambda v: [v[0], v[1], [*v[2][:5], "n" * 256, *v[2][6:]]],  # name too long
        lambda v: [v[0], v[1], [*v[2][:7], b"t" * (48 * 1024 + 1)]],  # thumbnail too big
        lambda v: [v[0], 2, b"short"],  # remove with a bad id
    ],
)
def test_manifest_decoding_is_strict(mutate: object) -> None:
    from microsync import encoding

    value = encoding.decode(bytes.fromhex(FOX_ADD), max_size=2**20)
    bad = encoding.encode(mutate(value))  # type: ignore[operator]
    with pytest.raises(DecodeError):
        VaultOp.from_bytes(bad)


def test_non_canonical_manifest_is_refused() -> None:
    data = bytes.fromhex(FOX_ADD)
    # chunk_size 16 written as a 2-byte integer: same value, not canonical
    padded = data.replace(b"\x10\x18\x2b", b"\x19\x00\x10\x18\x2b", 1)
    assert padded != data
    with pytest.raises(DecodeError):
        VaultOp.from_bytes(padded)


# ---------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None)
@given(data=st.data(), chunk_size=st.integers(16, 300))
def test_round_trip_over_sizes_and_chunk_sizes(data: st.DataObject, chunk_size: int) -> None:
    size = data.draw(
        st.one_of(
            st.sampled_from([0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 3 * chunk_size]),
            st.integers(0, 5 * chunk_size),
        )
    )
    plain = data.draw(st.binary(min_size=size, max_size=size))
    pieces = data.draw(st.lists(st.integers(1, 2 * chunk_size), max_size=20))
    enc = BlobEncryptor(KEY, IDS_KEY, chunk_size)
    sealed, start = [], 0
    for n in pieces:  # fed in arbitrary pieces
        sealed += [c.data for c in enc.update(plain[start : start + n])]
        start += n
    sealed += [c.data for c in enc.update(plain[start:])]
    sealed.append(enc.finish().data)
    assert len(sealed) == chunk_count(size, chunk_size) == len(enc.ids)
    dec = decryptor(enc)
    assert b"".join(dec.open(i, c) for i, c in enumerate(sealed)) == plain
    assert open_stream(KEY, sealed) == plain


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024 + 5])
def test_round_trip_at_the_default_chunk_size(size: int) -> None:
    plain = bytes(i % 251 for i in range(size))
    enc, sealed = seal(plain, 1024 * 1024)
    assert len(sealed) == chunk_count(size, 1024 * 1024)
    dec = decryptor(enc)
    assert b"".join(dec.open(i, c) for i, c in enumerate(sealed)) == plain


# ---------------------------------------------------------------------- tampering

PLAIN = bytes(range(256)) * 2  # 512 bytes, 16-byte chunks: 32 chunks


def fox_blob() -> tuple[BlobEncryptor, list[bytes]]:
    return seal(PLAIN, 16)


def test_flipped_bit_in_any_chunk_is_detected() -> None:
    enc, sealed = fox_blob()
    dec = decryptor(enc)
    for i, chunk in enumerate(sealed):
        for bit in (0, 8 * len(chunk) - 1):
            bad = bytearray(chunk)
            bad[bit // 8] ^= 1 << (bit % 8)
            assert not dec.verify(i, bytes(bad))
            with pytest.raises(DecryptionError):
                dec.open(i, bytes(bad))
            with pytest.raises(DecryptionError):
                open_stream(KEY, [*sealed[:i], bytes(bad), *sealed[i + 1 :]])


def test_dropped_duplicated_reordered_truncated_extended_are_detected() -> None:
    enc, sealed = fox_blob()
    dec = decryptor(enc)
    cases = {
        "dropped": sealed[:5] + sealed[6:],
        "duplicated": [*sealed[:5], sealed[5], *sealed[5:]],
        "reordered": [sealed[1], sealed[0], *sealed[2:]],
        "truncated": sealed[:-1],
        "extended": [*sealed, sealed[-1]],
        "empty": [],
    }
    for name, seq in cases.items():
        with pytest.raises(DecryptionError):
            open_stream(KEY, seq)
        if name in ("truncated", "empty"):
            continue  # the manifest decryptor knows the count: nothing to open past it
        mismatch = next(i for i, c in enumerate(seq) if i >= len(sealed) or c != sealed[i])
        with pytest.raises(DecryptionError):
            dec.open(mismatch, seq[mismatch])
    with pytest.raises(DecryptionError):
        dec.open(len(sealed), sealed[-1])  # an extension has no slot


def test_truncation_inside_the_last_chunk_and_last_flag_on_a_middle_chunk() -> None:
    _, sealed = fox_blob()
    with pytest.raises(DecryptionError):
        open_stream(KEY, [*sealed[:-1], sealed[-1][:-1]])
    # a middle chunk sealed as "last" cannot end the stream early
    with pytest.raises(DecryptionError):
        open_stream(KEY, sealed[:3])


def test_chunk_from_another_blob_is_detected() -> None:
    enc, sealed = fox_blob()
    other_enc, other = seal(PLAIN, 16, key=bytes(32))  # same plaintext, other blob key
    assert set(enc.ids).isdisjoint(other_enc.ids)
    dec = decryptor(enc)
    for i in (0, 7, len(sealed) - 1):
        assert not dec.verify(i, other[i])
        with pytest.raises(DecryptionError):
            dec.open(i, other[i])
        with pytest.raises(DecryptionError):
            open_stream(KEY, [*sealed[:i], other[i], *sealed[i + 1 :]])


def test_same_file_in_two_groups_gets_unlinkable_ids() -> None:
    """Ids are keyed per group epoch: even with the SAME blob key, ids differ."""
    a = BlobEncryptor(KEY, id_key(b"a" * 32), 16)
    b = BlobEncryptor(KEY, id_key(b"b" * 32), 16)
    for enc in (a, b):
        enc.update(PLAIN)
        enc.finish()
    assert set(a.ids).isdisjoint(b.ids) and a.blob_id != b.blob_id


def test_memory_stays_below_two_chunks_plus_the_piece() -> None:
    enc = BlobEncryptor(KEY, IDS_KEY, 1024)
    released = 0
    for _ in range(100):
        out = enc.update(b"x" * 700)
        released += 1024 * len(out)
        assert len(out) <= 1
        assert enc.size - released <= 1024 + 700  # what it may still hold
    enc.finish()
    assert enc.size == 70_000


# ---------------------------------------------------------------------- the fold


def _manifest(name: str, key: bytes) -> Manifest:
    enc, _ = seal(name.encode(), 16, key=key)
    return Manifest(
        key=key, chunk_size=16, size=enc.size, epoch=1, ids=tuple(enc.ids), name=name, mime=""
    )


@given(st.permutations(range(4)))
def test_vault_fold_is_order_independent(order: list[int]) -> None:
    alice, bob = PersonId(b"a" * 32), PersonId(b"b" * 32)
    m1, m2 = _manifest("one", b"1" * 32), _manifest("two", b"2" * 32)
    b1, b2 = m1.blob_id(IDS_KEY), m2.blob_id(IDS_KEY)
    ops = [
        (EntryId(b"\x01" * 32), alice, VaultOp(kind=VaultKind.ADD, manifest=m1)),
        (EntryId(b"\x02" * 32), alice, VaultOp(kind=VaultKind.ADD, manifest=m2)),
        (EntryId(b"\x03" * 32), alice, VaultOp(kind=VaultKind.REMOVE, blob=b1)),
        (EntryId(b"\x04" * 32), bob, VaultOp(kind=VaultKind.REMOVE, blob=b2)),  # not his
    ]
    index = VaultIndex()
    purged: list[bytes] = []
    for i in order:
        entry, person, op = ops[i]
        p = index.apply(entry=entry, person=person, hlc=i, op=op, ids_key=IDS_KEY)
        if p is not None:
            purged.append(p.blob)
    assert set(index.refs) == {b2}
    assert purged == [b1]
    assert index.refs[b2].name == "two"


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300) | st.sampled_from([bytes.fromhex(FOX_ADD)]).map(bytearray).map(bytes)
)
def test_vault_op_decoding_is_canonical_on_arbitrary_bytes(data: bytes) -> None:
    try:
        op = VaultOp.from_bytes(data)
    except DecodeError:
        return
    assert op.to_bytes() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(bytes.fromhex(FOX_ADD)) - 1), st.integers(1, 255))
def test_every_single_byte_change_of_a_manifest_is_refused_or_canonical(at: int, xor: int) -> None:
    data = bytearray(bytes.fromhex(FOX_ADD))
    data[at] ^= xor
    try:
        op = VaultOp.from_bytes(bytes(data))
    except DecodeError:
        return
    assert op.to_bytes() == bytes(data)
