"""Identities and fingerprints."""

from __future__ import annotations

import pytest

from keymgmt import PublicIdentity, generate_identity
from keymgmt.identity import (
    FINGERPRINT_RE,
    Identity,
    compute_fingerprint,
    fingerprint_bytes,
    fingerprint_from_bytes,
)

from .conftest import DetRng


def test_fingerprint_shape_and_determinism() -> None:
    ident = generate_identity(rng=DetRng("id"))
    again = generate_identity(rng=DetRng("id"))
    assert ident.fingerprint == again.fingerprint
    assert FINGERPRINT_RE.fullmatch(ident.fingerprint)
    assert len(ident.fingerprint) == 39
    assert fingerprint_from_bytes(fingerprint_bytes(ident.fingerprint)) == ident.fingerprint
    assert generate_identity().fingerprint != ident.fingerprint


def test_fingerprint_covers_both_keys() -> None:
    a = generate_identity(rng=DetRng("a")).public
    b = generate_identity(rng=DetRng("b")).public
    assert compute_fingerprint(a.x25519, a.ed25519) != compute_fingerprint(b.x25519, a.ed25519)
    assert compute_fingerprint(a.x25519, a.ed25519) != compute_fingerprint(a.x25519, b.ed25519)


def test_public_identity_round_trip_and_validation() -> None:
    pub = generate_identity(rng=DetRng("p")).public
    assert PublicIdentity.from_dict(pub.to_dict()) == pub
    other = generate_identity(rng=DetRng("q")).public
    with pytest.raises(ValueError, match="does not match"):
        PublicIdentity.from_dict({**pub.to_dict(), "fingerprint": other.fingerprint})
    with pytest.raises(ValueError, match="needs hex"):
        PublicIdentity.from_dict({"x25519": pub.x25519.hex()})
    with pytest.raises(TypeError):
        PublicIdentity.from_dict("nope")


@pytest.mark.parametrize(
    ("x", "ed"),
    [
        (bytes(32), None),  # small-order X25519 point
        (bytes([1]) + bytes(31), None),  # small-order
        (b"short", None),
        (None, bytes(32)),  # not a valid Ed25519 point of large order
        (None, bytes([1]) + bytes(31)),  # identity point: small order
        (None, b"\xff" * 32),
    ],
)
def test_small_order_and_malformed_keys_are_refused(x: bytes | None, ed: bytes | None) -> None:
    good = generate_identity(rng=DetRng("g")).public
    with pytest.raises(ValueError, match="invalid public key"):
        PublicIdentity(x if x is not None else good.x25519, ed if ed is not None else good.ed25519)


def test_private_identity_never_prints_keys() -> None:
    ident = generate_identity(rng=DetRng("secret"))
    secret = ident.export_secret()
    for part in (secret, secret[:32], secret[32:]):  # the whole secret, or either key alone
        assert part.hex() not in repr(ident)
        assert part.hex() not in str(ident)
    assert str(secret) not in repr(ident)
    assert Identity.from_secret(secret).fingerprint == ident.fingerprint
    with pytest.raises(ValueError, match="64 bytes"):
        Identity.from_secret(b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        Identity(b"x", b"y")


def test_signatures_verify_only_for_the_message() -> None:
    ident = generate_identity(rng=DetRng("s"))
    sig = ident.sign(b"label|message")
    assert ident.public.verify(b"label|message", sig)
    assert not ident.public.verify(b"label|messagf", sig)
    assert not ident.public.verify(b"label|message", sig[:-1])


def test_fingerprint_bytes_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a fingerprint"):
        fingerprint_bytes("ABCD")
    with pytest.raises(ValueError, match="not a fingerprint"):
        fingerprint_from_bytes(b"short")
