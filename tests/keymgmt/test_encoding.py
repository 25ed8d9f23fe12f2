"""keymgmt's canonical JSON: the msgspec fast path gives exactly the rfc8785 package's bytes."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from keymgmt import canonical_json

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@given(values)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        return  # outside JSON's integer domain: refused either way
    assert canonical_json(value) == expected


def test_key_order_is_utf16_not_code_points() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).index(b"\xf0\x9f\x98\x80") < canonical_json(value).index(
        b"\xee\x80\x80"
    )
