"""Clear metadata by policy: an allowlist (attack class 17)."""

from __future__ import annotations

import hashlib
import re

import pytest
import rfc8785

from keymgmt import PolicyError, check_clear_metadata, metadata_digest, project_metadata
from keymgmt.metadata import COARSE_FIELDS, FULL_FIELDS, MAX_INT, MAX_STR

ALL = {
    "model": "claude-sonnet-4",
    "provider": "anthropic",
    "agent_name": "claude-code",
    "role": "assistant",
    "stop_reason": "end_turn",
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "cache_creation_input_tokens": 1,
    "cache_read_input_tokens": 2,
    "total_duration_ns": 123456789,
    "prompt_duration_ns": 23456789,
    "project": "acme-secret",
    "created_at": "2026-11-26T00:34:14.123456+02:00",
    "content": "CANARY prompt text",
    "bucket": {"content": ["CANARY"]},
    "hash": "ab" * 32,
}


def test_none_keeps_nothing() -> None:
    assert project_metadata("none", ALL) == {}


def test_coarse_snapshot() -> None:
    assert project_metadata("coarse", ALL) == {
        "model": "claude-sonnet-4",
        "provider": "anthropic",
        "agent_name": "claude-code",
        "role": "assistant",
        "stop_reason": "end_turn",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
        "created_at": "2026-11-25T22:00:00Z",
    }


def test_full_snapshot() -> None:
    out = project_metadata("full", ALL)
    assert set(out) == FULL_FIELDS
    assert out["created_at"] == "2026-11-25T22:34:14.123456Z"
    assert out["project"] == "acme-secret"
    assert out["total_duration_ns"] == 123456789


@pytest.mark.parametrize("policy", ["none", "coarse", "full"])
def test_output_is_within_the_allowlist_and_never_carries_content(policy: str) -> None:
    out = project_metadata(policy, ALL)  # type: ignore[arg-type]
    assert set(out) <= FULL_FIELDS
    if policy == "coarse":
        assert set(out) <= COARSE_FIELDS
    assert "CANARY" not in repr(out)


def test_missing_and_none_fields_are_dropped() -> None:
    assert project_metadata("coarse", {"model": None, "created_at": "2026-01-01T10:59:59"}) == {
        "created_at": "2026-01-01T10:00:00Z"
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"model": 3},
        {"model": "x" * 600},
        {"prompt_tokens": -1},
        {"prompt_tokens": True},
        {"prompt_tokens": "10"},
        {"created_at": "yesterday"},
        {"created_at": 17},
    ],
)
def test_malformed_values_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        project_metadata("full", fields)


def test_unknown_policy() -> None:
    with pytest.raises(PolicyError):
        project_metadata("everything", ALL)  # type: ignore[arg-type]


def test_digest_is_sha256_of_rfc8785() -> None:
    md = project_metadata("full", ALL)
    assert metadata_digest(md) == hashlib.sha256(rfc8785.dumps(md)).digest()
    assert metadata_digest({"b": 1, "a": 2}) == metadata_digest({"a": 2, "b": 1})


def test_values_stay_inside_the_rfc8785_domain() -> None:
    with pytest.raises(PolicyError):
        project_metadata("coarse", {"total_tokens": 2**53})
    with pytest.raises(PolicyError):
        project_metadata("coarse", {"model": "\ud800"})
    assert project_metadata("coarse", {"total_tokens": 2**53 - 1}) == {"total_tokens": 2**53 - 1}


def test_the_project_is_sent_in_clear_only_under_full() -> None:
    fields = {"model": "m", "project": "acme-secret-repo", "total_duration_ns": 5}
    assert "project" not in project_metadata("none", fields)
    assert "project" not in project_metadata("coarse", fields)
    assert "total_duration_ns" not in project_metadata("coarse", fields)
    assert project_metadata("full", fields)["project"] == "acme-secret-repo"


@pytest.mark.parametrize("policy", ["none", "coarse", "full"])
def test_the_servers_check_takes_whatever_a_policy_produces(policy: str) -> None:
    check_clear_metadata(project_metadata(policy, ALL))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "names"),
    [
        ({"content": "CANARY"}, "'content'"),
        ({"x" * 500: 1}, "'" + "x" * 64 + "'"),
        ({"prompt_tokens": True}, "prompt_tokens"),
        ({"total_duration_ns": -1}, "total_duration_ns"),
        ({"completion_tokens": MAX_INT + 1}, "completion_tokens"),
        ({"total_tokens": 1.0}, "total_tokens"),
        ({"model": 7}, "model"),
        ({"project": "p" * (MAX_STR + 1)}, "project"),
        ({"provider": "a\x00b"}, "NUL"),
        ({"role": "\udc80"}, "role"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": 1}, "created_at"),
    ],
)
def test_the_servers_check_refuses_what_no_policy_produces(
    metadata: dict[str, object], names: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(names)) as raised:
        check_clear_metadata(metadata)
    assert "CANARY" not in str(raised.value)
    assert len(str(raised.value)) < 200
