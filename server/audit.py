"""The audit log: append-only and hash-chained per team (membership, shares, token abuse)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from keymgmt.audit import entry_hash
from server.db.models import ApiKey, AuditEntry, Team, TeamMember

__all__ = ["key_used", "logged_in", "record", "verify_audit_page"]

KEY_USE_EVERY = timedelta(hours=1)
"""An API key's use is logged in its team's trail at most this often (the first use always)."""


def record(
    db: Session,
    *,
    team_id: str | None,
    actor_id: str | None,
    action: str,
    subject: str,
    detail: dict[str, object],
    now: datetime,
) -> None:
    """Append one entry; the team row is locked so two writers cannot fork the hash chain."""
    prev = None
    team = None
    if team_id is not None:
        team = db.scalar(
            select(Team)
            .where(Team.id == team_id)
            .with_for_update()
            .execution_options(populate_existing=True)  # the head as of the lock, not before
        )
        prev = team.audit_head if team else None
    digest = entry_hash(prev, action=action, subject=subject, detail=detail, actor=actor_id, at=now)
    db.add(
        AuditEntry(
            team_id=team_id,
            actor_id=actor_id,
            action=action,
            subject=subject,
            detail=detail,
            prev_hash=prev,
            hash=digest,
            created_at=now,
        )
    )
    if team is not None:
        team.audit_head = digest


def logged_in(db: Session, *, user_id: str, device_id: str, device: str, now: datetime) -> None:
    """A login, in the trail of every team the account is a member of (their auditors see who
    signs in and from which named device; not the address)."""
    teams = db.scalars(
        select(TeamMember.team_id)
        .join(Team, Team.id == TeamMember.team_id)
        .where(TeamMember.user_id == user_id, TeamMember.removed_at.is_(None), Team.kind == "team")
        .order_by(TeamMember.team_id)
    )
    for team_id in teams.all():
        record(db, team_id=team_id, actor_id=user_id, action="login", subject=device_id,
               detail={"device": device}, now=now)  # fmt: skip


def key_used(db: Session, key: ApiKey, now: datetime) -> None:
    """Note an API key's use; in its team's trail on its first use and then at most hourly.

    ``key`` must have been read ``FOR UPDATE`` in this transaction, so that every request made
    with a key takes its row before the team's row, as a push does (its autoflush writes the key
    before the push locks the vault row). Two requests taking them in opposite orders
    deadlocked on PostgreSQL under a burst (tests/e2e/test_bursts.py)."""
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back the naive UTC it stored
        last = last.replace(tzinfo=now.tzinfo)
    key.last_used_at = now
    db.flush()  # the key's row is written (and stays locked) before the team's is locked
    if last is None or now - last >= KEY_USE_EVERY:
        record(db, team_id=key.team_id, actor_id=key.user_id, action="api_key_used",
               subject=key.id, detail={"name": key.name}, now=now)  # fmt: skip


def verify_audit_page(db: Session, team_id: str, page: Sequence[AuditEntry], *, last: bool) -> bool:
    """Check one page of a team's audit log in O(page): each entry's hash, each link, the link
    from the entry just before the page, and (on the last page) the team's recorded head. A
    reader who pages through the whole log has checked the whole chain."""
    if not page:
        return True
    before = db.scalar(
        select(AuditEntry.hash)
        .where(AuditEntry.team_id == team_id, AuditEntry.id < page[0].id)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    prev = before
    for entry in page:
        expected = entry_hash(
            prev, action=entry.action, subject=entry.subject, detail=entry.detail,
            actor=entry.actor_id, at=entry.created_at,
        )  # fmt: skip
        if entry.prev_hash != prev or entry.hash != expected:
            return False
        prev = entry.hash
    if not last:
        return True
    team = db.get(Team, team_id)
    return team is None or team.audit_head == prev
