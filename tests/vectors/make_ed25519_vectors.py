"""Regenerate tests/vectors/ed25519_edge_cases.json (only when the cases change ON PURPOSE).

    python -m tests.vectors.make_ed25519_vectors > tests/vectors/ed25519_edge_cases.json

Ed25519 edge cases for microsync's verify path (``VerifyKey.verify``: libsodium's
``crypto_sign_open`` over ``frame(label) || message``), computed here in pure Python,
independently of libsodium, from RFC 8032's curve arithmetic:

* **S + L**: a valid signature with ``L`` (the group order) added to ``S`` once or more. A
  verifier that does not insist on ``S < L`` accepts it, which makes signatures malleable (a
  second valid signature, so a second entry id, for the same entry).
* **small-order public keys** ``A``: the 8 points of order dividing 8 (the Edwards form of
  Curve25519's small subgroup; "Taming the many EdDSAs", Chalkias, Garillot, Nikolaenko,
  2020, lists the same 8 encodings) and 6 non-canonical spellings of them (``y >= p``, or
  the sign bit set on ``x = 0``). With ``A`` of small order, ``[k]A`` vanishes whenever the
  order divides ``k = SHA512(R || A || M) mod L``; the message is ground until it does, so
  ``R = [r]B, S = r`` "verifies" without any secret key.
* **small-order R**: the same 14 encodings as ``R``, under an honest key, with
  ``S = k * a mod L``; it satisfies the cofactored equation ``[8][S]B = [8]R + [8][k]A``
  (and, for the identity, the cofactorless one).
* **both small**: small-order ``A`` and ``R`` with ``S = 0`` (Taming's case 0).

Every rejected case is checked here to PASS a lenient reference verifier (cofactored, no
``S < L`` check, no small-order check, ``y`` reduced mod ``p``, a sign bit on ``x = 0``
ignored): only a verifier's policy can reject it, so the vectors test that policy. The policy
microsync relies on, libsodium's (>= 1.0.16, the one PyNaCl bundles): ``S < L``; ``A`` and
``R`` canonical and not of small order; cofactorless equation, ``R`` compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from microsync.crypto.labels import ALL_LABELS, frame

P: Final = 2**255 - 19
L: Final = 2**252 + 27742317777372353535851937790883648493
D: Final = -121665 * pow(121666, P - 2, P) % P
SQRT_M1: Final = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z

IDENTITY: Final[Point] = (0, 1, 1, 0)

# The 8 small-order points, canonically encoded ("Taming the many EdDSAs", table of
# small-order points; libsodium's blocklist in ge25519_has_small_order holds the same values
# with the sign bit masked). Recomputed below from the curve and checked against this list.
SMALL_ORDER_CANONICAL: Final = (
    "0100000000000000000000000000000000000000000000000000000000000000",  # order 1 (identity)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
)
# Non-canonical spellings of small-order points: y = p (y = 0) and y = p + 1 (y = 1), each
# with either sign bit, and the sign bit set on x = 0 for y = 1 and y = -1.
SMALL_ORDER_NONCANONICAL: Final = (
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
)


# --------------------------------------------------------------------------- curve arithmetic


def add(p1: Point, p2: Point) -> Point:
    """Point addition (RFC 8032, 5.1.4)."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a, b = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    c, dd = 2 * t1 * t2 * D % P, 2 * z1 * z2 % P
    e, f, g, h = b - a, dd - c, dd + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar > 0:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def equal(p1: Point, p2: Point) -> bool:
    return (p1[0] * p2[2] - p2[0] * p1[2]) % P == 0 and (p1[1] * p2[2] - p2[1] * p1[2]) % P == 0


def encode(point: Point) -> bytes:
    zinv = pow(point[2], P - 2, P)
    x, y = point[0] * zinv % P, point[1] * zinv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _recover_x(y: int, sign: int) -> int | None:
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return 0 if sign == 0 else None
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    return P - x if (x & 1) != sign else x


def decode_strict(data: bytes) -> Point | None:
    """RFC 8032 decoding: ``y < p``, and no sign bit on ``x = 0``."""
    value = int.from_bytes(data, "little")
    y, sign = value & ((1 << 255) - 1), value >> 255
    if y >= P:
        return None
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def decode_lenient(data: bytes) -> Point | None:
    """The most forgiving decoder: ``y`` reduced mod ``p``, a sign bit on ``x = 0`` ignored."""
    value = int.from_bytes(data, "little")
    y, sign = (value & ((1 << 255) - 1)) % P, value >> 255
    x = _recover_x(y, sign)
    if x is None:
        x = _recover_x(y, 0)
    return None if x is None else (x, y, 1, x * y % P)


def _base_point() -> Point:
    """RFC 8032's B: y = 4/5, x even."""
    point = decode_strict((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))
    assert point is not None
    return point


B: Final[Point] = _base_point()


def order_divides_8(point: Point) -> bool:
    return equal(multiply(8, point), IDENTITY)


def small_order_points() -> list[bytes]:
    """The 8 points of order dividing 8, computed: ``[L]P`` for a point ``P`` of full order
    ``8L`` generates the small subgroup."""
    y = 2
    while True:
        point = decode_strict(y.to_bytes(32, "little"))
        if point is not None:
            torsion = multiply(L, point)
            if not equal(multiply(4, torsion), IDENTITY):  # order exactly 8
                break
        y += 1
    found, current = [], IDENTITY
    for _ in range(8):
        found.append(encode(current))
        current = add(current, torsion)
    return sorted(found)


# --------------------------------------------------------------------------- Ed25519


def sha512_int(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def secret_scalar(seed: bytes) -> tuple[int, bytes]:
    digest = hashlib.sha512(seed).digest()
    scalar = int.from_bytes(digest[:32], "little")
    scalar &= (1 << 254) - 8
    scalar |= 1 << 254
    return scalar, digest[32:]


def public_key(seed: bytes) -> bytes:
    return encode(multiply(secret_scalar(seed)[0], B))


def sign(seed: bytes, message: bytes) -> bytes:
    """RFC 8032 Ed25519 signing."""
    scalar, prefix = secret_scalar(seed)
    public = encode(multiply(scalar, B))
    r = sha512_int(prefix, message) % L
    r_bytes = encode(multiply(r, B))
    k = sha512_int(r_bytes, public, message) % L
    return r_bytes + ((r + k * scalar) % L).to_bytes(32, "little")


def verify_strict(public: bytes, message: bytes, signature: bytes) -> bool:
    """Cofactorless, canonical, ``S < L``, no small-order A or R: libsodium's policy."""
    a_point, r_point = decode_strict(public), decode_strict(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a_point is None or r_point is None or s >= L:
        return False
    if order_divides_8(a_point) or order_divides_8(r_point):
        return False
    k = sha512_int(signature[:32], public, message) % L
    return encode(multiply(s, B)) == encode(add(r_point, multiply(k, a_point)))


def verify_lenient(public: bytes, message: bytes, signature: bytes) -> bool:
    """Cofactored, no ``S < L`` check, no small-order check, lenient decoding."""
    a_point, r_point = decode_lenient(public), decode_lenient(signature[:32])
    if a_point is None or r_point is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    k = sha512_int(signature[:32], public, message) % L
    left = multiply(8, multiply(s, B))
    return equal(left, multiply(8, add(r_point, multiply(k, a_point))))


# --------------------------------------------------------------------------- the cases

LABEL: Final = "ENTRY_SIGNATURE"
SEED: Final = hashlib.sha512(b"microsync ed25519 edge cases").digest()[:32]


def _full(message: bytes, label: str = LABEL) -> bytes:
    return frame(ALL_LABELS[label]) + message


def _case(
    name: str, message: bytes, public: bytes, signature: bytes, valid: bool, label: str = LABEL
) -> dict[str, object]:
    return {
        "name": name,
        "label": label,
        "message": message.hex(),
        "public": public.hex(),
        "signature": signature.hex(),
        "valid": valid,
    }


def _ground(public: bytes, r_bytes: bytes, order: int, stem: bytes) -> bytes:
    """The first ``stem || counter`` message whose ``k`` is a multiple of ``order``."""
    counter = 0
    while True:
        message = stem + counter.to_bytes(4, "big")
        if sha512_int(r_bytes, public, _full(message)) % L % order == 0:
            return message
        counter += 1


def _order(encoded: bytes) -> int:
    point = decode_lenient(encoded)
    assert point is not None
    return next(n for n in (1, 2, 4, 8) if equal(multiply(n, point), IDENTITY))


def honest_cases() -> list[dict[str, object]]:
    cases = []
    for index, (label, message) in enumerate(
        [(LABEL, b"an entry header"), ("DEVICE_CERTIFICATE", b""), (LABEL, bytes(range(256)))]
    ):
        seed = hashlib.sha512(SEED + bytes([index])).digest()[:32]
        signature = sign(seed, _full(message, label))
        case = _case(f"valid {index}", message, public_key(seed), signature, True, label)
        cases.append({**case, "seed": seed.hex()})
    return cases


def s_plus_l_cases() -> list[dict[str, object]]:
    message = b"an entry header"
    signature = sign(SEED, _full(message))
    s = int.from_bytes(signature[32:], "little")
    cases = []
    for multiple in (1, 2, 8):  # S + 8L still fits in 32 bytes (under 2**256)
        malleated = signature[:32] + (s + multiple * L).to_bytes(32, "little")
        cases.append(_case(f"S+{multiple}L", message, public_key(SEED), malleated, False))
    return cases


def small_public_key_cases() -> list[dict[str, object]]:
    cases = []
    r = sha512_int(b"nonce", SEED) % L
    r_bytes = encode(multiply(r, B))
    for encoded in (*SMALL_ORDER_CANONICAL, *SMALL_ORDER_NONCANONICAL):
        public = bytes.fromhex(encoded)
        message = _ground(public, r_bytes, _order(public), b"forged without a key ")
        signature = r_bytes + r.to_bytes(32, "little")
        cases.append(
            _case(f"small-order A {encoded[:8]}..{encoded[-2:]}", message, public, signature, False)
        )
    return cases


def small_r_cases() -> list[dict[str, object]]:
    scalar, _ = secret_scalar(SEED)
    public = public_key(SEED)
    message = b"an entry header"
    cases = []
    for encoded in (*SMALL_ORDER_CANONICAL, *SMALL_ORDER_NONCANONICAL):
        r_bytes = bytes.fromhex(encoded)
        k = sha512_int(r_bytes, public, _full(message)) % L
        signature = r_bytes + (k * scalar % L).to_bytes(32, "little")
        cases.append(
            _case(f"small-order R {encoded[:8]}..{encoded[-2:]}", message, public, signature, False)
        )
    return cases


def both_small_cases() -> list[dict[str, object]]:
    public = bytes.fromhex(SMALL_ORDER_CANONICAL[4])
    r_bytes = bytes.fromhex(SMALL_ORDER_CANONICAL[6])
    signature = r_bytes + bytes(32)
    return [_case("small-order A and R, S = 0", b"anything at all", public, signature, False)]


def vectors() -> dict[str, object]:
    computed = [point.hex() for point in small_order_points()]
    assert computed == sorted(SMALL_ORDER_CANONICAL), "the small-order list is wrong"
    cases = [
        *honest_cases(),
        *s_plus_l_cases(),
        *small_public_key_cases(),
        *small_r_cases(),
        *both_small_cases(),
    ]
    for case in cases:
        public, signature = (
            bytes.fromhex(str(case["public"])),
            bytes.fromhex(str(case["signature"])),
        )
        full = _full(bytes.fromhex(str(case["message"])), str(case["label"]))
        assert verify_lenient(public, full, signature), case["name"]
        assert verify_strict(public, full, signature) is case["valid"], case["name"]
    return {
        "description": (
            "Ed25519 edge cases for VerifyKey.verify: the signed message is "
            "frame(label) || message. valid=false cases pass a lenient (cofactored, no S < L "
            "or small-order check) verifier; see tests/vectors/make_ed25519_vectors.py"
        ),
        "small_order_points": list(SMALL_ORDER_CANONICAL),
        "cases": cases,
    }


def main() -> None:
    print(json.dumps(vectors(), indent=1))


if __name__ == "__main__":
    main()
