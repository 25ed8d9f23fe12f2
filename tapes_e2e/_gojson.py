"""JSON as Go tapes reads and writes it.

Go tapes touches a node's JSON in three places, each with its own rules (see vectors/README.md):

- **decoding** request bodies and stored columns with ``encoding/json``: every number in
  ``tool_input`` becomes a float64, a lone surrogate escape becomes U+FFFD, ``NaN``/``Infinity``
  and out-of-range numbers are errors;
- **hashing**: ``encoding/json/v2`` with ``omitempty``, canonicalized by RFC 8785 (we use the
  ``rfc8785`` package for that, never our own canonicalizer);
- **storing** the ``nodes.bucket``/``nodes.content`` columns with ``encoding/json`` v1: keys sorted,
  HTML-escaped, ``-0`` kept.

This module holds the decode and the v1 stored-form writer; which fields each form omits is decided
in one place, ``tapes_e2e.node.go_view``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec
import rfc8785

import keymgmt

__all__ = [
    "GoJSONError",
    "canonical",
    "decode",
    "freeze",
    "has_lone_surrogate",
    "stored_bytes",
    "thaw",
    "to_go_value",
]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# encoding/json v1 escapes these inside strings (HTML safety, JavaScript line terminators). They
# can only occur inside JSON strings, so replacing them in the encoded text is exact.
_V1_ESCAPES_BYTES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


class GoJSONError(ValueError):
    """A JSON text that Go's ``encoding/json`` would refuse, or a value Go could not hold."""


def _reject_constant(name: str) -> float:
    raise GoJSONError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise GoJSONError(f"number {text} is out of range for a float64")
    return value


def _parse_int(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)


def may_hold_negative_zero(raw: bytes) -> bool:
    """Whether JSON ``raw`` may hold the integer literal ``-0`` as a value, which msgspec reads as
    0 (losing the sign Go's float64 keeps). A value follows ``[``, ``:``, ``,`` or the start
    (after any whitespace); the same characters inside a string (``"a:-0"``) only cost the slow
    path, never a wrong answer. ``-0.0`` and ``-0e0`` are floats, which msgspec reads with their
    sign; ``-0`` in a date (``2026-01-05``) follows a digit. Each ``-0`` costs a look on either
    side, so a 2 KB body is screened in about a microsecond."""
    at = raw.find(b"-0")
    while at != -1:
        after = raw[at + 2 : at + 3]
        if after not in (b".", b"e", b"E") and not after.isdigit():
            before = at - 1
            while before >= 0 and raw[before] in b" \t\r\n":
                before -= 1
            if before < 0 or raw[before] in b"[:,":
                return True
        at = raw.find(b"-0", at + 2)
    return False


def decode(data: str | bytes) -> Any:
    """Decode JSON the way Go's ``encoding/json`` does, into plain Python values.

    Lone surrogate escapes become U+FFFD and invalid UTF-8 bytes are replaced, as Go does;
    ``NaN``/``Infinity`` and numbers beyond float64 are refused with ``GoJSONError``. Integers stay
    ``int`` here; ``to_go_value`` turns the numbers of untyped values into Go's float64.
    """
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    # The fast path: msgspec refuses exactly the inputs that need Go's lenient repairs or a
    # precise error, and those take the slow path below. It reads the literal -0 as the integer
    # 0, losing the sign Go's float64 keeps, so text holding "-0" takes the slow path too.
    if not may_hold_negative_zero(raw):
        try:
            return msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    try:
        value = json.loads(
            data, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise GoJSONError(f"malformed JSON: {exc.msg} (column {exc.colno})") from exc
    return _replace_surrogates(value)


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point, which UTF-8 (and so Go) cannot encode."""
    return _LONE_SURROGATE.search(text) is not None


def to_go_value(value: Any) -> Any:
    """Normalize a Python JSON value to what Go holds after decoding it: numbers as floats.

    Raises ``GoJSONError`` for values Go's decoder can never produce (NaN, infinities, strings with
    lone surrogates, non-string keys, other types).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            raise GoJSONError(f"{value!r} cannot be represented in JSON")
        return number
    if isinstance(value, str):
        if has_lone_surrogate(value):
            raise GoJSONError("string holds a lone surrogate, which is not valid UTF-8")
        return value
    if isinstance(value, list | tuple):
        return [to_go_value(v) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise GoJSONError(f"object key {key!r} is not a string")
            out[to_go_value(key)] = to_go_value(item)
        return out
    raise GoJSONError(f"{type(value).__name__} is not a JSON value")


def freeze(value: Any) -> Any:
    """Make a decoded JSON value immutable: lists become tuples, objects read-only mappings."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    return value


def thaw(value: Any) -> Any:
    """The inverse of ``freeze``: plain lists and dicts, ready for an encoder."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    return value


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON of a plain JSON value (what Go's ``jsontext.Canonicalize`` emits).

    One implementation serves the node hash and keymgmt: ``keymgmt.canonical_json``.
    """
    return keymgmt.canonical_json(value)


def _v1_numbers(value: Any) -> Any:
    """Replace floats by their Go v1 text: ECMAScript shortest form, except that -0 stays -0."""
    if isinstance(value, float):
        if value == 0 and math.copysign(1.0, value) < 0:
            return msgspec.Raw(b"-0")
        return msgspec.Raw(rfc8785.dumps(value))
    if isinstance(value, list):
        return [_v1_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _v1_numbers(v) for k, v in value.items()}
    return value


def stored_bytes(value: Any, *, floats: bool = True) -> bytes:
    """Encode a plain JSON value exactly as Go's ``encoding/json`` v1 writes it to SQLite.

    ``msgspec.Raw`` values (already encoded this way) are inserted as they are. ``floats=False``
    promises that ``value`` holds no float, which skips the walk that rewrites them.
    """
    encoded = msgspec.json.encode(_v1_numbers(value) if floats else value, order="sorted")
    # A substring test per character is a fast scan in C; most texts need no escape at all.
    for raw, escaped in _V1_ESCAPES_BYTES:
        if raw in encoded:
            encoded = encoded.replace(raw, escaped)
    return encoded
