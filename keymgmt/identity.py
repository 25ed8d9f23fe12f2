"""Identities: an X25519 key pair (encryption) and an Ed25519 key pair (signing) per user.

The public half is a :class:`PublicIdentity`; its :attr:`~PublicIdentity.fingerprint` is the
short string two people read to each other to be sure they hold the same keys: 160 bits of
SHA-256 over both public keys, in RFC 4648 base32 as eight groups of four, e.g.
``K7QF-3ZCA-M2XP-...``. Chain statements, envelopes and invites name members by fingerprint.

The private half (:class:`Identity`) never prints its keys: ``repr`` shows the fingerprint only.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Final

from keymgmt import _primitives as prim
from keymgmt import labels

__all__ = [
    "FINGERPRINT_RE",
    "Identity",
    "PublicIdentity",
    "compute_fingerprint",
    "generate_identity",
]

FINGERPRINT_BYTES: Final = 20
FINGERPRINT_RE: Final = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){7}")
SECRET_BYTES: Final = 64


def compute_fingerprint(x25519: bytes, ed25519: bytes) -> str:
    """The human-comparable fingerprint of a pair of public keys."""
    digest = prim.sha256(labels.FINGERPRINT + ed25519 + x25519)[:FINGERPRINT_BYTES]
    text = base64.b32encode(digest).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def fingerprint_bytes(fingerprint: str) -> bytes:
    """The 20 raw bytes behind a fingerprint string (used in invite codes)."""
    if not FINGERPRINT_RE.fullmatch(fingerprint):
        raise ValueError("not a fingerprint")
    return base64.b32decode(fingerprint.replace("-", ""))


def fingerprint_from_bytes(raw: bytes) -> str:
    if len(raw) != FINGERPRINT_BYTES:
        raise ValueError("not a fingerprint")
    text = base64.b32encode(raw).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """The public keys of a user and their fingerprint.

    Constructing one validates both keys (length, on the curve, not of small order), so a
    ``PublicIdentity`` in hand is always usable for sealing and verifying.
    """

    x25519: bytes
    ed25519: bytes
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        try:
            prim.check_x25519_public(self.x25519)
            prim.check_ed25519_public(self.ed25519)
        except prim.PrimitiveError:
            raise ValueError("invalid public key (wrong length or small-order point)") from None
        object.__setattr__(self, "fingerprint", compute_fingerprint(self.x25519, self.ed25519))

    def to_dict(self) -> dict[str, str]:
        """JSON-able form: keys in lowercase hex, plus the fingerprint for readers."""
        return {
            "x25519": self.x25519.hex(),
            "ed25519": self.ed25519.hex(),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: object) -> PublicIdentity:
        """Parse :meth:`to_dict` output; a ``fingerprint`` present must match the keys."""
        if not isinstance(data, dict):
            raise TypeError("public identity must be an object")
        try:
            ident = cls(bytes.fromhex(data["x25519"]), bytes.fromhex(data["ed25519"]))
        except (KeyError, TypeError) as exc:
            raise ValueError("public identity needs hex 'x25519' and 'ed25519'") from exc
        claimed = data.get("fingerprint")
        if claimed is not None and claimed != ident.fingerprint:
            raise ValueError("public identity fingerprint does not match its keys")
        return ident

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this identity's Ed25519 signature over ``message``."""
        return prim.ed25519_verify(self.ed25519, message, signature)


class Identity:
    """A user's private keys. Never printed, never compared by value."""

    __slots__ = ("_ed25519_seed", "_x25519_private", "public")

    def __init__(self, x25519_private: bytes, ed25519_seed: bytes) -> None:
        if len(x25519_private) != 32 or len(ed25519_seed) != 32:
            raise ValueError("private keys must be 32 bytes each")
        self._x25519_private = x25519_private
        self._ed25519_seed = ed25519_seed
        self.public = PublicIdentity(
            prim.x25519_public_from_private(x25519_private),
            prim.ed25519_public_from_seed(ed25519_seed),
        )

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self.public.fingerprint!r})"

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature; callers always prefix ``message`` with a label."""
        return prim.ed25519_sign(self._ed25519_seed, message)

    def open_sealed(self, sealed: bytes, ad: bytes) -> bytes:
        """Open a value sealed to this identity's X25519 key (raises ``PrimitiveError``)."""
        return prim.open_sealed(self._x25519_private, sealed, ad)

    def export_secret(self) -> bytes:
        """The 64 secret bytes (X25519 private || Ed25519 seed), for the key file only."""
        return self._x25519_private + self._ed25519_seed

    @classmethod
    def from_secret(cls, secret: bytes) -> Identity:
        if len(secret) != SECRET_BYTES:
            raise ValueError("identity secret must be 64 bytes")
        return cls(secret[:32], secret[32:])


def generate_identity(*, rng: prim.Rng = prim.random_bytes) -> Identity:
    """A fresh identity; pass ``rng`` only to make test vectors reproducible."""
    return Identity(rng(32), rng(32))
