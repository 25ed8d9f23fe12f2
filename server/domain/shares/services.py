"""The rules of shared sessions, no HTTP (the routes are described in ``controllers``).

A share is verified against the team's chain and materialized into ``share_nodes`` by one
recursive walk through what its sharer may read, parents older than children; an unshare or an
expiry ends it at once; a read through a share is audited.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, CursorResult, and_, insert, literal, or_, select
from sqlalchemy.orm import Session

from keymgmt import ShareError, verify_share
from server import acl, audit
from server.db.models import NodeRecord, Share, ShareNode, Team, TeamMember, User
from server.deps import Principal, aware
from server.domain.chain import MANAGERS, lock_team, verified_state
from server.errors import BadRequest, Conflict, Forbidden, NotFound
from tapes_e2e.protocol import Problem
from tapes_e2e.protocol.teams import ShareCreate, ShareOut, SharePage, SignedWire

__all__ = [
    "MAX_PAGE",
    "record_shared_read",
    "share_session",
    "shared_with_caller",
    "team_shares",
    "unshare_session",
]

MAX_PAGE = 1000
_NO_NODE = "no such node"  # the same words as the nodes endpoints
_NO_SHARE = "no such share"


def record_shared_read(
    db: Session, principal: Principal, record: NodeRecord, now: datetime
) -> None:
    """Audit a read of a node that reached the caller through a share (not their own upload).

    Call it once per request with the first node served (``GET /nodes/{id}``, ancestry,
    session); reads of one's own uploads are not audited.
    """
    if record.uploader_id == principal.user_id:
        return
    team = db.get(Team, record.vault_id)
    if team is None or team.kind != "team":
        return
    lock_team(db, team.id)
    audit.record(
        db, team_id=team.id, actor_id=principal.user_id, action="shared_session_read",
        subject=record.node_id, detail={"api_key": principal.api_key_id}, now=now,
    )  # fmt: skip


def _live(now: datetime) -> ColumnElement[bool]:
    return and_(Share.revoked_at.is_(None), or_(Share.expires_at.is_(None), Share.expires_at > now))


def _out(share: Share, sharer: str) -> ShareOut:
    return ShareOut(
        share_id=share.id,
        team_id=share.team_id,
        session_id=share.session_id,
        shared_by=share.shared_by,
        sharer=sharer,
        seq=share.seq,
        shared_at=aware(share.shared_at).isoformat(),
        expires_at=aware(share.expires_at).isoformat() if share.expires_at else None,
        statement=msgspec.convert(share.statement, SignedWire),
    )


def _expiry(data: ShareCreate, signed: int | None, now: datetime) -> datetime | None:
    """The server-enforced expiry: the signed one, or the body's; both must agree if given."""
    try:
        from_statement = datetime.fromtimestamp(signed, UTC) if signed is not None else None
    except (OverflowError, OSError, ValueError):
        raise BadRequest("the signed share's expires_at is not a valid time") from None
    try:  # year 1 east of UTC, or 9999 west of it, is outside the calendar once in UTC
        given = data.expires_at.astimezone(UTC) if data.expires_at is not None else None
    except OverflowError:
        raise BadRequest("expires_at is outside the years 1 to 9999 in UTC") from None
    if given is not None and from_statement is not None and given != from_statement:
        raise BadRequest("expires_at differs from the expiry in the signed share")
    expires = given or from_statement
    if expires is not None and expires <= now:
        raise BadRequest("expires_at is in the past")
    return expires


def _materialize(
    db: Session, share_id: str, team: Team, member: TeamMember, leaf: str, now: datetime
) -> int:
    """Insert the leaf's ancestry into ``share_nodes`` with one recursive query.

    The walk goes only through nodes the sharer may read (their own uploads, or nodes already
    in a live share of the team) and stops at the first other one.
    """
    readable = acl.readable_clause(team, member, now)
    anc = (
        select(NodeRecord.node_id, NodeRecord.parent_id, NodeRecord.seq)
        .where(NodeRecord.vault_id == team.id, NodeRecord.node_id == leaf, readable)
        .cte("share_anc", recursive=True)
    )
    anc = anc.union_all(
        select(NodeRecord.node_id, NodeRecord.parent_id, NodeRecord.seq)
        .join(anc, and_(NodeRecord.vault_id == team.id, NodeRecord.node_id == anc.c.parent_id))
        .where(readable, NodeRecord.seq < anc.c.seq)  # parents are older: no walk can loop
    )
    result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
        insert(ShareNode).from_select(
            ["share_id", "node_id"], select(literal(share_id), anc.c.node_id)
        )
    )
    return result.rowcount


def share_session(
    db: Session, principal: Principal, session_id: str, data: ShareCreate, now: datetime
) -> ShareOut:
    team, member = acl.require_vault(db, principal, data.team, "push")
    if team.kind != "team":
        raise BadRequest("sessions are shared with a team vault, not a personal one")
    leaf = db.scalar(
        select(NodeRecord.node_id).where(
            NodeRecord.vault_id == team.id,
            NodeRecord.node_id == session_id,
            NodeRecord.uploader_id == principal.user_id,
        )
    )
    if leaf is None:
        raise NotFound(_NO_NODE)
    sharer = db.get(User, principal.user_id)
    if sharer is None:  # pragma: no cover - a principal always has a user
        raise NotFound(_NO_NODE)
    team = lock_team(db, team.id)
    state = verified_state(db, team, now)
    try:
        verified = verify_share(
            msgspec.to_builtins(data.statement), state=state, now=int(now.timestamp())
        )
    except ShareError as exc:
        raise BadRequest(f"the share does not verify: {exc}") from None
    if verified.sharer != sharer.fingerprint:
        raise BadRequest("the share is not signed by your identity")
    if verified.leaf_id != session_id:
        raise BadRequest("the share names another session than the path")
    if not 1 <= verified.epoch <= state.epoch:
        raise BadRequest(f"the share's epoch {verified.epoch} is not one of the team's epochs")
    expires = _expiry(data, verified.expires_at, now)
    live = select(Share.id).where(
        Share.team_id == team.id, Share.session_id == session_id, _live(now)
    )
    if db.scalar(live) is not None:
        raise Conflict(
            "this session is already shared with the team; unshare it first",
            problem=Problem.ALREADY_SHARED,
        )
    team.head_seq += 1
    share = Share(
        id=str(uuid.uuid4()), team_id=team.id, session_id=session_id, shared_by=sharer.id,
        statement=msgspec.to_builtins(data.statement), seq=team.head_seq, shared_at=now,
        expires_at=expires,
    )  # fmt: skip
    db.add(share)
    db.flush()
    nodes = _materialize(db, share.id, team, member, session_id, now)
    audit.record(
        db, team_id=team.id, actor_id=sharer.id, action="session_shared", subject=session_id,
        detail={"share_id": share.id, "nodes": nodes}, now=now,
    )  # fmt: skip
    return _out(share, sharer.fingerprint)


def unshare_session(
    db: Session, principal: Principal, session_id: str, team_id: str, now: datetime
) -> None:
    _team, member = acl.require_vault(db, principal, team_id, "push")
    lock_team(db, team_id)  # before the share rows, in the order every writer takes them
    shares = db.scalars(
        select(Share).where(Share.team_id == team_id, Share.session_id == session_id, _live(now))
    ).all()
    if not shares:
        raise NotFound(_NO_SHARE)
    if member.role not in MANAGERS and any(s.shared_by != principal.user_id for s in shares):
        raise Forbidden("only the member who shared it or an owner or admin can unshare it")
    for share in shares:
        share.revoked_at = now
        audit.record(
            db, team_id=team_id, actor_id=principal.user_id, action="session_unshared",
            subject=session_id, detail={"share_id": share.id}, now=now,
        )  # fmt: skip


def _listing(
    db: Session, teams: list[str], now: datetime, after: int, limit: int
) -> list[ShareOut]:
    rows = db.execute(
        select(Share, User.fingerprint)
        .join(User, User.id == Share.shared_by)
        .where(Share.team_id.in_(teams), _live(now), Share.seq > after)
        .order_by(Share.team_id, Share.seq)
        .limit(limit)
    ).all()
    return [_out(share, fingerprint) for share, fingerprint in rows]


def shared_with_caller(
    db: Session, principal: Principal, now: datetime, limit: int
) -> list[ShareOut]:
    """Live shares of every team the caller reads content in, by team and sequence."""
    rows = db.execute(
        select(Team.id)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(
            TeamMember.user_id == principal.user_id,
            TeamMember.removed_at.is_(None),
            TeamMember.role.in_(acl.READERS),
            Team.kind == "team",
        )
    ).scalars()
    teams = [t for t in rows if principal.key_allows(t, "pull")]
    return _listing(db, teams, now, 0, limit)


def team_shares(
    db: Session, principal: Principal, team_id: str, now: datetime, after: int, limit: int
) -> SharePage:
    """The sessions shared with one team (the RFC's ``SharedSessions``), by share sequence."""
    team, _member = acl.require_vault(db, principal, team_id, "pull")
    items = _listing(db, [team.id], now, after, limit + 1)
    page = items[:limit]
    return SharePage(items=page, cursor=page[-1].seq if page else after, more=len(items) > limit)
