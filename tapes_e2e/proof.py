"""Offline session proofs: a file an auditor checks with no network and no keys (docs/proofs.md).

A proof holds the session's turns in the exact form Go tapes hashes them (each a parent hash and
a bucket), so every hash recomputes as ``sha256(JCS({"parent": parent or "", "content":
bucket}))``; with ``redact`` the first turns are left out and the first turn shown names their
last hash as its parent. A proof may also carry a team's evidence: the signed team chain from
genesis, the sharer's signed share statement, and the key that derives the share's keyed leaf ID
from the session's hash (so the signature on the keyed ID vouches for this very session).

The file is canonical JSON (RFC 8785) and one newline; a verifier refuses any other bytes, so no
byte of a proof is free to change: each either breaks the canonical form or changes a value that
a check covers (the property test in tests/client/test_proof.py flips every byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

import keymgmt
from keymgmt._encoding import b64d, b64e
from tapes_e2e import node as tnode
from tapes_e2e.errors import InvalidNodeError, TapesError

__all__ = [
    "FORMAT",
    "MAX_PROOF_BYTES",
    "VERSION",
    "ProofError",
    "ProofReport",
    "TeamEvidence",
    "build_proof",
    "verify_proof",
]

FORMAT: Final = "tapes-session-proof"
VERSION: Final = 1
MAX_PROOF_BYTES: Final = 512 * 1024 * 1024
"""Larger than any session tapes records; a bigger file is refused before it is parsed."""


class ProofError(TapesError):
    """The proof does not hold: the message names the turn or statement and why."""

    default_hint = "the file is not what its maker produced: ask them for the proof again"


@dataclass(frozen=True)
class TeamEvidence:
    """What a member adds to prove that a team member shared the session."""

    chain: Sequence[dict[str, str]]
    share: dict[str, str]
    leaf_id_key: bytes


class _Turn(msgspec.Struct, forbid_unknown_fields=True):
    parent_hash: str | None
    bucket: dict[str, Any]


class _Team(msgspec.Struct, forbid_unknown_fields=True):
    chain: list[dict[str, Any]]
    share: dict[str, Any]
    leaf_id_key: str


class _Proof(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    session: str
    turns: list[_Turn]
    team: _Team | None


class _Header(msgspec.Struct):
    format: str = ""
    version: int = 0


def build_proof(
    path: Sequence[tnode.Node], *, redact: int = 0, team: TeamEvidence | None = None
) -> bytes:
    """The proof of the session ``path`` (root to leaf), its first ``redact`` turns hidden."""
    if not path:
        raise ProofError("a session has at least one turn")
    if not 0 <= redact < len(path):
        raise ProofError(
            f"cannot hide {redact} of {len(path)} turns: the last turn is always shown",
            hint="hide fewer turns (a later turn cannot be hidden: each turn's hash covers its "
            "parent's, so the path to the session's last turn needs every turn after the first "
            "one shown)",
        )
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "session": path[-1].hash,
        "turns": [
            {"parent_hash": n.parent_hash, "bucket": tnode.go_view(n.bucket, "hash")}
            for n in path[redact:]
        ],
        "team": None,
    }
    if team is not None:
        doc["team"] = {
            "chain": list(team.chain),
            "share": team.share,
            "leaf_id_key": b64e(team.leaf_id_key),
        }
    return keymgmt.canonical_json(doc) + b"\n"


@dataclass(frozen=True)
class SharedBy:
    """The team part of a verified proof."""

    team: str
    sharer: str
    shared_at: datetime
    expires_at: datetime | None
    epoch: int
    statements: int
    head_hash: str
    safety_number: str

    def to_json(self) -> dict[str, object]:
        return {
            "team": self.team,
            "sharer": self.sharer,
            "shared_at": self.shared_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "epoch": self.epoch,
            "chain_statements": self.statements,
            "chain_head": self.head_hash,
            "safety_number": self.safety_number,
        }


@dataclass(frozen=True)
class ProofReport:
    """What a proof shows once every check passed."""

    session: str
    turns: int
    hidden_before: str | None
    """The hash the first shown turn names as its parent when earlier turns are hidden."""
    shared: SharedBy | None

    def to_json(self) -> dict[str, object]:
        return {
            "valid": True,
            "session": self.session,
            "turns_shown": self.turns,
            "earlier_turns_hidden": self.hidden_before is not None,
            "first_shown_turn_parent": self.hidden_before,
            "shared": self.shared.to_json() if self.shared else None,
        }


def _parse(data: bytes) -> _Proof:
    if len(data) > MAX_PROOF_BYTES:
        raise ProofError(f"the proof is larger than {MAX_PROOF_BYTES // 2**20} MiB")
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # nested past any depth
        raise ProofError("the proof is not JSON in UTF-8 (truncated or damaged)") from None
    try:
        header = msgspec.convert(value, _Header)
    except msgspec.ValidationError:
        header = _Header()
    if header.format != FORMAT:
        raise ProofError(f"this is not a tapes session proof (format {header.format!r})")
    if header.version != VERSION:
        raise ProofError(
            f"proof format version {header.version} is not one this tapes reads ({VERSION})",
            hint="update tapes-e2e to check it",
        )
    try:
        canonical = keymgmt.canonical_json(value) + b"\n"
    except (TypeError, ValueError):
        canonical = b""
    if canonical != data:
        raise ProofError("the proof is not in canonical form (RFC 8785): it was edited")
    try:
        return msgspec.convert(value, _Proof)
    except msgspec.ValidationError as exc:
        raise ProofError(f"the proof is malformed: {exc}") from None


def _turn_hashes(proof: _Proof) -> list[str]:
    hashes: list[str] = []
    for number, turn in enumerate(proof.turns, start=1):
        parent = turn.parent_hash
        if parent is not None and not tnode.is_hash(parent):
            raise ProofError(f"turn {number}: its parent hash is not 64 lowercase hex digits")
        if hashes and parent != hashes[-1]:
            raise ProofError(
                f"turn {number - 1} hashes to {hashes[-1][:16]}…, but turn {number} names "
                f"{(parent or 'none')[:16]}… as its parent: a turn was changed, moved or removed"
            )
        try:
            bucket = tnode.bucket_from_json(turn.bucket)
        except InvalidNodeError as exc:
            raise ProofError(f"turn {number}: not a tapes bucket ({exc.message})") from None
        if keymgmt.canonical_json(tnode.go_view(bucket, "hash")) != keymgmt.canonical_json(
            turn.bucket
        ):
            raise ProofError(f"turn {number}: the bucket is not in the form Go tapes hashes")
        hashes.append(tnode.compute_hash(bucket, parent))
    return hashes


def _when(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _check_team(team: _Team, session: str, now: int | None) -> SharedBy:
    try:
        state = keymgmt.verify_chain(team.chain, now=now)
    except keymgmt.KeymgmtError as exc:
        raise ProofError(f"team chain: {exc.message}") from None
    try:
        share = keymgmt.verify_share_made(team.share, state=state)
    except keymgmt.KeymgmtError as exc:
        raise ProofError(f"share statement: {exc.message}") from None
    try:
        key = b64d(team.leaf_id_key)
    except ValueError:
        key = b""
    if len(key) != 32 or keymgmt.node_id(key, session) != share.leaf_id:
        raise ProofError(
            f"share statement: the leaf it signs ({share.leaf_id[:16]}…) is not this session's "
            "under the key the proof reveals"
        )
    return SharedBy(
        state.team, share.sharer, _when(share.time),
        _when(share.expires_at) if share.expires_at is not None else None,
        share.epoch, len(state.statements), state.head.hash, keymgmt.safety_number(state),
    )  # fmt: skip


def verify_proof(data: bytes, *, now: int | None = None) -> ProofReport:
    """Check every byte of a proof; any failure raises :class:`ProofError` naming where."""
    proof = _parse(data)
    if not proof.turns:
        raise ProofError("the proof shows no turn")
    hashes = _turn_hashes(proof)
    if hashes[-1] != proof.session:
        raise ProofError(f"the last turn hashes to {hashes[-1]}, not to the session it names")
    shared = None if proof.team is None else _check_team(proof.team, proof.session, now)
    return ProofReport(proof.session, len(hashes), proof.turns[0].parent_hash, shared)
