"""What one stored node adds to the usage aggregate: pure, no database.

A node is placed in time by its clear ``created_at`` (the hour under ``coarse``, exact under
``full``), else by its upload time (the ``none`` policy), in 15-minute buckets (``bucket`` is
seconds since the Unix epoch // 900): every UTC offset in use is a multiple of 15 minutes, so a
day or an hour in any time zone is a whole number of buckets. The push (``record``) and the
migration's backfill both use :func:`contributions`, so the two cannot disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import msgspec

__all__ = [
    "BUCKET_SECONDS",
    "COUNTERS",
    "Key",
    "bindable",
    "bucket_of",
    "contributions",
    "dims_hash",
]

BUCKET_SECONDS = 900
COUNTERS = (
    "nodes",
    "sessions",
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
    "base_input_tokens",
)
"""The summed columns. ``base_input_tokens`` is, per node, the prompt tokens less the cache
tokens (never below 0), as Go tapes' ``deck`` prices them: the input not read from or written
to a cache."""

_encode = msgspec.json.Encoder().encode
_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
)


@dataclass(frozen=True, slots=True)
class Key:
    bucket: int
    member_id: str
    model: str
    provider: str
    agent: str
    project: str
    by_upload: bool


def dims_hash(key: Key) -> str:
    """A fixed-size name for the key's text columns (each up to 512 characters: too long for a
    PostgreSQL index entry together)."""
    dims = [key.member_id, key.model, key.provider, key.agent, key.project, key.by_upload]
    return hashlib.sha256(_encode(dims)).hexdigest()[:32]


def bucket_of(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp()) // BUCKET_SECONDS


def _count(metadata: Mapping[str, object], name: str) -> int:
    value = metadata.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@lru_cache(maxsize=4096)
def _created_bucket(created: str) -> int | None:
    try:
        return bucket_of(datetime.fromisoformat(created))
    except (ValueError, OverflowError):  # checked at push; old rows may predate the check
        return None


def _placed(metadata: Mapping[str, object], uploaded_at: datetime) -> tuple[int, bool]:
    created = metadata.get("created_at")
    if isinstance(created, str) and (bucket := _created_bucket(created)) is not None:
        return bucket, False
    return bucket_of(uploaded_at), True


def contributions(
    nodes: Iterable[tuple[Mapping[str, object], bool, str, datetime]],
) -> dict[Key, list[int]]:
    """Sum ``(clear metadata, is a root, uploader id, upload time)`` per aggregate key, each
    value in :data:`COUNTERS` order."""
    sums: dict[tuple[int, str, object, object, object, object, bool], list[int]] = {}
    for metadata, root, uploader, uploaded_at in nodes:
        bucket, by_upload = _placed(metadata, uploaded_at)
        get = metadata.get
        key = (
            bucket, uploader, get("model") or "", get("provider") or "", get("agent_name") or "",
            get("project") or "", by_upload,
        )  # fmt: skip
        prompt, completion, created, read, total = (_count(metadata, name) for name in _TOKENS)
        row = (
            1,
            int(root),
            prompt,
            completion,
            created,
            read,
            total,
            max(prompt - created - read, 0),
        )
        found = sums.get(key)
        if found is None:
            sums[key] = list(row)
        else:
            for index, value in enumerate(row):
                found[index] += value
    return {
        Key(b, m, str(model), str(provider), str(agent), str(project), u): values
        for (b, m, model, provider, agent, project, u), values in sums.items()
    }


_MAX_BIND = 2**62


def bindable(values: list[int]) -> list[list[int]]:
    """``values`` as parts that each bind as a 64-bit integer and add up to them: a batch of
    counts up to 2^53 each can sum past 2^63, which no driver binds as an integer."""
    parts = max(1, -(-max(values) // _MAX_BIND))
    return [[v // parts + (v % parts if i == 0 else 0) for v in values] for i in range(parts)]
