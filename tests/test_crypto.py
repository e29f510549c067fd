"""microsync.crypto: labels, hashing, typed keys, AEAD and recovery words.

Known-answer vectors come from the RFCs and drafts that define the primitives (RFC 8032
Ed25519, RFC 7748 X25519, draft-irtf-cfrg-xchacha, the BIP39 reference vectors) so they check
the primitives, not just this code against itself. Signatures are also checked by an independent
Ed25519 implementation (``cryptography``) over the framing the docs promise.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic

from microsync.crypto import (
    AEAD_NONCE_SIZE,
    HASH_SIZE,
    SIGNATURE_SIZE,
    SigningKey,
    SymmetricKey,
    VerifyKey,
    X25519PublicKey,
    X25519SecretKey,
    derive_key,
    fingerprint,
    labelled_hash,
    labels,
    seed_from_words,
    system_rng,
    words_from_seed,
)
from microsync.crypto.labels import Label, frame
from microsync.errors import BadSignature, DecodeError, DecryptionError
from microsync.identity import LocalIdentity

NOW = 1_700_000_000_000
WORDLIST: list[str] = Mnemonic("english").wordlist


def make_rng(seed: str) -> Callable[[int], bytes]:
    """A deterministic byte source: SHAKE-256 of ``seed`` and a counter."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return hashlib.shake_256(seed.encode() + next(counter).to_bytes(8, "big")).digest(n)

    return rng


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def spec_frame(label: bytes) -> bytes:
    """The framing as DESIGN/labels.py describe it, written out independently."""
    return len(label).to_bytes(1, "big") + label


ALICE = SigningKey(make_rng("alice")(32))
BOB = SigningKey(make_rng("bob")(32))
SIG_LABELS = [
    labels.ENTRY_SIGNATURE,
    labels.DEVICE_CERTIFICATE,
    labels.DEVICE_REVOCATION,
    labels.TRANSPORT_KEY_CERTIFICATE,
    labels.PREKEY_CERTIFICATE,
]

# --------------------------------------------------------------------------- labels


def test_labels_are_unique_and_versioned() -> None:
    values = list(labels.ALL_LABELS.values())
    assert len(values) >= 9
    assert len(set(values)) == len(values)
    for name, label in labels.ALL_LABELS.items():
        assert re.fullmatch(rb"microsync/v[1-9][0-9]*/[a-z0-9-]+", label), name
        assert getattr(labels, name) == label


def test_all_labels_lists_every_label_in_use() -> None:
    expected = {
        "ENTRY_SIGNATURE",
        "DEVICE_CERTIFICATE",
        "DEVICE_REVOCATION",
        "TRANSPORT_KEY_CERTIFICATE",
        "PREKEY_CERTIFICATE",
        "ENTRY_ID",
        "BODY_HASH",
        "FINGERPRINT",
        "GROUP_ID",
    }
    assert expected <= set(labels.ALL_LABELS)


def test_frame_is_length_then_label() -> None:
    for label in labels.ALL_LABELS.values():
        assert frame(label) == spec_frame(label)


def test_frames_are_prefix_free_even_when_labels_are_not() -> None:
    all_labels = list(labels.ALL_LABELS.values())
    prefix_pairs = [(a, b) for a, b in itertools.permutations(all_labels, 2) if b.startswith(a)]
    assert prefix_pairs, "expected at least one label that is a prefix of another"
    for a, b in itertools.permutations(all_labels, 2):
        assert not frame(b).startswith(frame(a)), (a, b)


@settings(max_examples=300)
@given(
    st.binary(min_size=1, max_size=255),
    st.binary(min_size=1, max_size=255),
    st.binary(max_size=32),
    st.binary(max_size=32),
)
def test_framed_inputs_never_collide_across_labels(
    label_a: bytes, label_b: bytes, message_a: bytes, message_b: bytes
) -> None:
    assume(label_a != label_b)
    assert frame(Label(label_a)) + message_a != frame(Label(label_b)) + message_b


def test_frame_rejects_empty_and_overlong_labels() -> None:
    with pytest.raises(ValueError):
        frame(Label(b""))
    with pytest.raises(ValueError):
        frame(Label(b"x" * 256))
    assert frame(Label(b"x" * 255)) == b"\xff" + b"x" * 255


# --------------------------------------------------------------------------- hashing


def test_labelled_hash_known_answer() -> None:
    assert labelled_hash(labels.ENTRY_ID, b"abc") == bytes.fromhex(
        "236f06d0e1d2e6e28d50a163512ffe176d427ce18467ea1128e94da55e6f9351"
    )


@settings(max_examples=200)
@given(st.sampled_from(list(labels.ALL_LABELS.values())), st.lists(st.binary(max_size=40)))
def test_labelled_hash_is_blake2b_of_framed_parts(label: Label, parts: list[bytes]) -> None:
    expected = hashlib.blake2b(spec_frame(label) + b"".join(parts), digest_size=32).digest()
    assert labelled_hash(label, *parts) == expected
    assert len(expected) == HASH_SIZE


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_labelled_hash_differs_between_labels(message: bytes) -> None:
    digests = {labelled_hash(label, message) for label in labels.ALL_LABELS.values()}
    assert len(digests) == len(labels.ALL_LABELS)


@settings(max_examples=100)
@given(st.binary(max_size=64))
def test_labelled_hash_resists_label_prefix_confusion(message: bytes) -> None:
    # Unframed, "microsync/v1/entry" + "-id" + m would equal "microsync/v1/entry-id" + m.
    assert labelled_hash(labels.ENTRY_SIGNATURE, b"-id", message) != labelled_hash(
        labels.ENTRY_ID, message
    )


def test_derive_key_known_answer() -> None:
    assert derive_key(labels.GROUP_ID, bytes(range(32)), b"ctx") == bytes.fromhex(
        "a03a24bb855b5f8db79d1a026137bf4747dec2459d23975532ad8f468b55a802"
    )


@settings(max_examples=100)
@given(st.binary(min_size=16, max_size=64), st.binary(max_size=32))
def test_derive_key_separates_labels_contexts_and_keys(key: bytes, context: bytes) -> None:
    derived = {derive_key(label, key, context) for label in labels.ALL_LABELS.values()}
    assert len(derived) == len(labels.ALL_LABELS)
    assert all(len(k) == 32 for k in derived)
    one = derive_key(labels.GROUP_ID, key, context)
    assert one == derive_key(labels.GROUP_ID, key, context)
    assert one != derive_key(labels.GROUP_ID, key, context + b"\x00")
    assert one != derive_key(labels.GROUP_ID, flip(key, 0), context)
    # Keyed: not the unkeyed labelled hash of the same input.
    assert one != labelled_hash(labels.GROUP_ID, context)


@pytest.mark.parametrize("size", [0, 1, 15, 65, 100])
def test_derive_key_rejects_bad_key_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        derive_key(labels.GROUP_ID, b"k" * size)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_derive_key_accepts_16_to_64_byte_keys(size: int) -> None:
    assert len(derive_key(labels.GROUP_ID, b"k" * size)) == 32


def test_fingerprint_is_short_stable_and_distinct() -> None:
    a = fingerprint(b"a" * 32)
    assert a == fingerprint(b"a" * 32)
    assert len(a) == 16
    int(a, 16)
    assert a != fingerprint(b"b" * 32)
    assert fingerprint(bytes(32)) == "572acce3832e2ae9"


# --------------------------------------------------------------------------- Ed25519


def test_ed25519_rfc8032_public_key() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    assert bytes(SigningKey(seed).public) == bytes.fromhex(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SIG_LABELS), st.binary(max_size=200))
def test_sign_verify_round_trip(label: Label, message: bytes) -> None:
    signature = ALICE.sign(label, message)
    assert len(signature) == SIGNATURE_SIZE
    assert signature == ALICE.sign(label, message)  # Ed25519 is deterministic
    ALICE.public.verify(label, message, signature)
    # An independent Ed25519 implementation agrees on what was signed.
    Ed25519PublicKey.from_public_bytes(bytes(ALICE.public)).verify(
        signature, spec_frame(label) + message
    )


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100))
def test_verify_rejects_the_wrong_label(message: bytes) -> None:
    for sign_label, verify_label in itertools.permutations(SIG_LABELS, 2):
        with pytest.raises(BadSignature):
            ALICE.public.verify(verify_label, message, ALICE.sign(sign_label, message))


def test_verify_rejects_label_prefix_confusion() -> None:
    for short, long in itertools.permutations(labels.ALL_LABELS.values(), 2):
        if not long.startswith(short):
            continue
        # Without framing these two signed strings would be identical.
        tail = long[len(short) :]
        signature = ALICE.sign(short, tail + b"message")
        with pytest.raises(BadSignature):
            ALICE.public.verify(long, b"message", signature)
    signature = ALICE.sign(Label(b"x/a"), b"bc")
    with pytest.raises(BadSignature):
        ALICE.public.verify(Label(b"x/ab"), b"c", signature)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_verify_rejects_any_single_bit_flip_of_the_message(data: st.DataObject) -> None:
    message = data.draw(st.binary(min_size=1, max_size=100))
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    signature = ALICE.sign(labels.ENTRY_SIGNATURE, message)
    with pytest.raises(BadSignature):
        ALICE.public.verify(labels.ENTRY_SIGNATURE, flip(message, bit), signature)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.integers(0, SIGNATURE_SIZE * 8 - 1))
def test_verify_rejects_any_single_bit_flip_of_the_signature(message: bytes, bit: int) -> None:
    signature = ALICE.sign(labels.ENTRY_SIGNATURE, message)
    with pytest.raises(BadSignature):
        ALICE.public.verify(labels.ENTRY_SIGNATURE, message, flip(signature, bit))


def test_every_signature_bit_flip_is_rejected() -> None:
    message = b"one fixed message"
    signature = ALICE.sign(labels.DEVICE_CERTIFICATE, message)
    for bit in range(SIGNATURE_SIZE * 8):
        with pytest.raises(BadSignature):
            ALICE.public.verify(labels.DEVICE_CERTIFICATE, message, flip(signature, bit))


def test_verify_rejects_the_wrong_key() -> None:
    signature = ALICE.sign(labels.ENTRY_SIGNATURE, b"hello")
    with pytest.raises(BadSignature):
        BOB.public.verify(labels.ENTRY_SIGNATURE, b"hello", signature)
    BOB.public.verify(labels.ENTRY_SIGNATURE, b"hello", BOB.sign(labels.ENTRY_SIGNATURE, b"hello"))


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_verify_rejects_signatures_of_the_wrong_length(length: int) -> None:
    signature = ALICE.sign(labels.ENTRY_SIGNATURE, b"hello")
    wrong = (signature * 2)[:length]
    with pytest.raises(BadSignature):
        ALICE.public.verify(labels.ENTRY_SIGNATURE, b"hello", wrong)


def test_verify_rejects_an_all_zero_signature_and_key() -> None:
    with pytest.raises(BadSignature):
        VerifyKey(bytes(32)).verify(labels.ENTRY_SIGNATURE, b"", bytes(SIGNATURE_SIZE))


def test_generate_uses_only_the_given_rng() -> None:
    assert SigningKey.generate(make_rng("k")).public == SigningKey.generate(make_rng("k")).public
    assert SigningKey.generate(make_rng("k")).public != SigningKey.generate(make_rng("j")).public
    assert SigningKey.generate(make_rng("k")).secret_bytes() == make_rng("k")(32)


def test_verify_keys_compare_and_hash_by_value() -> None:
    again = VerifyKey(bytes(ALICE.public))
    assert again == ALICE.public
    assert hash(again) == hash(ALICE.public)
    assert again != BOB.public
    assert again != bytes(ALICE.public)
    assert len({again, ALICE.public, BOB.public}) == 2


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_keys_reject_wrong_sizes(size: int) -> None:
    for constructor in (SigningKey, VerifyKey, X25519SecretKey, X25519PublicKey, SymmetricKey):
        with pytest.raises(ValueError):
            constructor(b"k" * size)


def test_keys_reject_text() -> None:
    with pytest.raises(ValueError):
        SymmetricKey("k" * 32)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- X25519


def test_x25519_rfc7748_public_key() -> None:
    secret = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert bytes(X25519SecretKey(secret).public) == bytes.fromhex(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_x25519_public_key_matches_an_independent_implementation(secret: bytes) -> None:
    independent = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    assert bytes(X25519SecretKey(secret).public) == independent


def test_x25519_public_keys_compare_by_value() -> None:
    key = X25519SecretKey.generate(make_rng("x"))
    assert X25519PublicKey(bytes(key.public)) == key.public
    assert hash(X25519PublicKey(bytes(key.public))) == hash(key.public)
    assert X25519SecretKey.generate(make_rng("y")).public != key.public


# --------------------------------------------------------------------------- no secrets in repr


def assert_hides(text: str, secret: bytes) -> None:
    """``text`` shows no trace of ``secret``: not its hex (any case, any 4-byte window), not
    its bytes repr."""
    assert len(secret) >= 32
    lowered = text.lower()
    assert secret.hex() not in lowered
    assert repr(secret) not in text
    assert str(secret) not in text
    for start in range(len(secret) - 3):
        assert secret[start : start + 4].hex() not in lowered, "a window of the secret leaked"


def rendered(obj: object) -> list[str]:
    return [repr(obj), str(obj), f"{obj}", f"{obj!r}", f"{[obj]}", f"{ {'k': obj} }"]


@pytest.mark.parametrize("seed", ["s1", "s2", "s3"])
def test_signing_key_prints_its_fingerprint_not_its_seed(seed: str) -> None:
    key = SigningKey.generate(make_rng(seed))
    for text in rendered(key):
        assert_hides(text, key.secret_bytes())
        assert fingerprint(bytes(key.public)) in text


@pytest.mark.parametrize("seed", ["s1", "s2", "s3"])
def test_x25519_secret_key_prints_its_fingerprint_not_its_secret(seed: str) -> None:
    key = X25519SecretKey.generate(make_rng(seed))
    for text in rendered(key):
        assert_hides(text, key.secret_bytes())
        assert fingerprint(bytes(key.public)) in text


@pytest.mark.parametrize("seed", ["s1", "s2", "s3"])
def test_symmetric_key_prints_a_fingerprint_not_its_bytes(seed: str) -> None:
    key = SymmetricKey.generate(make_rng(seed))
    for text in rendered(key):
        assert_hides(text, key.secret_bytes())
        assert fingerprint(key.secret_bytes()) in text


def test_local_identity_prints_fingerprints_not_secrets() -> None:
    identity = LocalIdentity.create("laptop", make_rng("identity"), NOW)
    assert identity.person_key is not None
    secrets = [
        identity.person_key.secret_bytes(),
        identity.device_key.secret_bytes(),
        identity.transport_key.secret_bytes(),
        identity.prekey.secret_bytes(),
    ]
    for text in rendered(identity):
        for secret in secrets:
            assert_hides(text, secret)
        assert fingerprint(identity.person_id) in text
        assert fingerprint(identity.device_id) in text
    # The recovery words are a secret too.
    words = identity.recovery_words()
    assert " ".join(words) not in repr(identity)
    assert sum(word in repr(identity).split() for word in words) == 0


# --------------------------------------------------------------------------- XChaCha20-Poly1305

KEY = SymmetricKey(make_rng("epoch")(32))
NONCE = make_rng("nonce")(AEAD_NONCE_SIZE)


def test_xchacha20poly1305_known_answer() -> None:
    # draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    key = SymmetricKey(bytes(range(0x80, 0xA0)))
    nonce = bytes(range(0x40, 0x58))
    ad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    plaintext = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    expected = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"
    )
    assert key.encrypt(nonce, plaintext, ad) == expected
    assert key.decrypt(nonce, expected, ad) == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=64), st.binary(min_size=24, max_size=24))
def test_encrypt_decrypt_round_trip(plaintext: bytes, ad: bytes, nonce: bytes) -> None:
    ciphertext = KEY.encrypt(nonce, plaintext, ad)
    assert len(ciphertext) == len(plaintext) + 16
    assert KEY.decrypt(nonce, ciphertext, ad) == plaintext
    if len(plaintext) >= 8:
        assert plaintext not in ciphertext


def assert_opaque_failure(key: SymmetricKey, nonce: bytes, ciphertext: bytes, ad: bytes) -> None:
    with pytest.raises(DecryptionError) as caught:
        key.decrypt(nonce, ciphertext, ad)
    assert str(caught.value) == "decryption failed"
    assert caught.value.args == ("decryption failed",)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_ciphertext_bit_flip_fails_opaquely(data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(max_size=100))
    ad = data.draw(st.binary(max_size=32))
    ciphertext = KEY.encrypt(NONCE, plaintext, ad)
    bit = data.draw(st.integers(0, len(ciphertext) * 8 - 1))
    assert_opaque_failure(KEY, NONCE, flip(ciphertext, bit), ad)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=32), st.binary(max_size=32))
def test_wrong_associated_data_fails_opaquely(plaintext: bytes, ad: bytes, other: bytes) -> None:
    assume(ad != other)
    ciphertext = KEY.encrypt(NONCE, plaintext, ad)
    assert_opaque_failure(KEY, NONCE, ciphertext, other)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100), st.integers(0, AEAD_NONCE_SIZE * 8 - 1))
def test_wrong_nonce_fails_opaquely(plaintext: bytes, bit: int) -> None:
    ciphertext = KEY.encrypt(NONCE, plaintext, b"ad")
    assert_opaque_failure(KEY, flip(NONCE, bit), ciphertext, b"ad")


@pytest.mark.parametrize("size", [0, 12, 23, 25, 32])
def test_nonce_of_the_wrong_size_fails_opaquely(size: int) -> None:
    ciphertext = KEY.encrypt(NONCE, b"secret", b"")
    assert_opaque_failure(KEY, (NONCE * 2)[:size], ciphertext, b"")
    with pytest.raises(ValueError):
        KEY.encrypt((NONCE * 2)[:size], b"secret", b"")


def test_wrong_key_fails_opaquely() -> None:
    ciphertext = KEY.encrypt(NONCE, b"secret", b"ad")
    other = SymmetricKey(make_rng("other epoch")(32))
    assert_opaque_failure(other, NONCE, ciphertext, b"ad")


def test_truncated_or_extended_ciphertext_fails_opaquely() -> None:
    ciphertext = KEY.encrypt(NONCE, b"a secret worth keeping", b"ad")
    for end in range(len(ciphertext)):
        assert_opaque_failure(KEY, NONCE, ciphertext[:end], b"ad")
    assert_opaque_failure(KEY, NONCE, ciphertext + b"\x00", b"ad")
    assert_opaque_failure(KEY, NONCE, ciphertext[1:], b"ad")


def test_decryption_error_says_nothing_about_the_key_or_plaintext() -> None:
    plaintext = b"the plaintext must not leak"
    ciphertext = KEY.encrypt(NONCE, plaintext, b"")
    with pytest.raises(DecryptionError) as caught:
        KEY.decrypt(NONCE, flip(ciphertext, 0), b"")
    text = repr(caught.value) + str(caught.value)
    assert_hides(text, KEY.secret_bytes())
    assert "plaintext" not in text


def test_symmetric_keys_compare_and_hash_by_value() -> None:
    again = SymmetricKey(KEY.secret_bytes())
    assert again == KEY
    assert hash(again) == hash(KEY)
    assert SymmetricKey(make_rng("other")(32)) != KEY
    assert KEY.secret_bytes() != KEY


def test_encryption_is_a_function_of_its_arguments() -> None:
    # No hidden randomness: same key, nonce, plaintext and AD give the same ciphertext.
    assert KEY.encrypt(NONCE, b"x", b"y") == KEY.encrypt(NONCE, b"x", b"y")
    assert KEY.encrypt(NONCE, b"x", b"y") != KEY.encrypt(flip(NONCE, 0), b"x", b"y")


def test_system_rng_returns_fresh_bytes() -> None:
    assert len(system_rng(32)) == 32
    assert system_rng(32) != system_rng(32)


# --------------------------------------------------------------------------- recovery words

BIP39_VECTORS = [
    ("00" * 32, "abandon " * 23 + "art"),
    ("7f" * 32, "legal winner thank year wave sausage worth useful " * 2
     + "legal winner thank year wave sausage worth title"),
    ("80" * 32, "letter advice cage absurd amount doctor acoustic avoid " * 2
     + "letter advice cage absurd amount doctor acoustic bless"),
    ("ff" * 32, "zoo " * 23 + "vote"),
]  # fmt: skip


@pytest.mark.parametrize(("seed_hex", "phrase"), BIP39_VECTORS)
def test_bip39_known_answers(seed_hex: str, phrase: str) -> None:
    seed = bytes.fromhex(seed_hex)
    assert words_from_seed(seed) == phrase.split()
    assert seed_from_words(phrase) == seed
    assert seed_from_words(phrase.split()) == seed


seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=100, deadline=None)
@given(seeds)
def test_words_round_trip(seed: bytes) -> None:
    words = words_from_seed(seed)
    assert len(words) == 24
    assert all(word in WORDLIST for word in words)
    assert seed_from_words(words) == seed
    assert seed_from_words(" ".join(words)) == seed


@settings(max_examples=100, deadline=None)
@given(seeds, st.data())
def test_case_and_extra_whitespace_are_tolerated(seed: bytes, data: st.DataObject) -> None:
    words = words_from_seed(seed)
    cases = data.draw(
        st.lists(st.sampled_from([str.upper, str.title, str.lower]), min_size=24, max_size=24)
    )
    spaced = [case(word) for case, word in zip(cases, words, strict=True)]
    separators = data.draw(
        st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \r\n "]), min_size=25, max_size=25)
    )
    phrase = separators[0] + "".join(
        word + sep for word, sep in zip(spaced, separators[1:], strict=True)
    )
    assert seed_from_words(phrase) == seed
    # A list of words typed into separate boxes may carry the same stray whitespace.
    assert (
        seed_from_words([sep + word for sep, word in zip(separators, spaced, strict=False)]) == seed
    )


@settings(max_examples=100, deadline=None)
@given(seeds, st.integers(0, 7))
def test_a_wrong_checksum_word_is_rejected(seed: bytes, checksum_bit: int) -> None:
    # The last word carries 3 seed bits and the 8 checksum bits; flipping one checksum bit
    # keeps the seed bits, so the phrase is well-formed but its checksum is wrong.
    words = words_from_seed(seed)
    words[-1] = WORDLIST[WORDLIST.index(words[-1]) ^ (1 << checksum_bit)]
    with pytest.raises(DecodeError):
        seed_from_words(words)
    with pytest.raises(DecodeError):
        seed_from_words(" ".join(words))


@pytest.mark.parametrize("position", [0, 11, 23])
@pytest.mark.parametrize("bad_word", ["notaword", "abandonn", "", "ab", "zoo1", "\u00e1bandon"])
def test_an_unknown_word_is_rejected(position: int, bad_word: str) -> None:
    words = words_from_seed(bytes(32))
    words[position] = bad_word
    with pytest.raises(DecodeError):
        seed_from_words(words)


def test_wrong_word_counts_are_rejected() -> None:
    words = words_from_seed(make_rng("count")(32))
    for wrong in (words[:23], [*words, "abandon"], words + words, words[:1], []):
        with pytest.raises(DecodeError):
            seed_from_words(wrong)
        with pytest.raises(DecodeError):
            seed_from_words(" ".join(wrong))
    # A valid 12-word BIP39 phrase is still not a 24-word recovery phrase.
    with pytest.raises(DecodeError):
        seed_from_words("abandon " * 11 + "about")
    with pytest.raises(DecodeError):
        seed_from_words("   ")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_words_from_seed_needs_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        words_from_seed(b"s" * size)
