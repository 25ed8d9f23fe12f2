"""Plans from the RFC, enforced by the server with clear errors, and retention.

Plans are the hosted service's business. A server runs in one of two modes
(``TAPES_SERVER_PLANS``):

- ``off``, the default: no plan limits and no retention; every vault is unlimited whatever its
  tier says (a team running its own server);
- ``rfc``: the RFC's tiers below, enforced on every push, team creation and member addition,
  and retention deletes what a tier no longer keeps.

| tier | sessions / month | teams | members | retention | bytes per vault |
|---|---|---|---|---|---|
| free | 100 | 1 | 3 | 30 days | 1 GiB |
| pro | unlimited | 3 | 10 | full history | 100 GiB |
| enterprise | unlimited | unlimited | unlimited | full history | unlimited |

A user's tier is their personal vault's: it counts for their own sessions, bytes and retention,
for how many teams they may own, and a team they create starts at it. A team's tier counts for
its members, the sessions and bytes pushed into it and its retention. ``tapes-server plan set``
changes either.

A *session* for the monthly count is a new conversation: a root node (no parent) pushed into a
vault the owner pays for. Retention deletes envelopes uploaded before the window; a session whose
older nodes expired keeps its newer ones, and their ancestry simply ends earlier. Everything
retention deletes is scoped by vault: node IDs are chosen by clients, so a user can push another
vault's IDs into her own and let them expire, and that must delete nothing of the other vault
(its share rows included).

The byte quota counts the stored envelopes of a vault (``Team.bytes_stored``, kept by push and
retention): a push that would pass it is refused whole with 402 and a message saying how much
the vault holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from server import audit
from server.db.models import NodeRecord, Share, ShareNode, Team, User
from server.errors import CommandError, PlanLimit

__all__ = [
    "PLANS_MODES",
    "TIERS",
    "UNLIMITED",
    "Expiry",
    "PlansMode",
    "Tier",
    "TierChange",
    "apply_retention",
    "check_bytes",
    "check_new_sessions",
    "expiring",
    "limits",
    "set_tier",
]

PlansMode = Literal["off", "rfc"]
PLANS_MODES: tuple[PlansMode, ...] = ("off", "rfc")


@dataclass(frozen=True, slots=True)
class Tier:
    sessions_per_month: int | None
    teams: int | None
    members: int | None
    retention_days: int | None
    bytes_per_vault: int | None


TIERS: dict[str, Tier] = {
    "free": Tier(
        sessions_per_month=100, teams=1, members=3, retention_days=30, bytes_per_vault=1 << 30
    ),
    "pro": Tier(
        sessions_per_month=None,
        teams=3,
        members=10,
        retention_days=None,
        bytes_per_vault=100 << 30,
    ),
    "enterprise": Tier(
        sessions_per_month=None,
        teams=None,
        members=None,
        retention_days=None,
        bytes_per_vault=None,
    ),
}


UNLIMITED = Tier(
    sessions_per_month=None, teams=None, members=None, retention_days=None, bytes_per_vault=None
)


def limits(mode: PlansMode, tier: str) -> Tier:
    """What a vault of ``tier`` may do on a server whose plans are ``mode`` (the one place that
    reads a tier: with plans off, every vault is unlimited)."""
    if mode == "off":
        return UNLIMITED
    return TIERS.get(tier, TIERS["free"])


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def check_new_sessions(
    db: Session, team: Team, new_roots: int, now: datetime, mode: PlansMode
) -> None:
    """Refuse a push that would start more sessions this month than the owner's plan allows."""
    tier = limits(mode, team.tier)
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


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_bytes(team: Team, new_bytes: int, mode: PlansMode) -> None:
    """Refuse a push that would take the vault past its plan's byte quota (402)."""
    tier = limits(mode, team.tier)
    if tier.bytes_per_vault is None or new_bytes == 0:
        return
    if team.bytes_stored + new_bytes > tier.bytes_per_vault:
        raise PlanLimit(
            f"vault {team.id} holds {_size(team.bytes_stored)} of the {team.tier} plan's "
            f"{_size(tier.bytes_per_vault)} and this push needs {_size(new_bytes)} more; "
            "delete old sessions or upgrade"
        )


def _cutoffs(mode: PlansMode, now: datetime) -> dict[str, datetime]:
    """Per tier that expires anything, the upload time before which it deletes."""
    days = {name: limits(mode, name).retention_days for name in TIERS}
    return {name: now - timedelta(days=d) for name, d in days.items() if d is not None}


@dataclass(frozen=True, slots=True)
class Expiry:
    """What retention deletes from one vault: ``envelopes`` uploaded before ``cutoff``."""

    vault_id: str
    slug: str
    kind: str
    tier: str
    cutoff: datetime
    envelopes: int
    held: bool = False  # on legal hold: kept, whatever the plan says


def expiring(db: Session, now: datetime, mode: PlansMode) -> list[Expiry]:
    """Per vault, what ``apply_retention`` would delete now (nothing when plans are off); a
    vault on legal hold is listed even when none of it is past its plan yet."""
    found: list[Expiry] = []
    for tier_name, cutoff in _cutoffs(mode, now).items():
        rows = db.execute(
            select(Team.id, Team.slug, Team.kind, Team.legal_hold, func.count())
            .join(NodeRecord, NodeRecord.vault_id == Team.id)
            .where(Team.tier == tier_name, NodeRecord.uploaded_at < cutoff)
            .group_by(Team.id, Team.slug, Team.kind, Team.legal_hold)
            .order_by(Team.slug)
        ).all()
        found += [
            Expiry(v, slug, kind, tier_name, cutoff, n, held) for v, slug, kind, held, n in rows
        ]
        listed = {row[0] for row in rows}
        held_rows = db.execute(
            select(Team.id, Team.slug, Team.kind)
            .where(Team.tier == tier_name, Team.legal_hold.is_(True))
            .order_by(Team.slug)
        ).all()
        found += [
            Expiry(v, slug, kind, tier_name, cutoff, 0, held=True)
            for v, slug, kind in held_rows
            if v not in listed
        ]
    return found


def apply_retention(db: Session, now: datetime, mode: PlansMode) -> int:
    """Delete envelopes older than each vault's plan keeps, except in vaults on legal hold;
    return how many were deleted."""
    deleted = 0
    for tier_name, cutoff in _cutoffs(mode, now).items():
        vaults = select(Team.id).where(Team.tier == tier_name, Team.legal_hold.is_(False))
        stale_shares = (
            select(ShareNode.share_id, ShareNode.node_id)
            .join(Share, Share.id == ShareNode.share_id)
            .join(
                NodeRecord,
                and_(NodeRecord.vault_id == Share.team_id, NodeRecord.node_id == ShareNode.node_id),
            )
            .where(Share.team_id.in_(vaults), NodeRecord.uploaded_at < cutoff)
        )
        db.execute(
            delete(ShareNode).where(tuple_(ShareNode.share_id, ShareNode.node_id).in_(stale_shares))
        )
        counts = db.execute(
            select(NodeRecord.vault_id, func.count(), func.sum(func.length(NodeRecord.envelope)))
            .where(NodeRecord.vault_id.in_(vaults), NodeRecord.uploaded_at < cutoff)
            .group_by(NodeRecord.vault_id)
        ).all()
        for vault_id, count, size in counts:
            db.execute(
                update(Team)
                .where(Team.id == vault_id)
                .values(
                    node_count=Team.node_count - count,
                    bytes_stored=Team.bytes_stored - int(size or 0),
                )
            )
            deleted += count
        db.execute(
            delete(NodeRecord).where(
                NodeRecord.vault_id.in_(vaults), NodeRecord.uploaded_at < cutoff
            )
        )
    return deleted


@dataclass(frozen=True, slots=True)
class TierChange:
    kind: str  # user | team
    name: str
    old: str
    new: str


def _vault_named(db: Session, name: str) -> tuple[str, str, Team] | None:
    """(kind, name, vault) for ``user:HANDLE``, ``team:SLUG`` (or team id), or either bare
    when only one of them matches."""
    prefix, _, rest = name.partition(":")
    kinds, wanted = ({prefix}, rest) if prefix in ("user", "team") else ({"user", "team"}, name)
    found: list[tuple[str, str, Team]] = []
    if "user" in kinds:
        user = db.scalar(select(User).where(User.handle == wanted))
        if user is not None:
            found.append(("user", wanted, db.get_one(Team, user.personal_vault)))
    if "team" in kinds:
        team = db.scalar(
            select(Team).where(Team.kind == "team", (Team.slug == wanted) | (Team.id == wanted))
        )
        if team is not None:
            found.append(("team", wanted, team))
    if len(found) > 1:
        raise CommandError(f"{name!r} is both a user and a team: write user:{name} or team:{name}")
    return found[0] if found else None


def set_tier(db: Session, name: str, tier: str, now: datetime) -> TierChange:
    """Set the tier of a user (their personal vault) or of a team, and audit it."""
    if tier not in TIERS:
        raise CommandError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
    found = _vault_named(db, name)
    if found is None:
        raise CommandError(f"no user or team is called {name!r}")
    kind, wanted, team = found
    old = team.tier
    audit.record(
        db, team_id=team.id, actor_id=None, action="plan_changed", subject=team.id,
        detail={"from": old, "to": tier}, now=now,
    )  # fmt: skip
    team.tier = tier
    return TierChange(kind=kind, name=wanted, old=old, new=tier)
