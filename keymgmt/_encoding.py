"""Small shared helpers: base64url, hex checks, canonical JSON, length-prefixed fields, clocks.

Wire conventions (also in docs/crypto.md): binary values are unpadded base64url
(RFC 4648 §5) except hashes, node IDs and public keys, which are lowercase hex.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import rfc8785

__all__ = [
    "HEX64_RE",
    "Clock",
    "b64d",
    "b64e",
    "canonical_json",
    "lp",
    "now_seconds",
    "u64",
]

HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")
_B64_VALUE: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_UNUSED_BITS: Final = (0, 0, 0b1111, 0b11)  # by len % 4: bits of the last character left over

Clock = Callable[[], int]


def now_seconds() -> int:
    """Wall-clock time in whole Unix seconds (the default for every ``now=``)."""
    return int(time.time())


def b64e(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: object) -> bytes:
    """Strict inverse of :func:`b64e`; raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or "+" in text or "/" in text or "=" in text:
        raise ValueError("not unpadded base64url")
    try:
        standard = text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4)
        raw = binascii.a2b_base64(standard, strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not unpadded base64url") from None
    unused = _UNUSED_BITS[len(text) % 4]
    if unused and _B64_VALUE[text[-1]] & unused:  # non-canonical trailing bits
        raise ValueError("not canonical base64url")
    return raw


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON, by the ``rfc8785`` package."""
    return rfc8785.dumps(value)


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def lp(data: bytes) -> bytes:
    """A field prefixed with its 4-byte big-endian length, for unambiguous concatenation."""
    return struct.pack(">I", len(data)) + data
