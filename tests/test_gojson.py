"""Go's JSON rules: decoding repairs, the canonical fast path, the stored (v1) form."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from tapes_e2e import _gojson

# Any JSON value Go could hold after decoding: numbers are float64, strings valid UTF-8.
go_strings = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
go_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**70), max_value=2**70).map(float)
    | go_strings,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(go_strings, inner, max_size=4),
    max_leaves=20,
)


@given(go_values)
def test_fast_canonical_path_equals_the_rfc8785_package(value: Any) -> None:
    assert _gojson.canonical(value) == rfc8785.dumps(value)


@given(go_values)
def test_decode_of_stored_bytes_gives_the_value_back(value: object) -> None:
    again = _gojson.to_go_value(_gojson.decode(_gojson.stored_bytes(value)))
    assert _gojson.canonical(again) == _gojson.canonical(value)


def test_decode_replaces_lone_surrogates_like_go() -> None:
    assert _gojson.decode(b'"a\\ud800b"') == "a\ufffdb"
    assert _gojson.decode(b'"\\ud83d\\ude00"') == "\U0001f600"  # a real pair stays a pair
    assert _gojson.decode(b'"\xff"') == "\ufffd"


def test_decode_keeps_negative_zero_as_go_does() -> None:
    value = _gojson.decode(b'{"z": -0}')
    assert math.copysign(1.0, value["z"]) < 0
    assert _gojson.stored_bytes(_gojson.to_go_value(value)) == b'{"z":-0}'


@given(go_values, st.sampled_from([b"-0", b" -0", b"\n\t-0", b"-0.0", b"-0e0", b"-05"]))
def test_the_negative_zero_screen_never_misses_one(value: object, zero: bytes) -> None:
    """Whatever JSON holds the literal -0 as a value (after any whitespace) is screened to the
    slow path, which keeps its sign; a date such as 2026-01-05 inside a string is not."""
    text = b'{"v": ' + _gojson.stored_bytes(value) + b', "at": "2026-01-05", "z": [' + zero + b"]}"
    literal = zero.strip() == b"-0"
    assert _gojson.may_hold_negative_zero(text) or not literal
    assert not _gojson.may_hold_negative_zero(b'{"at": "2026-01-05T00:00:00Z", "n": 1}')
    try:
        decoded = _gojson.decode(text)
    except _gojson.GoJSONError:
        assert zero == b"-05"  # not JSON at all
        return
    assert math.copysign(1.0, decoded["z"][0]) < 0


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"1e400", b'{"a": ', b""])
def test_decode_refuses_what_go_refuses(text: bytes) -> None:
    with pytest.raises(_gojson.GoJSONError):
        _gojson.decode(text)


def test_stored_form_escapes_html_and_line_separators() -> None:
    assert _gojson.stored_bytes("<a>&\u2028\u2029") == b'"\\u003ca\\u003e\\u0026\\u2028\\u2029"'


def test_to_go_value_refuses_what_go_cannot_hold() -> None:
    for bad in (float("inf"), {"k": object()}, "\udc00"):
        with pytest.raises(_gojson.GoJSONError):
            _gojson.to_go_value(bad)
