"""The primitives layer refuses malformed input without detail."""

from __future__ import annotations

import pytest
import zstandard

from keymgmt import _primitives as prim


@pytest.mark.parametrize(
    "call",
    [
        lambda: prim.seal_to(
            prim.x25519_public_from_private(bytes(range(32))), b"m", b"", rng=lambda n: b"x"
        ),
        lambda: prim.aead_encrypt(b"k", bytes(24), b"m", b""),
        lambda: prim.aead_decrypt(b"k", bytes(24), b"m", b""),
        lambda: prim.x25519_public_from_private(b"short"),
        lambda: prim.check_x25519_public(b"short"),
        lambda: prim.ed25519_public_from_seed(b"short"),
        lambda: prim.ed25519_sign(b"short", b"m"),
        lambda: prim.decompress(zstandard.ZstdCompressor().compress(b"a" * 1000), max_size=10),
        lambda: prim.decompress(b"not zstd", max_size=10),
        lambda: prim.open_sealed(bytes(32), b"short", b""),
    ],
)
def test_malformed_input_raises_primitive_error(call: object) -> None:
    with pytest.raises(prim.PrimitiveError):
        call()  # type: ignore[operator]


def test_decompress_refuses_frames_without_declared_size() -> None:
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    frame = cctx.compress(b"a" * 100)
    with pytest.raises(prim.PrimitiveError):
        prim.decompress(frame, max_size=1000)


def test_decompress_refuses_a_lying_content_size(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = prim.compress(b"a" * 100)

    class Params:
        content_size = 50

    monkeypatch.setattr("keymgmt._primitives.zstandard.get_frame_parameters", lambda data: Params())
    with pytest.raises(prim.PrimitiveError):
        prim.decompress(frame, max_size=1000)


def test_verify_refuses_wrong_lengths() -> None:
    assert not prim.ed25519_verify(b"short", b"m", bytes(64))
    assert not prim.ed25519_verify(bytes(32), b"m", b"short")


def test_seal_round_trip_and_context_binding() -> None:
    private = bytes(range(32))
    public = prim.x25519_public_from_private(private)
    sealed = prim.seal_to(public, b"secret", b"ctx")
    assert prim.open_sealed(private, sealed, b"ctx") == b"secret"
    with pytest.raises(prim.PrimitiveError):
        prim.open_sealed(private, sealed, b"other ctx")
    with pytest.raises(prim.PrimitiveError):
        prim.seal_to(bytes(32), b"secret", b"ctx")  # small-order recipient
