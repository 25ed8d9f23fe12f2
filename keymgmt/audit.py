"""The server's audit log, as both the server and clients compute it.

Each entry's hash covers the one before it (``entry_hash``), so the log is a hash chain per
team. The server signs the head it serves with its own Ed25519 key (``sign_audit_head``) over
``"…/audit-head-signature" ‖ lp(team) ‖ u64(entry id) ‖ lp(head hash)``; a client pins that key
on first use and the last head it saw, and on every read checks that the log still holds that
head and extends it. A server that drops, reorders, edits or truncates entries a client has
seen cannot produce a log that passes, whatever it signs afterwards.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from keymgmt import _primitives as prim
from keymgmt import labels
from keymgmt._encoding import lp, u64

__all__ = [
    "audit_head_message",
    "entry_hash",
    "server_public_key",
    "sign_audit_head",
    "verify_audit_head",
]


def entry_hash(
    prev: str | None,
    *,
    action: str,
    subject: str,
    detail: dict[str, object],
    actor: str | None,
    at: datetime,
) -> str:
    """The hash of one audit entry after ``prev``. A naive ``at`` is UTC (SQLite hands stored
    stamps back naive): the same instant hashes the same either way."""
    moment = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    body = json.dumps(
        [prev, action, subject, detail, actor, moment.isoformat()], sort_keys=True, default=str
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def audit_head_message(team: str, entry_id: int, head: str) -> bytes:
    return labels.AUDIT_HEAD_SIGNATURE + lp(team.encode()) + u64(entry_id) + lp(head.encode())


def server_public_key(seed: bytes) -> bytes:
    """The server's Ed25519 public key for its 32-byte signing seed."""
    return prim.ed25519_public_from_seed(seed)


def sign_audit_head(seed: bytes, team: str, entry_id: int, head: str) -> bytes:
    """The server's signature over ``team``'s audit head: the last entry's id and hash."""
    return prim.ed25519_sign(seed, audit_head_message(team, entry_id, head))


def verify_audit_head(public: bytes, team: str, entry_id: int, head: str, signature: bytes) -> bool:
    """Whether the server key ``public`` signed this head. Never raises: False."""
    try:
        return prim.ed25519_verify(public, audit_head_message(team, entry_id, head), signature)
    except (ValueError, UnicodeEncodeError):
        return False
