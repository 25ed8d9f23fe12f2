"""From a tapes node to a sealed envelope and back: the client's side of DESIGN §6.

keymgmt seals and opens bytes; this module decides what those bytes are and checks what keymgmt
cannot, because it cannot parse a node:

- the body is the node's full JSON (bucket, usage, stop reason, project, created_at);
- ``hasher`` re-parses a decrypted body and recomputes the tapes hash from the content (never
  trusting the hash written inside), so keymgmt can check the keyed node ID and parent ID;
- after opening, the clear metadata must be exactly what the team's policy derives from the
  decrypted node: a member cannot label a node with untrue model or token numbers.

Every failure is keymgmt's one ``IntegrityError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

import keymgmt
from keymgmt.chain import MetadataPolicy
from keymgmt.envelope import AnyEnvelope
from keymgmt.metadata import MetadataValue
from tapes_e2e.node import Bucket, BucketHeader, Node, bucket_header, node_from_bytes

__all__ = [
    "MetadataRecord",
    "SealInput",
    "body_and_fields",
    "clear_fields",
    "node_body",
    "open_envelope",
    "seal_envelope",
    "seal_input",
]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class MetadataRecord:
    """What a metadata-only vault holds for a node: usage metadata, never content."""

    node_id: str
    parent_id: str | None
    author: str
    metadata: Mapping[str, MetadataValue]


def node_body(node: Node) -> bytes:
    """The bytes sealed for ``node``: its full Go-shaped JSON."""
    return _encode(node.to_json())


_FRACTION = re.compile(r"(\d{1,9})(\D.*)?\Z", re.DOTALL)


def _iso(created_at: str) -> str | None:
    """Go's ``2006-01-02 15:04:05.999999999-07:00`` as ISO-8601 (microseconds), or None."""
    if not created_at:
        return None
    text = created_at.replace("T", " ")
    head, _, rest = text.partition(".")
    if rest:  # 1 to 9 fraction digits (Go drops trailing zeros) -> microseconds, then the offset
        fraction = _FRACTION.match(rest)
        if fraction is None:
            return None
        digits, offset = fraction.group(1), fraction.group(2) or ""
        text = f"{head}.{digits[:6].ljust(6, '0')}{offset}"
    try:
        return datetime.fromisoformat(text).isoformat()  # 3.11 reads "Z" and offsets
    except ValueError:
        return None


def clear_fields(node: Node, bucket: Bucket | BucketHeader | None = None) -> dict[str, object]:
    """Every field a metadata policy may show in clear; ``project_metadata`` picks from these.

    ``bucket`` (default: the node's) gives model, provider, agent name and role."""
    bucket = node.bucket if bucket is None else bucket
    usage = node.usage
    fields: dict[str, object] = {
        "model": bucket.model or None,
        "provider": bucket.provider or None,
        "agent_name": bucket.agent_name or None,
        "role": bucket.role or None,
        "stop_reason": node.stop_reason or None,
        "project": node.project or None,
        "created_at": _iso(node.created_at),
    }
    if usage is not None:
        fields |= usage.to_json()
    return fields


def body_and_fields(node: Node) -> tuple[bytes, dict[str, object]]:
    """The sealed body and the clear fields of ``node``.

    A node read from the store whose bucket is not decoded yet keeps its stored bucket JSON:
    the body embeds those bytes as they are and the fields come from a read of them with the
    decoder the opening side uses, so the content is never decoded and encoded again on push.
    The opening side parses the body and recomputes the hash either way.
    """
    raw = node.bucket.undecoded_json()
    header = None if raw is None else bucket_header(raw)
    if raw is None or header is None:
        return node_body(node), clear_fields(node)
    return _encode(node.json_with_bucket(msgspec.Raw(raw))), clear_fields(node, header)


class SealInput(msgspec.Struct, array_like=True, frozen=True):
    """What sealing one node takes besides the keys: its hash, the parent's node ID, the body
    and the clear metadata its team's policy shows. Cheap to send to a worker process."""

    tapes_hash: str
    parent_id: str | None
    body: bytes
    metadata: dict[str, MetadataValue]


def seal_input(
    node: Node,
    *,
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys,
    parent_id: str | None = None,
) -> SealInput:
    """The body, clear metadata and parent ID that ``node`` is sealed with."""
    body, fields = body_and_fields(node)
    metadata = keymgmt.project_metadata(state.metadata_policy, fields)
    if node.parent_hash is not None and parent_id is None:
        parent_id = keys.node_id(state.epoch, node.parent_hash)
    return SealInput(node.hash, parent_id, body, metadata)


def seal_envelope(
    node: Node,
    *,
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys,
    author: keymgmt.Identity,
    parent_id: str | None = None,
) -> keymgmt.Envelope:
    """Seal ``node`` for the team's current epoch under the team's content and metadata policy.

    ``parent_id`` is the parent's node ID where the vault holds it under another epoch's key
    (the sync knows it from ``e2e_remote``); by default the parent is named as it would be
    sealed now, which is right when it is pushed in this epoch (in the same batch, say)."""
    item = seal_input(node, state=state, keys=keys, parent_id=parent_id)
    omit = state.content_policy == "omit"
    return keymgmt.seal_node(
        state=state,
        keys=keys,
        tapes_hash=item.tapes_hash,
        parent_id=item.parent_id,
        body=None if omit else item.body,
        metadata=item.metadata,
        author=author.fingerprint,
        signer=author if omit else None,
    )


def open_envelope(
    envelope: AnyEnvelope,
    *,
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys | None,
) -> Node | MetadataRecord:
    """Verify and open one envelope; a node whose every check passed, or a metadata record."""
    parsed: list[Node] = []

    def hasher(body: bytes) -> tuple[str, str | None]:
        # Parse once: keymgmt checks the IDs from this, and we keep the node it yields.
        node = node_from_bytes(body)  # recomputes the hash from the content
        parsed.append(node)
        return node.hash, node.parent_hash

    opened = keymgmt.open_node(envelope, state=state, keys=keys, hasher=hasher)
    if opened.body is None:
        return MetadataRecord(opened.node_id, opened.parent_id, opened.author, opened.metadata)
    node = parsed[-1]
    if opened.epoch < state.epoch and _written_after_its_epoch(opened.epoch, node, state):
        raise keymgmt.IntegrityError()
    fields, clear = clear_fields(node), dict(opened.metadata)
    if clear != keymgmt.project_metadata(state.metadata_policy, fields) and not any(
        clear == keymgmt.project_metadata(policy, fields) for policy in past_policies(state)
    ):
        raise keymgmt.IntegrityError()
    return node


CLOCK_SKEW_SECONDS = 600
"""How far a node's own time may run past the end of its epoch (clocks differ)."""


def _written_after_its_epoch(epoch: int, node: Node, state: keymgmt.VerifiedTeamState) -> bool:
    """Whether ``node`` claims to have been written after the statement that ended ``epoch``
    (a removal or rotation). Only a holder of that epoch's key could seal it, and every honest
    client seals new nodes under the newest epoch it verified, so such a node comes from a member
    the chain no longer trusts with new content (a removed member, say): it is refused. A node
    sealed by a member who backdates it reads as old history; that is the remaining limit."""
    ended = next((st.body.time for st in state.statements if st.body.epoch > epoch), None)
    written = _iso(node.created_at)
    if ended is None or written is None:
        return False
    when = datetime.fromisoformat(written)
    if when.tzinfo is None:  # Go always writes an offset; SQLite's default time is UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp() > ended + CLOCK_SKEW_SECONDS


def past_policies(state: keymgmt.VerifiedTeamState) -> set[MetadataPolicy]:
    """Every metadata policy the verified chain has put in force, from its genesis on. A node
    sealed before a policy change carries the clear metadata of the policy of its time (bound by
    the digest in its AD): it must be exactly that policy's projection of the decrypted node, and
    keeps opening after the change."""
    return {
        st.body.metadata_policy for st in state.statements if st.body.metadata_policy is not None
    }
