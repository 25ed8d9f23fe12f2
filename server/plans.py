"""Plans from the RFC, enforced by the server with clear errors, and retention.

| tier | sessions / month | teams | members | retention |
|---|---|---|---|---|
| free | 100 | 1 | 3 | 30 days |
| pro | unlimited | 3 | 10 | full history |
| enterprise | unlimited | unlimited | unlimited | full history |

A *session* for the monthly count is a new conversation: a root node (no parent) pushed into a
vault the owner pays for. Retention deletes envelopes uploaded before the window; a session whose
older nodes expired keeps its newer ones, and their ancestry simply ends earlier.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server.db.models import NodeRecord, ShareNode, Team
from server.errors import PlanLimit

__all__ = ["TIERS", "Tier", "apply_retention", "check_new_sessions"]


@dataclass(frozen=True, slots=True)
class Tier:
    sessions_per_month: int | None
    teams: int | None
    members: int | None
    retention_days: int | None


TIERS: dict[str, Tier] = {
    "free": Tier(sessions_per_month=100, teams=1, members=3, retention_days=30),
    "pro": Tier(sessions_per_month=None, teams=3, members=10, retention_days=None),
    "enterprise": Tier(sessions_per_month=None, teams=None, members=None, retention_days=None),
}


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def check_new_sessions(db: Session, team: Team, new_roots: int, now: datetime) -> None:
    """Refuse a push that would start more sessions this month than the owner's plan allows."""
    tier = TIERS.get(team.tier, TIERS["free"])
    if tier.sessions_per_month is None or new_roots == 0:
        return
    owned = select(Team.id).where(Team.owner_id == team.owner_id)
    started = db.scalar(
        select(func.count())
        .select_from(NodeRecord)
        .where(
            NodeRecord.vault_id.in_(owned),
            NodeRecord.parent_id.is_(None),
            NodeRecord.uploaded_at >= _month_start(now),
        )
    )
    if (started or 0) + new_roots > tier.sessions_per_month:
        raise PlanLimit(
            f"the {team.tier} plan allows {tier.sessions_per_month} new sessions a month and "
            f"{started} were started this month; upgrade to pro for unlimited sessions"
        )


def apply_retention(db: Session, now: datetime) -> int:
    """Delete envelopes older than each vault's plan keeps; return how many were deleted."""
    deleted = 0
    for tier_name, tier in TIERS.items():
        if tier.retention_days is None:
            continue
        cutoff = now - timedelta(days=tier.retention_days)
        vaults = select(Team.id).where(Team.tier == tier_name)
        expired = select(NodeRecord.node_id).where(
            NodeRecord.vault_id.in_(vaults), NodeRecord.uploaded_at < cutoff
        )
        db.execute(delete(ShareNode).where(ShareNode.node_id.in_(expired)))
        counts = db.execute(
            select(NodeRecord.vault_id, func.count())
            .where(NodeRecord.vault_id.in_(vaults), NodeRecord.uploaded_at < cutoff)
            .group_by(NodeRecord.vault_id)
        ).all()
        for vault_id, count in counts:
            db.execute(
                update(Team).where(Team.id == vault_id).values(node_count=Team.node_count - count)
            )
            deleted += count
        db.execute(
            delete(NodeRecord).where(
                NodeRecord.vault_id.in_(vaults), NodeRecord.uploaded_at < cutoff
            )
        )
    return deleted
