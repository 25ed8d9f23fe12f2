"""Clear metadata by team policy: the only node fields the server may see (DESIGN §6).

:func:`project_metadata` is an allowlist: it copies known fields by policy and drops everything
else, so a new node field can never leak by accident (attack class 17).

=========  ==================================================================================
policy     fields kept
=========  ==================================================================================
none       nothing
coarse     model, provider, agent_name, role, stop_reason, the five token counts, and
           created_at truncated to the hour (UTC, ``YYYY-MM-DDTHH:00:00Z``)
full       coarse + project, created_at exact (UTC), total_duration_ns, prompt_duration_ns
=========  ==================================================================================

Its digest (SHA-256 of RFC 8785 canonical JSON) is bound in each envelope's associated data.
:func:`check_clear_metadata` is the server's check at push: the field names and value types and
ranges some policy could have produced (it cannot know whether the values are true).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal

from keymgmt import _primitives as prim
from keymgmt._encoding import canonical_json
from keymgmt.errors import PolicyError

__all__ = [
    "COARSE_FIELDS",
    "FULL_FIELDS",
    "MetadataValue",
    "check_clear_metadata",
    "metadata_digest",
    "project_metadata",
]

MetadataValue = str | int

_STR_FIELDS: Final = ("model", "provider", "agent_name", "role", "stop_reason")
_TOKEN_FIELDS: Final = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_FULL_ONLY_INT: Final = ("total_duration_ns", "prompt_duration_ns")
COARSE_FIELDS: Final = frozenset((*_STR_FIELDS, *_TOKEN_FIELDS, "created_at"))
FULL_FIELDS: Final = COARSE_FIELDS | {"project", *_FULL_ONLY_INT}
_COUNT_FIELDS: Final = frozenset((*_TOKEN_FIELDS, *_FULL_ONLY_INT))
MAX_STR: Final = 512
MAX_INT: Final = 2**53 - 1  # RFC 8785 numbers are IEEE doubles


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_STR or not _encodable(value):
        raise PolicyError(f"metadata field {name} must be a string of at most {MAX_STR} characters")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise PolicyError(f"metadata field {name} must be a non-negative integer")
    return value


def _timestamp(value: object, *, exact: bool) -> str:
    try:
        moment = datetime.fromisoformat(_text("created_at", value))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted past the range
        raise PolicyError("metadata field created_at must be an ISO-8601 timestamp") from None
    if not exact:
        moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def project_metadata(
    policy: Literal["none", "coarse", "full"], fields: Mapping[str, object]
) -> dict[str, MetadataValue]:
    """The clear metadata the team's policy allows; unknown fields and ``None`` are dropped."""
    if policy not in ("none", "coarse", "full"):
        raise PolicyError(f"unknown metadata policy {policy!r}")
    out: dict[str, MetadataValue] = {}
    if policy == "none":
        return out
    present = {k: v for k, v in fields.items() if v is not None}
    for name in _STR_FIELDS:
        if name in present:
            out[name] = _text(name, present[name])
    for name in _TOKEN_FIELDS:
        if name in present:
            out[name] = _count(name, present[name])
    if "created_at" in present:
        out["created_at"] = _timestamp(present["created_at"], exact=policy == "full")
    if policy == "full":
        if "project" in present:
            out["project"] = _text("project", present["project"])
        for name in _FULL_ONLY_INT:
            if name in present:
                out[name] = _count(name, present[name])
    return out


def check_clear_metadata(metadata: Mapping[str, object]) -> None:
    """Refuse clear metadata no policy produces: a field :func:`project_metadata` never keeps, a
    token count or duration that is not an integer in [0, 2^53), a text field that is not a
    string of at most ``MAX_STR`` characters or that holds a NUL (PostgreSQL cannot store one),
    a ``created_at`` that is not an ISO-8601 timestamp. Raises :class:`PolicyError` naming the
    field."""
    for name, value in metadata.items():
        if name in _COUNT_FIELDS:
            _count(name, value)
        elif name == "created_at":
            _timestamp(value, exact=True)
        elif name in FULL_FIELDS:
            if "\x00" in _text(name, value):
                raise PolicyError(f"metadata field {name} must not hold a NUL character")
        else:
            raise PolicyError(f"metadata field {name[:64]!r} is not one any policy keeps")


def metadata_digest(metadata: Mapping[str, MetadataValue]) -> bytes:
    """SHA-256 over the RFC 8785 canonical JSON of the clear metadata."""
    return prim.sha256(canonical_json(dict(metadata)))
