"""The tapes Merkle node, hashed bit for bit as Go tapes hashes it.

A node is ``{hash, parent_hash, bucket, stop_reason, usage, project, created_at}``. Only the bucket
and the parent enter the hash::

    hash = sha256_hex(JCS({"parent": parent_hash or "", "content": bucket}))

Field names and JSON tags follow Go tapes' ``merkle.Node``, ``merkle.Bucket``,
``llm.ContentBlock`` and ``llm.Usage``. Which empty fields Go omits differs between the hash input
(``encoding/json/v2``) and the stored columns (``encoding/json`` v1); both rule sets live in
``go_view``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import msgspec

from tapes_e2e import _gojson
from tapes_e2e._gojson import GoJSONError
from tapes_e2e.errors import InvalidNodeError

__all__ = [
    "Bucket",
    "ContentBlock",
    "Node",
    "Usage",
    "bucket_from_bytes",
    "bucket_from_json",
    "go_time",
    "go_view",
    "node_from_bytes",
    "node_from_json",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")


def _within_depth(read: Callable[_P, _T]) -> Callable[_P, _T]:
    """``read``, with a node nested deeper than Python's recursion limit (about 900 levels of
    JSON; Go's own decoder stops at 10,000) refused as :class:`InvalidNodeError` instead of
    escaping as ``RecursionError`` from the parser or from any walk of the value after it."""

    @functools.wraps(read)
    def bounded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return read(*args, **kwargs)
        except RecursionError:
            raise InvalidNodeError("the node's JSON nests too deeply to read") from None

    return bounded


_INT64 = 2**63
_HASH_RE = re.compile(r"[0-9a-f]{64}")

# ContentBlock string fields after `type`, in Go's declaration order; v1 and v2 both omit them
# when empty.
_BLOCK_STRINGS = (
    "text",
    "image_url",
    "image_base64",
    "media_type",
    "tool_use_id",
    "tool_name",
    "tool_result_id",
    "tool_output",
)
_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_duration_ns",
    "prompt_duration_ns",
)


@dataclass(frozen=True, slots=True)
class ContentBlock:
    """One piece of a message: text, image, tool use or tool result (Go ``llm.ContentBlock``).

    ``tool_input`` is ``None`` for Go's nil map; it is held frozen, with every number a float as
    Go's decoder leaves it.
    """

    type: str = ""
    text: str = ""
    image_url: str = ""
    image_base64: str = ""
    media_type: str = ""
    tool_use_id: str = ""
    tool_name: str = ""
    tool_input: Mapping[str, Any] | None = None
    tool_result_id: str = ""
    tool_output: str = ""
    is_error: bool = False

    def __post_init__(self) -> None:
        for name in ("type", *_BLOCK_STRINGS):
            _check_str(f"content block {name}", getattr(self, name))
        if not isinstance(self.is_error, bool):
            raise InvalidNodeError("content block is_error must be true or false")
        if self.tool_input is not None:
            if not isinstance(self.tool_input, Mapping):
                raise InvalidNodeError("content block tool_input must be a JSON object")
            try:
                frozen = _gojson.freeze(_gojson.to_go_value(self.tool_input))
            except GoJSONError as exc:
                raise InvalidNodeError(f"content block tool_input: {exc}") from exc
            object.__setattr__(self, "tool_input", frozen)


@dataclass(frozen=True, slots=True)
class Bucket:
    """The hashed content of a node (Go ``merkle.Bucket``).

    ``content`` is ``None`` for Go's nil slice; it hashes like an empty one but is stored as
    ``null``, so the distinction is kept to reproduce Go's stored bytes.
    """

    type: str = ""
    role: str = ""
    content: tuple[ContentBlock, ...] | None = ()
    model: str = ""
    provider: str = ""
    agent_name: str = ""

    def __post_init__(self) -> None:
        for name in ("type", "role", "model", "provider", "agent_name"):
            _check_str(f"bucket {name}", getattr(self, name))
        if self.content is not None:
            blocks = tuple(self.content)
            if not all(isinstance(b, ContentBlock) for b in blocks):
                raise InvalidNodeError("bucket content must hold ContentBlock values")
            object.__setattr__(self, "content", blocks)

    def undecoded_json(self) -> bytes | None:
        """The stored JSON this bucket was read from, while it is not decoded yet (else None)."""
        return None

    def text(self) -> str:
        """The readable text of the bucket, as Go's ``ExtractText`` joins it."""
        parts = []
        for block in self.content or ():
            if block.text:
                parts.append(block.text)
            elif block.tool_output:
                parts.append(block.tool_output)
            elif block.tool_name:
                parts.append(f"Tool call: {block.tool_name}")
        return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and durations of a response (Go ``llm.Usage``); not part of the hash."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    total_duration_ns: int = 0
    prompt_duration_ns: int = 0

    def __post_init__(self) -> None:
        # One pass over the values (exact int: a bool is refused); the field is named only
        # when something is wrong. Reading thousands of stored nodes runs this for each.
        values = (
            self.prompt_tokens, self.completion_tokens, self.total_tokens,
            self.cache_creation_input_tokens, self.cache_read_input_tokens,
            self.total_duration_ns, self.prompt_duration_ns,
        )  # fmt: skip
        if all(type(v) is int and 0 <= v < _INT64 for v in values):
            return
        for name, value in zip(_USAGE_FIELDS, values, strict=True):
            if type(value) is not int or not 0 <= value < _INT64:
                raise InvalidNodeError(f"usage {name} must be an integer ≥ 0, not {value!r}")

    def is_zero(self) -> bool:
        return not any(getattr(self, name) for name in _USAGE_FIELDS)

    def to_json(self) -> dict[str, int]:
        """Go's JSON of Usage: zero counts omitted."""
        return {name: getattr(self, name) for name in _USAGE_FIELDS if getattr(self, name)}


@dataclass(frozen=True, slots=True)
class Node:
    """A content-addressed node of the session DAG (Go ``merkle.Node``).

    Build new nodes with ``Node.new``, which computes the hash. A node read from storage carries
    the stored hash; ``verify`` says whether it still matches the content.
    ``created_at`` is kept as the text Go stores, so a round trip does not lose nanoseconds.
    """

    hash: str
    parent_hash: str | None
    bucket: Bucket
    stop_reason: str = ""
    usage: Usage | None = None
    project: str = ""
    created_at: str = field(default="", compare=False)

    @classmethod
    def new(
        cls,
        bucket: Bucket,
        parent: Node | str | None = None,
        *,
        stop_reason: str = "",
        usage: Usage | None = None,
        project: str = "",
        created_at: str | None = None,
    ) -> Node:
        parent_hash = parent.hash if isinstance(parent, Node) else parent
        return cls(
            hash=compute_hash(bucket, parent_hash),
            parent_hash=parent_hash,
            bucket=bucket,
            stop_reason=stop_reason,
            usage=usage,
            project=project,
            created_at=go_time() if created_at is None else created_at,
        )

    def tapes_hash(self) -> str:
        """Recompute the hash from the content and parent, as Go tapes does."""
        return compute_hash(self.bucket, self.parent_hash)

    def verify(self) -> bool:
        return self.hash == self.tapes_hash()

    def with_created_at(self, created_at: str) -> Node:
        return replace(self, created_at=created_at)

    def to_json(self) -> dict[str, Any]:
        """The node as Go's JSON (``bucket`` in stored form), plus ``created_at`` when known."""
        return self.json_with_bucket(go_view(self.bucket, "stored"))

    def json_with_bucket(self, bucket: Any) -> dict[str, Any]:
        """``to_json`` with ``bucket`` as the bucket's value (a ``msgspec.Raw``, say)."""
        out: dict[str, Any] = {
            "hash": self.hash,
            "parent_hash": self.parent_hash,
            "bucket": bucket,
        }
        if self.stop_reason:
            out["stop_reason"] = self.stop_reason
        if self.usage is not None and not self.usage.is_zero():
            out["usage"] = self.usage.to_json()
        if self.project:
            out["project"] = self.project
        if self.created_at:
            out["created_at"] = self.created_at
        return out


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidNodeError(f"{what} must be a string, not {type(value).__name__}")
    # ASCII text (almost every field) cannot hold a surrogate: skip the scan.
    if not value.isascii() and _gojson.has_lone_surrogate(value):
        raise InvalidNodeError(f"{what} holds a lone surrogate, which is not valid UTF-8")


def _block_view(block: ContentBlock, form: Literal["hash", "stored"]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": block.type}
    for name in _BLOCK_STRINGS:
        value = getattr(block, name)
        if value:
            out[name] = value
    if block.tool_input:
        out["tool_input"] = _gojson.thaw(block.tool_input)
    if form == "hash" or block.is_error:
        out["is_error"] = block.is_error
    return out


def go_view(bucket: Bucket, form: Literal["hash", "stored"]) -> dict[str, Any]:
    """The bucket as the plain JSON value Go encodes: the one place Go's omission rules live.

    ``hash`` (encoding/json/v2 omitempty): type, role, model, provider and content are always
    present, content as ``[]`` even when nil; agent_name only when set; in each block ``type`` and
    ``is_error`` always, the other strings only when set, tool_input only when non-empty.

    ``stored`` (encoding/json v1 omitempty, the ``nodes.bucket`` column): the same, except that nil
    content is ``null`` and ``is_error`` appears only when true.
    """
    content: list[dict[str, Any]] | None
    if bucket.content is None and form == "stored":
        content = None
    else:
        content = [_block_view(b, form) for b in bucket.content or ()]
    out: dict[str, Any] = {
        "type": bucket.type,
        "role": bucket.role,
        "content": content,
        "model": bucket.model,
        "provider": bucket.provider,
    }
    if bucket.agent_name:
        out["agent_name"] = bucket.agent_name
    return out


def hash_input(bucket: Bucket, parent_hash: str | None) -> bytes:
    """The exact canonical bytes Go tapes hashes."""
    view = {"parent": parent_hash or "", "content": go_view(bucket, "hash")}
    if not any(block.tool_input for block in bucket.content or ()):
        # Only strings, booleans and our own ASCII keys: msgspec's sorted output is the RFC 8785
        # text (see _gojson.canonical), with no walk over the value needed to prove it.
        return msgspec.json.encode(view, order="sorted")
    return _gojson.canonical(view)


def compute_hash(bucket: Bucket, parent_hash: str | None) -> str:
    return hashlib.sha256(hash_input(bucket, parent_hash)).hexdigest()


def is_hash(value: str) -> bool:
    """Whether ``value`` has the form of a tapes hash (64 lowercase hex digits)."""
    return _HASH_RE.fullmatch(value) is not None


# --- decoding ---------------------------------------------------------------------------------
#
# Two paths. The fast one decodes JSON bytes straight into typed msgspec structs (types checked
# in C; msgspec refuses lone surrogates and non-JSON constants) and builds the frozen model
# without re-running the per-field checks those types already guarantee. Anything the fast path
# refuses — and text that may hold the number -0, whose sign msgspec drops — takes the generic
# path, which applies Go's lenient repairs and names the offending field.


class _WireBlock(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    image_url: str | None = None
    image_base64: str | None = None
    media_type: str | None = None
    tool_use_id: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    tool_result_id: str | None = None
    tool_output: str | None = None
    is_error: bool | None = None


class _WireBucket(msgspec.Struct):
    type: str | None = None
    role: str | None = None
    content: list[_WireBlock] | None = None
    model: str | None = None
    provider: str | None = None
    agent_name: str | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    completion_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    total_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    cache_creation_input_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    cache_read_input_tokens: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    total_duration_ns: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    prompt_duration_ns: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0


class _WireNode(msgspec.Struct):
    hash: str
    bucket: _WireBucket
    parent_hash: str | None = None
    stop_reason: str | None = None
    usage: _WireUsage | None = None
    project: str | None = None
    created_at: str | None = None


_bucket_decoder = msgspec.json.Decoder(_WireBucket)
_node_decoder = msgspec.json.Decoder(_WireNode)


def _trusted(cls: type[_T], **values: Any) -> _T:
    """Build a frozen model instance whose fields are already known valid (fast path only)."""
    obj = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(obj, name, value)
    return obj


def _block_from_wire(wire: _WireBlock) -> ContentBlock:
    tool_input = wire.tool_input
    if tool_input is not None:
        try:
            tool_input = _gojson.freeze(_gojson.to_go_value(tool_input))
        except GoJSONError as exc:
            raise InvalidNodeError(f"content block tool_input: {exc}") from exc
    return _trusted(
        ContentBlock,
        type=wire.type or "",
        text=wire.text or "",
        image_url=wire.image_url or "",
        image_base64=wire.image_base64 or "",
        media_type=wire.media_type or "",
        tool_use_id=wire.tool_use_id or "",
        tool_name=wire.tool_name or "",
        tool_input=tool_input,
        tool_result_id=wire.tool_result_id or "",
        tool_output=wire.tool_output or "",
        is_error=bool(wire.is_error),
    )


def _bucket_from_wire(wire: _WireBucket) -> Bucket:
    content = None
    if wire.content is not None:
        content = tuple(_block_from_wire(block) for block in wire.content)
    return _trusted(
        Bucket,
        type=wire.type or "",
        role=wire.role or "",
        content=content,
        model=wire.model or "",
        provider=wire.provider or "",
        agent_name=wire.agent_name or "",
    )


@dataclass(frozen=True, slots=True)
class BucketHeader:
    """A bucket's scalar fields, read from its JSON without building its content."""

    type: str
    role: str
    model: str
    provider: str
    agent_name: str


def bucket_header(data: bytes) -> BucketHeader | None:
    """The scalars of the bucket JSON ``data`` exactly as :func:`node_from_bytes` will read them
    from a node body that embeds ``data`` (the same decoder), or None where that reader would
    take its Go-compatible slow path; then the caller should decode the bucket in full."""
    if _gojson.may_hold_negative_zero(data):
        return None
    try:
        wire = _bucket_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return BucketHeader(
        wire.type or "", wire.role or "", wire.model or "", wire.provider or "",
        wire.agent_name or "",
    )  # fmt: skip


@_within_depth
def bucket_from_bytes(data: bytes) -> Bucket:
    """A Bucket from JSON bytes (a stored ``nodes.bucket`` column, say), as Go would read it."""
    if not _gojson.may_hold_negative_zero(data):
        try:
            return _bucket_from_wire(_bucket_decoder.decode(data))
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    try:
        return bucket_from_json(_gojson.decode(data))
    except GoJSONError as exc:
        raise InvalidNodeError(str(exc)) from exc


@_within_depth
def node_from_bytes(data: bytes) -> Node:
    """A Node from one line of Go's node JSON; its hash must match its content."""
    if not _gojson.may_hold_negative_zero(data):
        try:
            wire = _node_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            usage = (
                None
                if wire.usage is None
                else _trusted(Usage, **msgspec.structs.asdict(wire.usage))
            )
            return _checked(
                Node(
                    hash=wire.hash,
                    parent_hash=wire.parent_hash or None,
                    bucket=_bucket_from_wire(wire.bucket),
                    stop_reason=wire.stop_reason or "",
                    usage=usage,
                    project=wire.project or "",
                    created_at=wire.created_at or "",
                )
            )
    try:
        return node_from_json(_gojson.decode(data))
    except GoJSONError as exc:
        raise InvalidNodeError(str(exc)) from exc


def _string(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:  # absent, or JSON null: Go leaves the zero value
        return ""
    if not isinstance(value, str):
        raise InvalidNodeError(f"{what}.{key} must be a string")
    return value


def _block_from_json(obj: Any, index: int) -> ContentBlock:
    what = f"bucket.content[{index}]"
    if not isinstance(obj, dict):
        raise InvalidNodeError(f"{what} must be an object")
    tool_input = obj.get("tool_input")
    if tool_input is not None and not isinstance(tool_input, dict):
        raise InvalidNodeError(f"{what}.tool_input must be an object")
    is_error = obj.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise InvalidNodeError(f"{what}.is_error must be true or false")
    kwargs = {name: _string(obj, name, what) for name in ("type", *_BLOCK_STRINGS)}
    return ContentBlock(**kwargs, tool_input=tool_input, is_error=bool(is_error))


def bucket_from_json(obj: Any) -> Bucket:
    """Build a Bucket from a decoded JSON object (``_gojson.decode`` output), as Go would."""
    if not isinstance(obj, dict):
        raise InvalidNodeError("bucket must be a JSON object")
    content = obj.get("content")
    if content is not None and not isinstance(content, list):
        raise InvalidNodeError("bucket.content must be an array")
    blocks = None
    if content is not None:
        blocks = tuple(_block_from_json(b, i) for i, b in enumerate(content))
    strings = {
        name: _string(obj, name, "bucket")
        for name in ("type", "role", "model", "provider", "agent_name")
    }
    return Bucket(content=blocks, **strings)


def _usage_from_json(obj: Any) -> Usage | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidNodeError("usage must be a JSON object")
    counts: dict[str, int] = {}
    for name in _USAGE_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        # Go decodes these into int fields: a JSON integer (or -0) and nothing else.
        integral = isinstance(value, int) or (isinstance(value, float) and value == 0)
        if isinstance(value, bool) or not integral:
            raise InvalidNodeError(f"usage.{name} must be an integer")
        counts[name] = int(value)
    return Usage(**counts)


@_within_depth
def node_from_json(obj: Any, *, check_hash: bool = True) -> Node:
    """Build a Node from Go's node JSON (as ``Node.to_json`` or Go tapes writes it).

    With ``check_hash`` the stored hash must equal the recomputed one (``InvalidNodeError``).
    """
    if not isinstance(obj, dict):
        raise InvalidNodeError("a node must be a JSON object")
    node_hash = obj.get("hash")
    if not isinstance(node_hash, str) or not is_hash(node_hash):
        raise InvalidNodeError("hash must be 64 lowercase hex digits")
    parent = obj.get("parent_hash")
    if parent is not None and not isinstance(parent, str):
        raise InvalidNodeError("parent_hash must be a string or null")
    created_at = obj.get("created_at")
    if created_at is not None and not isinstance(created_at, str):
        raise InvalidNodeError("created_at must be a string")
    node = Node(
        hash=node_hash,
        parent_hash=parent or None,
        bucket=bucket_from_json(obj.get("bucket")),
        stop_reason=_string(obj, "stop_reason", "node"),
        usage=_usage_from_json(obj.get("usage")),
        project=_string(obj, "project", "node"),
        created_at=created_at or "",
    )
    return _checked(node) if check_hash else node


def _checked(node: Node) -> Node:
    if not is_hash(node.hash):
        raise InvalidNodeError("hash must be 64 lowercase hex digits")
    recomputed = node.tapes_hash()
    if recomputed != node.hash:
        raise InvalidNodeError(
            f"hash {node.hash[:12]}… does not match the node's content (expected "
            f"{recomputed[:12]}…)"
        )
    return node


def go_time(now_ns: int | None = None) -> str:
    """A timestamp in the layout Go tapes stores: ``2006-01-02 15:04:05.999999999-07:00``.

    Local time with its offset and trailing fractional zeros dropped, as go-sqlite3 binds
    ``time.Now()``.
    """
    ns = time.time_ns() if now_ns is None else now_ns
    seconds, frac = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).astimezone()
    offset = moment.strftime("%z")
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return f"{text}{offset[:3]}:{offset[3:]}"
