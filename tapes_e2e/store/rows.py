"""A node as a row of Go tapes' ``nodes`` table, and back, with Go's encodings.

Writing (``EntDriver.Put``): ``bucket``/``content`` as BLOBs of v1 JSON; type, role, model,
provider and stop_reason always written ('' when empty); agent_name and project NULL when empty;
token and duration columns NULL unless > 0; created_at as Go's time text.

Reading rebuilds the bucket from the ``bucket`` column only (the other bucket columns are
denormalized copies for queries), usage from the integer columns, and keeps the stored hash.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

import msgspec

from tapes_e2e import _gojson
from tapes_e2e.errors import CorruptStoreError, InvalidNodeError, MissingParentError
from tapes_e2e.node import Bucket, Node, Usage, bucket_from_bytes, go_time, go_view

__all__ = [
    "INSERT_SQL",
    "SELECT_COLUMNS",
    "PulledRow",
    "StoredBucket",
    "insert_rows",
    "node_to_row",
    "pulled_row",
    "row_to_node",
]

_USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_duration_ns",
    "prompt_duration_ns",
)
_INSERT_COLUMNS = (
    "hash",
    "parent_hash",
    "bucket",
    "content",
    "type",
    "role",
    "model",
    "provider",
    "agent_name",
    "stop_reason",
    *_USAGE_COLUMNS,
    "project",
    "created_at",
)
INSERT_SQL = (
    f"INSERT INTO nodes ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))}) ON CONFLICT (hash) DO NOTHING"
)
# What reading needs, in the order row_to_node expects.
SELECT_COLUMNS = (
    "hash",
    "parent_hash",
    "bucket",
    "stop_reason",
    *_USAGE_COLUMNS,
    "project",
    "created_at",
)


def node_to_row(node: Node) -> tuple[Any, ...]:
    """The positional parameters of ``INSERT_SQL`` for ``node``, encoded as Go encodes them."""
    bucket = node.bucket
    stored = go_view(bucket, "stored")
    usage = node.usage or Usage()
    # The content array is most of the bytes: encode it once and splice it into the bucket.
    # Floats can only sit in tool_input; without any, the number walk is skipped.
    floats = any(block.tool_input for block in bucket.content or ())
    content = _gojson.stored_bytes(stored["content"], floats=floats)
    stored["content"] = msgspec.Raw(content)
    return (
        node.hash,
        node.parent_hash,
        _gojson.stored_bytes(stored, floats=False),
        content,
        bucket.type,
        bucket.role,
        bucket.model,
        bucket.provider,
        bucket.agent_name or None,
        node.stop_reason,
        *((getattr(usage, name) or None) for name in _USAGE_COLUMNS),
        node.project or None,
        # A node that arrives without a time (an import, say) is stamped now, as Go stamps Put.
        node.created_at or go_time(),
    )


class PulledRow(NamedTuple):
    """A pulled node that passed verification, ready to store: its ``INSERT_SQL`` row
    (:func:`node_to_row`; the hash and parent hash come first) and the ID the vault holds it
    under. A plain tuple, so that a worker process that opened it sends it back cheaply."""

    row: tuple[Any, ...]
    node_id: str

    @property
    def hash(self) -> str:
        return str(self.row[0])

    @property
    def parent_hash(self) -> str | None:
        parent = self.row[1]
        return None if parent is None else str(parent)


def pulled_row(node: Node, node_id: str, *, verify: bool = True) -> PulledRow:
    """The row of a pulled ``node``. Its hash is recomputed from its content unless the caller
    just did so itself (``verify=False``: :func:`~tapes_e2e.envelopes.open_envelope` parsed
    the body and hashed it); a mismatch is ``InvalidNodeError``, and nothing is stored."""
    if verify and not node.verify():
        raise InvalidNodeError(f"pulled node {node.hash} does not match its content")
    return PulledRow(node_to_row(node), node_id)


_BUCKET_FIELDS = frozenset(f.name for f in fields(Bucket))


class StoredBucket(Bucket):
    """A Bucket read from the database, decoded the first time one of its fields is read.

    Reading a long session's ancestry builds thousands of nodes of which a caller often looks at
    a few; the JSON of each is decoded only when used. A stored bucket that cannot be decoded
    raises ``CorruptStoreError`` naming the node at that moment. It compares equal to the eager
    ``Bucket`` with the same fields.
    """

    __slots__ = ("_node_hash", "_raw")

    @classmethod
    def lazy(cls, raw: bytes, node_hash: str) -> StoredBucket:
        bucket = object.__new__(cls)
        object.__setattr__(bucket, "_raw", raw)
        object.__setattr__(bucket, "_node_hash", node_hash)
        return bucket

    def undecoded_json(self) -> bytes | None:
        try:
            object.__getattribute__(self, "type")
        except AttributeError:  # not decoded yet
            raw: bytes = object.__getattribute__(self, "_raw")
            return raw
        return None

    def __getattr__(self, name: str) -> Any:
        # Only reached while a field is still unset, that is before the first decode.
        if name not in _BUCKET_FIELDS:
            raise AttributeError(name)
        raw = object.__getattribute__(self, "_raw")
        try:
            decoded = bucket_from_bytes(raw)
        except InvalidNodeError as exc:
            node_hash = object.__getattribute__(self, "_node_hash")
            raise CorruptStoreError(
                f"node {node_hash}: stored bucket is unreadable: {exc}"
            ) from exc
        for field_name in _BUCKET_FIELDS:
            object.__setattr__(self, field_name, getattr(decoded, field_name))
        return object.__getattribute__(self, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bucket):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _BUCKET_FIELDS)

    __hash__ = Bucket.__hash__


def row_to_node(row: Sequence[Any], *, eager: bool = False) -> Node:
    """A node from a row selected with ``SELECT_COLUMNS``. The stored hash is kept as is.

    The bucket is decoded when first read (``StoredBucket``), or at once with ``eager``. Raises
    ``CorruptStoreError`` naming the node when its row cannot be read.
    """
    node_hash, parent_hash, bucket_json, stop_reason = row[0], row[1], row[2], row[3]
    usage_values, project, created_at = row[4:11], row[11], row[12]
    if bucket_json is None:
        raise CorruptStoreError(f"node {node_hash}: the bucket column is NULL")
    try:
        raw = bucket_json if isinstance(bucket_json, bytes) else str(bucket_json).encode("utf-8")
        bucket = bucket_from_bytes(raw) if eager else StoredBucket.lazy(raw, node_hash)
        usage = None
        if usage_values.count(None) != len(usage_values):
            usage = Usage(*[v or 0 for v in usage_values])
    except InvalidNodeError as exc:
        raise CorruptStoreError(f"node {node_hash}: stored row is unreadable: {exc}") from exc
    return Node(
        hash=node_hash,
        parent_hash=parent_hash or None,
        bucket=bucket,
        stop_reason=stop_reason or "",
        usage=usage,
        project=project or "",
        created_at=_time_text(created_at),
    )


def _time_text(value: object) -> str:
    # Go accepts integer Unix seconds or milliseconds as well as text; we keep what is stored.
    return "" if value is None else str(value)


def insert_rows(raw: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Insert ``node_to_row`` tuples on ``raw`` (inside the caller's transaction), parents first;
    return how many were new. A missing parent is ``MissingParentError`` naming both nodes."""
    rows = list(rows)
    before = raw.total_changes
    try:
        raw.executemany(INSERT_SQL, rows)  # one statement, prepared once
    except sqlite3.IntegrityError:
        # Name the node: again row by row (those already in conflict and do nothing), inside
        # the same transaction, which the caller rolls back.
        for row in rows:
            try:
                raw.execute(INSERT_SQL, row)
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise MissingParentError(
                        f"parent {row[1]} of node {row[0]} is not stored"
                    ) from exc
                raise
        raise  # pragma: no cover - the same rows fail again
    return raw.total_changes - before  # ON CONFLICT DO NOTHING changes nothing
