"""The one place that decides "may user U do X on vault V / node N".

Rules (DESIGN §8, server-enforced — the cryptography does not stop a member who holds the team
key from decrypting any ciphertext of the vault they are given; this module decides what they are
given):

- a personal vault: its owner only;
- a team vault: live members (not removed). ``viewer`` reads usage metadata only, never a blob;
  the team's usage figures are for the owner, admins and viewers;
  every other member — owner and admins included — reads the nodes they uploaded and the ancestry
  of live, unexpired shares to the team;
- an API key narrows its user's rights to one vault and its permissions;
- every denial is a 404 that reads the same whether the thing exists or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from server.db.models import NodeRecord, Share, ShareNode, Team, TeamMember
from server.deps import Principal
from server.errors import Forbidden, NotFound

__all__ = [
    "membership",
    "readable_clause",
    "require_content_key",
    "require_role",
    "require_usage",
    "require_vault",
]

_NO_VAULT = "no such vault"
READERS = frozenset({"owner", "admin", "member"})
USAGE_READERS = frozenset({"owner", "admin", "viewer"})


def membership(db: Session, user_id: str, vault: str) -> tuple[Team, TeamMember] | None:
    row = db.execute(
        select(Team, TeamMember)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(Team.id == vault, TeamMember.user_id == user_id, TeamMember.removed_at.is_(None))
    ).first()
    return None if row is None else (row[0], row[1])


def require_vault(
    db: Session, principal: Principal, vault: str, permission: str
) -> tuple[Team, TeamMember]:
    """The vault and the caller's membership, if they may ``permission`` there; else 404/403."""
    found = membership(db, principal.user_id, vault)
    if found is None or not principal.key_allows(vault, permission):
        raise NotFound(_NO_VAULT)
    _team, member = found
    if permission in ("push", "pull") and member.role not in READERS:
        raise Forbidden("this role reads usage metadata only")
    return found


def require_usage(db: Session, principal: Principal, vault: str) -> Team:
    """The vault, if the caller may read its usage: a personal vault's owner, a team's owner,
    admins and viewers (a plain member sees their own nodes, not the team's figures), and API
    keys with ``read-usage`` of such a user; 404 outside the vault, 403 for another role."""
    team, member = require_vault(db, principal, vault, "read-usage")
    if team.kind != "personal" and member.role not in USAGE_READERS:
        raise Forbidden("team usage is for owners, admins and viewers")
    return team


def require_content_key(principal: Principal, vault: str) -> None:
    """Keyrings open content: an API key fetches them only with pull or push on the vault (a
    ``read-usage`` key, for a dashboard, never holds what decrypts)."""
    if principal.api_key_id is not None and not (
        principal.key_allows(vault, "pull") or principal.key_allows(vault, "push")
    ):
        raise Forbidden("this API key reads usage only; it cannot fetch keyrings")


def require_role(
    db: Session, principal: Principal, vault: str, roles: Iterable[str]
) -> tuple[Team, TeamMember]:
    found = require_vault(db, principal, vault, "admin")
    if found[1].role not in set(roles):
        raise Forbidden("this needs an owner or admin of the team")
    return found


def readable_clause(team: Team, member: TeamMember, now: datetime) -> ColumnElement[bool]:
    """SQL condition on ``NodeRecord`` rows of ``team`` that ``member`` may read: their own
    uploads, and nodes a live share **by the node's own uploader** covers.

    A share reaches only its sharer's uploads. A member who continues a session shared with
    them and shares the continuation shares their own nodes; the original nodes stay readable
    only while their uploader's share of them is live, so an unshare or an expiry by the owner
    of a session ends the team's access to it, whatever continuations were shared since.
    """
    if team.kind == "personal":
        return NodeRecord.vault_id == team.id
    shared = exists().where(
        ShareNode.node_id == NodeRecord.node_id,
        ShareNode.share_id == Share.id,
        Share.team_id == team.id,
        Share.shared_by == NodeRecord.uploader_id,
        Share.revoked_at.is_(None),
        or_(Share.expires_at.is_(None), Share.expires_at > now),
    )
    return and_(
        NodeRecord.vault_id == team.id, or_(NodeRecord.uploader_id == member.user_id, shared)
    )
