"""The only module that touches nacl, cryptography, argon2 and zstandard.

Everything else in keymgmt calls the named operations below. Each failure of a primitive raises
:class:`PrimitiveError` with no detail; the caller turns it into its own opaque error.

Constructions (none is a new primitive, each is a composition of library calls):

* AEAD: XChaCha20-Poly1305 (IETF), libsodium via PyNaCl bindings.
* Sealing to an X25519 key (``seal_to``): an ephemeral X25519 key pair, the shared secret
  through HKDF-SHA256 (salt = ephemeral public || recipient public, info = a label), then
  XChaCha20-Poly1305 with associated data. It is libsodium's sealed box with two changes:
  associated data binds the context (team, epoch, recipient), and the ephemeral key and nonce
  come from an injectable ``rng`` so test vectors are reproducible. Small-order recipient keys
  are refused (the shared secret would be all zero).
* Signatures: Ed25519 (libsodium; non-canonical signatures and small-order keys are refused).
* Key derivation: HKDF-SHA256 (cryptography); passphrases: Argon2id (argon2-cffi).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from typing import Final

import nacl.bindings as _sodium
import nacl.exceptions
import nacl.utils
import zstandard
from argon2 import low_level as _argon2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keymgmt import labels

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_NONCE_BYTES",
    "AEAD_TAG_BYTES",
    "SEAL_OVERHEAD",
    "PrimitiveError",
    "Rng",
    "aead_decrypt",
    "aead_encrypt",
    "argon2id",
    "check_ed25519_public",
    "check_x25519_public",
    "compress",
    "constant_time_equal",
    "decompress",
    "ed25519_public_from_seed",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hmac_sha256",
    "open_sealed",
    "random_bytes",
    "seal_to",
    "sha256",
    "sha512",
    "x25519_public_from_private",
]

Rng = Callable[[int], bytes]
"""Source of randomness: ``rng(n)`` returns ``n`` bytes. Injected so vectors are reproducible."""

AEAD_KEY_BYTES: Final = 32
AEAD_NONCE_BYTES: Final = 24
AEAD_TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SEAL_OVERHEAD: Final = KEY_BYTES + AEAD_NONCE_BYTES + AEAD_TAG_BYTES

_NACL_ERRORS = (nacl.exceptions.CryptoError, ValueError, TypeError)
_ZSTD_LEVEL: Final = 1
# zstandard contexts must not be shared between threads (the sync worker runs in its own).
_local = threading.local()
# A clamped scalar used only to test whether a point has small order (the product is then 0).
_PROBE_SCALAR: Final = bytes([9]) + bytes(31)


class PrimitiveError(Exception):
    """A primitive refused its input; deliberately carries no detail."""


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return nacl.utils.random(n)


def _checked(rng: Rng, n: int) -> bytes:
    value = rng(n)
    if len(value) != n:
        raise PrimitiveError
    return value


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def argon2id(secret: bytes, salt: bytes, *, time_cost: int, memory_kib: int, lanes: int) -> bytes:
    """A 32-byte key from Argon2id (RFC 9106) with the given parameters."""
    return _argon2.hash_secret_raw(
        secret, salt, time_cost, memory_kib, lanes, KEY_BYTES, _argon2.Type.ID
    )


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XChaCha20-Poly1305 ciphertext with its 16-byte tag appended."""
    if len(key) != AEAD_KEY_BYTES or len(nonce) != AEAD_NONCE_BYTES:
        raise PrimitiveError
    return _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    if len(key) != AEAD_KEY_BYTES or len(nonce) != AEAD_NONCE_BYTES:
        raise PrimitiveError
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except _NACL_ERRORS:
        raise PrimitiveError from None


def x25519_public_from_private(private: bytes) -> bytes:
    if len(private) != KEY_BYTES:
        raise PrimitiveError
    return _sodium.crypto_scalarmult_base(private)


def _x25519(private: bytes, public: bytes) -> bytes:
    if len(private) != KEY_BYTES or len(public) != KEY_BYTES:
        raise PrimitiveError
    try:
        return _sodium.crypto_scalarmult(private, public)
    except _NACL_ERRORS:  # libsodium refuses an all-zero result: a small-order point
        raise PrimitiveError from None


def check_x25519_public(public: bytes) -> None:
    """Refuse wrong lengths and small-order points."""
    _x25519(_PROBE_SCALAR, public)


def check_ed25519_public(public: bytes) -> None:
    """Refuse wrong lengths, points not on the curve and small-order points."""
    if len(public) != KEY_BYTES:
        raise PrimitiveError
    try:
        _sodium.crypto_sign_ed25519_pk_to_curve25519(public)
    except _NACL_ERRORS:
        raise PrimitiveError from None


def ed25519_public_from_seed(seed: bytes) -> bytes:
    if len(seed) != KEY_BYTES:
        raise PrimitiveError
    public, _secret = _sodium.crypto_sign_seed_keypair(seed)
    return public


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    if len(seed) != KEY_BYTES:
        raise PrimitiveError
    _public, secret = _sodium.crypto_sign_seed_keypair(seed)
    return _sodium.crypto_sign(message, secret)[:SIGNATURE_BYTES]


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        _sodium.crypto_sign_open(signature + message, public)
    except _NACL_ERRORS:
        return False
    return True


def seal_to(recipient: bytes, plaintext: bytes, ad: bytes, *, rng: Rng = random_bytes) -> bytes:
    """Encrypt to an X25519 public key: ``ephemeral public || nonce || AEAD ciphertext``."""
    ephemeral = _checked(rng, KEY_BYTES)
    ephemeral_public = x25519_public_from_private(ephemeral)
    shared = _x25519(ephemeral, recipient)
    key = hkdf_sha256(shared, salt=ephemeral_public + recipient, info=labels.SEAL_HKDF)
    nonce = _checked(rng, AEAD_NONCE_BYTES)
    return ephemeral_public + nonce + aead_encrypt(key, nonce, plaintext, ad)


def open_sealed(private: bytes, sealed: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`seal_to`; any failure raises :class:`PrimitiveError`."""
    if len(sealed) < SEAL_OVERHEAD:
        raise PrimitiveError
    ephemeral_public = sealed[:KEY_BYTES]
    nonce = sealed[KEY_BYTES : KEY_BYTES + AEAD_NONCE_BYTES]
    shared = _x25519(private, ephemeral_public)
    recipient = x25519_public_from_private(private)
    key = hkdf_sha256(shared, salt=ephemeral_public + recipient, info=labels.SEAL_HKDF)
    return aead_decrypt(key, nonce, sealed[KEY_BYTES + AEAD_NONCE_BYTES :], ad)


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None
    pair = getattr(_local, "zstd", None)
    if pair is None:
        pair = (
            zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True),
            zstandard.ZstdDecompressor(),
        )
        _local.zstd = pair
    return pair


def compress(data: bytes) -> bytes:
    """zstandard level 1 (small nodes gain little from higher levels); size in the header."""
    return _zstd()[0].compress(data)


def decompress(data: bytes, *, max_size: int) -> bytes:
    """Inverse of :func:`compress`; refuses output larger than ``max_size`` (zip bombs)."""
    try:
        params = zstandard.get_frame_parameters(data)
        if params.content_size > max_size:
            raise PrimitiveError
        out = _zstd()[1].decompress(data, max_output_size=max_size)
    except zstandard.ZstdError:
        raise PrimitiveError from None
    if len(out) != params.content_size:
        raise PrimitiveError
    return out
