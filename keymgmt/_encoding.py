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
from typing import Annotated, Any, Final, TypeVar

import msgspec
import rfc8785

__all__ = [
    "HEX64_RE",
    "Clock",
    "Uint",
    "b64d",
    "b64e",
    "canonical_json",
    "lp",
    "now_seconds",
    "u64",
]

HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_SAFE_INTEGER: Final = 2**53
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")
_B64_VALUE: Final = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_UNUSED_BITS: Final = (0, 0, 0b1111, 0b11)  # by len % 4: bits of the last character left over

Clock = Callable[[], int]

Uint = Annotated[int, msgspec.Meta(ge=0, le=_SAFE_INTEGER - 1)]
"""An integer field of a signed body (a time, an epoch, a seqno): never negative, and exact in
RFC 8785 JSON, whose numbers are IEEE doubles. Each one is packed with :func:`u64` somewhere."""


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


class _NotPlainJSONError(Exception):
    """Raised inside ``_msgspec_ready`` when a value needs the reference canonicalizer."""


def _msgspec_ready(value: Any) -> Any:
    """``value`` with integral floats as ints, ready for msgspec's sorted encoder.

    Raises ``_NotPlainJSONError`` where msgspec's output could differ from RFC 8785: a
    non-integral or huge number, or an object key at or above U+E000 (UTF-16 and code point order
    disagree only there).
    """
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _SAFE_INTEGER:
            return int(value)
        raise _NotPlainJSONError
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _SAFE_INTEGER:
        raise _NotPlainJSONError
    if isinstance(value, list):
        return [_msgspec_ready(v) for v in value]
    if isinstance(value, dict):
        for key in value:
            if key and max(key) >= "\ue000":
                raise _NotPlainJSONError
        return {k: _msgspec_ready(v) for k, v in value.items()}
    return value


def _flat_plain(obj: dict[Any, Any]) -> bool:
    """True for an object of strings and safe integers whose keys sort alike in UTF-16 and in
    code points: msgspec encodes it exactly as RFC 8785 does, without ``_msgspec_ready``."""
    for key, item in obj.items():
        kind = type(item)
        if not (kind is str or (kind is int and -_SAFE_INTEGER < item < _SAFE_INTEGER)):
            return False
        if type(key) is not str or (key and max(key) >= "\ue000"):
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of a plain JSON value (what Go's ``jsontext.Canonicalize`` emits).

    The reference is the ``rfc8785`` package. Where msgspec's key-sorted compact output is provably
    the same text (string escaping is identical; numbers and key order are guarded by
    ``_msgspec_ready``) we use msgspec, which is several times faster; property tests
    (``tests/test_gojson.py``, ``tests/keymgmt/test_encoding.py``) hold the two to equality.
    """
    if type(value) is dict and _flat_plain(value):  # a metadata record: no copy needed
        return msgspec.json.encode(value, order="sorted")
    try:
        ready = _msgspec_ready(value)
    except _NotPlainJSONError:
        return bytes(rfc8785.dumps(value))
    return msgspec.json.encode(ready, order="sorted")


def u64(n: int) -> bytes:
    """``n`` as 8 big-endian bytes; ``ValueError`` (never ``struct.error``) if no u64 holds it."""
    if not 0 <= n < 2**64:
        raise ValueError(f"{n} is not an unsigned 64-bit integer")
    return struct.pack(">Q", n)


def lp(data: bytes) -> bytes:
    """A field prefixed with its 4-byte big-endian length, for unambiguous concatenation."""
    return struct.pack(">I", len(data)) + data


_T = TypeVar("_T")


def decode_canonical(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    """Decode a signed JSON body, refusing any text that is not exactly its own RFC 8785 form.

    A signature covers bytes, but every reader acts on the parsed value; two texts that parse
    alike (a duplicate key, where the last one wins; whitespace; another key order or escape)
    would let one signature stand for bodies that different parsers read differently. So the
    body must equal the canonical JSON of its own parse. Raises ``ValueError`` (or msgspec's
    ``DecodeError``) otherwise; callers fold either into their format error.
    """
    value = decoder.decode(body)
    if canonical_json(msgspec.json.decode(body)) != body:
        raise ValueError("the signed body is not canonical JSON (RFC 8785)")
    return value
