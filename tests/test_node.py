"""The node hash equals Go tapes' bit for bit (vectors/tapes-merkle-v1.json, from Go itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tapes_e2e import _gojson
from tapes_e2e.errors import InvalidNodeError
from tapes_e2e.node import (
    Bucket,
    ContentBlock,
    Node,
    Usage,
    bucket_from_json,
    compute_hash,
    go_time,
    go_view,
    hash_input,
    node_from_json,
)

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "tapes-merkle-v1.json").read_text("utf-8")
)
CASES = {case["name"]: case for case in VECTORS["cases"]}


def test_all_38_vector_cases_are_present() -> None:
    assert len(CASES) == 38


def _bucket(case: dict[str, Any]) -> Bucket:
    # Decode the vector's bucket from JSON text, as Go's provider parsers decode request bodies.
    return bucket_from_json(_gojson.decode(json.dumps(case["node"]["bucket"])))


@pytest.mark.parametrize("name", sorted(CASES))
def test_canonical_bytes_and_hash_match_go(name: str) -> None:
    case = CASES[name]
    bucket = _bucket(case)
    parent = case["node"]["parent_hash"]
    assert hash_input(bucket, parent).decode("utf-8") == case["canonical"]
    assert compute_hash(bucket, parent) == case["hash"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_stored_json_round_trips_to_gos_bytes(name: str) -> None:
    case = CASES[name]
    stored = go_view(_bucket(case), "stored")
    assert _gojson.stored_bytes(stored).decode("utf-8") == case["stored_bucket_json"]
    assert _gojson.stored_bytes(stored["content"]).decode("utf-8") == case["stored_content_json"]
    # Reading Go's stored bytes back gives the same hash and the same bytes again.
    reread = bucket_from_json(_gojson.decode(case["stored_bucket_json"].encode("utf-8")))
    assert compute_hash(reread, case["node"]["parent_hash"]) == case["hash"]
    assert _gojson.stored_bytes(go_view(reread, "stored")) == case["stored_bucket_json"].encode()


def test_equivalences_documented_by_go() -> None:
    pairs = [
        ("content_nil", "content_empty_list"),
        ("tool_input_null", "tool_input_empty_map"),
        ("tool_result_is_error_unset", "tool_result_is_error_false"),
        ("parent_empty_string", "user_text_simple"),
        ("agent_name_empty", "user_text_simple"),
    ]
    for left, right in pairs:
        assert CASES[left]["hash"] == CASES[right]["hash"]
        assert (
            compute_hash(_bucket(CASES[left]), CASES[left]["node"]["parent_hash"] or None)
            == (CASES[right]["hash"])
        )
    assert CASES["unicode_nfc_precomposed"]["hash"] != CASES["unicode_nfd_decomposed"]["hash"]


def test_chain_cases_link_by_real_parent_hashes() -> None:
    names = ["chain_root", "chain_child_1", "chain_child_2", "chain_child_3"]
    previous: Node | None = None
    for name in names:
        node = Node.new(_bucket(CASES[name]), previous)
        assert node.hash == CASES[name]["hash"]
        previous = node


# --- properties -------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = st.none() | st.booleans()
json_scalars |= st.floats(allow_nan=False, allow_infinity=False)
json_scalars |= st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
blocks = st.builds(
    ContentBlock,
    type=st.sampled_from(["text", "tool_use", "tool_result", "image", ""]),
    text=st.text(max_size=30),
    tool_name=st.text(max_size=5),
    tool_input=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    tool_output=st.text(max_size=10),
    is_error=st.booleans(),
)
buckets = st.builds(
    Bucket,
    type=st.just("message"),
    role=st.sampled_from(["user", "assistant", "system", "tool"]),
    content=st.none() | st.lists(blocks, max_size=3).map(tuple),
    model=st.text(max_size=10),
    provider=st.text(max_size=10),
    agent_name=st.text(max_size=5),
)
parents = st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(buckets, parents)
def test_hash_is_stable_across_a_json_round_trip(bucket: Bucket, parent: str | None) -> None:
    node = Node.new(bucket, parent)
    text = json.dumps(node.to_json())
    again = node_from_json(_gojson.decode(text))
    assert again.hash == node.hash
    assert again.verify()
    # and through Go's stored form
    stored = _gojson.stored_bytes(go_view(bucket, "stored"))
    assert compute_hash(bucket_from_json(_gojson.decode(stored)), parent) == node.hash


@given(buckets, parents, st.text(min_size=1, max_size=5))
def test_any_change_to_content_changes_the_hash(
    bucket: Bucket, parent: str | None, extra: str
) -> None:
    original = compute_hash(bucket, parent)
    changed_text = Bucket(
        type=bucket.type,
        role=bucket.role,
        content=(*(bucket.content or ()), ContentBlock(type="text", text=extra)),
        model=bucket.model,
        provider=bucket.provider,
        agent_name=bucket.agent_name,
    )
    assert compute_hash(changed_text, parent) != original
    changed_model = Bucket(
        type=bucket.type,
        role=bucket.role,
        content=bucket.content,
        model=bucket.model + extra,
        provider=bucket.provider,
        agent_name=bucket.agent_name,
    )
    assert compute_hash(changed_model, parent) != original
    other_parent = "f" * 64 if parent != "f" * 64 else "e" * 64
    assert compute_hash(bucket, other_parent) != original


def test_usage_stop_reason_and_project_are_not_hashed() -> None:
    bucket = Bucket(
        type="message", role="assistant", content=(ContentBlock(type="text", text="a"),)
    )
    plain = Node.new(bucket)
    rich = Node.new(bucket, usage=Usage(total_tokens=9), stop_reason="end_turn", project="p")
    assert plain.hash == rich.hash


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ContentBlock(type=3), "content block type must be a string"),  # type: ignore[arg-type]
        (lambda: ContentBlock(text="a\ud800"), "lone surrogate"),
        (lambda: ContentBlock(tool_input={"x": float("nan")}), "cannot be represented"),
        (lambda: ContentBlock(tool_input={1: "x"}), "key"),  # type: ignore[dict-item]
        (lambda: ContentBlock(is_error="yes"), "is_error"),  # type: ignore[arg-type]
        (lambda: Usage(prompt_tokens=-1), "prompt_tokens"),
        (lambda: Usage(total_tokens=True), "total_tokens"),
        (lambda: Bucket(content=("x",)), "ContentBlock"),  # type: ignore[arg-type]
    ],
)
def test_malformed_fields_are_refused(build: Any, message: str) -> None:
    with pytest.raises(InvalidNodeError, match=message):
        build()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "a node must be a JSON object"),
        ('{"hash": "abc"}', "hash must be 64"),
        ('{"hash": "' + "0" * 64 + '", "bucket": []}', "bucket must be a JSON object"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {"content": {}}}', "must be an array"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {"role": 1}}', "bucket.role must be a string"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {}, "parent_hash": 5}', "parent_hash"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {}, "usage": {"total_tokens": 1.5}}', "integer"),
        ('{"hash": "' + "0" * 64 + '", "bucket": {}}', "does not match"),
    ],
)
def test_malformed_node_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidNodeError, match=message):
        node_from_json(_gojson.decode(text))


def test_go_time_layout() -> None:
    assert go_time(1_764_115_076_726_195_728).endswith(":56.726195728" + go_time(0)[-6:])
    assert "." not in go_time(1_764_115_076_000_000_000)[:-6]
    assert go_time(1_764_115_076_100_000_000)[19:21] == ".1"


@given(buckets, parents)
def test_fast_and_generic_decoding_agree(bucket: Bucket, parent: str | None) -> None:
    from tapes_e2e.node import bucket_from_bytes, node_from_bytes

    stored = _gojson.stored_bytes(go_view(bucket, "stored"))
    fast = bucket_from_bytes(stored)
    generic = bucket_from_json(_gojson.decode(stored))
    assert fast == generic
    assert compute_hash(fast, parent) == compute_hash(bucket, parent)
    node = Node.new(bucket, parent, usage=Usage(total_tokens=3), project="p")
    line = json.dumps(node.to_json()).encode("utf-8")
    assert node_from_bytes(line) == node_from_json(_gojson.decode(line))


def test_generic_path_takes_what_the_fast_path_refuses() -> None:
    from tapes_e2e.node import bucket_from_bytes, node_from_bytes

    # a lone surrogate escape and a -0 both need Go's repairs
    lone = bucket_from_bytes(b'{"content":[{"type":"text","text":"a\\ud800b"}]}')
    assert lone.content is not None
    assert lone.content[0].text == "a\ufffdb"
    zero = bucket_from_bytes(b'{"content":[{"type":"t","tool_input":{"z":-0}}]}')
    assert zero.content is not None
    assert str(zero.content[0].tool_input["z"]) == "-0.0"  # type: ignore[index]
    with pytest.raises(InvalidNodeError, match=r"bucket\.role must be a string"):
        bucket_from_bytes(b'{"role": 5}')
    line = b'{"hash":"' + b"0" * 64 + b'","bucket":{},"usage":{"total_tokens":-1}}'
    with pytest.raises(InvalidNodeError, match="total_tokens must be an integer"):
        node_from_bytes(line)
