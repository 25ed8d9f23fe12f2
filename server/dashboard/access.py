"""Who a browser is: one-time links, API-key sign-in, server-side sessions, CSRF tokens, and
which teams a signed-in browser may read the usage of.

- A **link** (``POST /api/v1/dashboard/links``, for ``tapes usage --open``) holds 256 random
  bits; the server keeps their SHA-256, for ``LINK_TTL``, usable once.
- An **API key** with ``read-usage`` (or ``admin``) on its vault signs in by being pasted; the
  session keeps the key's scope and ends when the key is revoked.
- A **session** is a row named by the SHA-256 of the cookie's secret, minted at each sign-in
  (a cookie the browser brought before is never adopted), ending at ``SESSION_TTL`` or sign-out.
- **CSRF**: every form carries a token derived from the cookie's secret (a session's, or before
  sign-in a random pre-session cookie's), compared in constant time; cookies are SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server import acl, audit
from server.dashboard.figures import TeamChoice
from server.db.models import ApiKey, DashboardLink, DashboardSession, Team, TeamMember, User
from server.deps import Principal, aware, token_hash
from server.errors import ApiError, Forbidden, Gone, NotFound, Unauthorized
from tapes_e2e.protocol import API_KEY_PREFIX

__all__ = [
    "BAD_KEY",
    "LINK_TTL",
    "SESSION_TTL",
    "Browser",
    "csrf_token",
    "end_session",
    "find_link",
    "mint_link",
    "readable_team",
    "readable_teams",
    "redeem_link",
    "require_csrf",
    "session_of",
    "sign_in_with_key",
]

LINK_TTL = timedelta(minutes=5)
SESSION_TTL = timedelta(hours=8)
DASHBOARD_ROLES = frozenset({"owner", "admin", "viewer"})
BAD_KEY = "this key was not accepted: paste a live tapes_… API key with the read-usage permission"
BAD_LINK = (
    "this sign-in link is not valid: it was used, it expired (links last 5 minutes) or it never "
    "existed; run `tapes usage --open` again"
)
NO_TEAM = "no such team"
_CSRF_LABEL = b"tapes-dashboard-csrf-v1\x00"


class CsrfRefused(Forbidden):
    pass


@dataclass(frozen=True, slots=True)
class Browser:
    """A signed-in browser: who, with which rights, and its CSRF token."""

    principal: Principal
    handle: str
    csrf: str


def csrf_token(secret: str) -> str:
    """The form token bound to a cookie's secret: only a page that could read the cookie's
    owner's pages (this origin) knows it."""
    return hashlib.sha256(_CSRF_LABEL + secret.encode("utf-8")).hexdigest()


def require_csrf(secret: str | None, submitted: str) -> None:
    expected = csrf_token(secret).encode("ascii") if secret else b""
    if not expected or not hmac.compare_digest(expected, submitted.encode("utf-8")):
        raise CsrfRefused(
            "this form is out of date or came from another site; reload the page and try again"
        )


def _new_session(
    db: Session, user_id: str, api_key_id: str | None, now: datetime, old: str | None
) -> str:
    """A fresh session (and its cookie secret); the browser's previous one, if any, ends."""
    if old:
        db.execute(delete(DashboardSession).where(DashboardSession.token_hash == token_hash(old)))
    db.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))
    secret = secrets.token_urlsafe(32)
    db.add(
        DashboardSession(
            token_hash=token_hash(secret), user_id=user_id, api_key_id=api_key_id,
            created_at=now, expires_at=now + SESSION_TTL,
        )
    )  # fmt: skip
    return secret


def sign_in_with_key(db: Session, api_key: str, now: datetime, old: str | None) -> str:
    """A session for a pasted read-usage key; one message for every refusal."""
    api_key = api_key.strip()
    if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
        raise Unauthorized(BAD_KEY)
    key = db.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(api_key)).with_for_update())
    if key is None or key.revoked_at is not None:
        raise Unauthorized(BAD_KEY)
    principal = _key_principal(key)
    if not principal.key_allows(key.team_id, "read-usage"):
        raise Unauthorized(BAD_KEY)
    try:
        acl.require_vault(db, principal, key.team_id, "read-usage")
    except ApiError:
        raise Unauthorized(BAD_KEY) from None
    audit.key_used(db, key, now)
    return _new_session(db, key.user_id, key.id, now, old)


def _key_principal(key: ApiKey) -> Principal:
    return Principal(
        user_id=key.user_id,
        api_key_id=key.id,
        key_vault=key.team_id,
        key_permissions=frozenset(key.permissions.split(",")),
    )


def mint_link(db: Session, principal: Principal, team: str | None, now: datetime) -> str:
    """A one-time link secret for the caller (an interactive login, not an API key)."""
    if principal.api_key_id is not None:
        raise Forbidden("API keys cannot mint sign-in links; paste the key at /dashboard instead")
    if team is not None:
        readable_team(db, principal, team)
    db.execute(delete(DashboardLink).where(DashboardLink.expires_at < now))
    secret = secrets.token_urlsafe(32)
    db.add(
        DashboardLink(
            token_hash=token_hash(secret), user_id=principal.user_id, team_id=team,
            created_at=now, expires_at=now + LINK_TTL,
        )
    )  # fmt: skip
    return secret


def find_link(db: Session, secret: str, now: datetime, *, lock: bool = False) -> DashboardLink:
    """The live link ``secret`` names, or :class:`Gone` (used, expired and unknown alike)."""
    if len(secret) > 100:
        raise Gone(BAD_LINK)
    query = select(DashboardLink).where(DashboardLink.token_hash == token_hash(secret))
    link = db.scalar(query.with_for_update() if lock else query)
    if link is None or link.used_at is not None or aware(link.expires_at) <= now:
        raise Gone(BAD_LINK)
    return link


def redeem_link(db: Session, secret: str, now: datetime, old: str | None) -> tuple[str, str | None]:
    """Spend the link: a new session's cookie secret, and the team the link names."""
    link = find_link(db, secret, now, lock=True)
    link.used_at = now
    return _new_session(db, link.user_id, None, now, old), link.team_id


def session_of(db: Session, secret: str | None, now: datetime) -> Browser | None:
    """The live session a cookie names (its key still live), or None. Only reads."""
    if not secret or len(secret) > 100:
        return None
    row = db.get(DashboardSession, token_hash(secret))
    if row is None or aware(row.expires_at) <= now:
        return None
    principal = Principal(user_id=row.user_id)
    if row.api_key_id is not None:
        key = db.get(ApiKey, row.api_key_id)
        if key is None or key.revoked_at is not None:
            return None
        principal = _key_principal(key)
    user = db.get(User, row.user_id)
    if user is None:  # pragma: no cover - sessions go with their user (ON DELETE CASCADE)
        return None
    return Browser(principal=principal, handle=user.handle, csrf=csrf_token(secret))


def end_session(db: Session, secret: str | None) -> None:
    if secret:
        db.execute(
            delete(DashboardSession).where(DashboardSession.token_hash == token_hash(secret))
        )


def _choice(team: Team, member: TeamMember, principal: Principal) -> TeamChoice:
    role = "read-usage key" if principal.api_key_id is not None else member.role
    return TeamChoice(team_id=team.id, name=team.name, kind=team.kind, role=role)


def readable_team(db: Session, principal: Principal, team_id: str) -> TeamChoice:
    """The team, if this browser may read its usage: the vault of its read-usage key, or a team
    where it is owner, admin or viewer. Anything else reads like a team that does not exist."""
    try:
        team, member = acl.require_vault(db, principal, team_id, "read-usage")
    except ApiError:
        raise NotFound(NO_TEAM) from None
    if principal.api_key_id is None and member.role not in DASHBOARD_ROLES:
        raise NotFound(NO_TEAM)
    return _choice(team, member, principal)


def readable_teams(db: Session, principal: Principal) -> list[TeamChoice]:
    """The picker: every team :func:`readable_team` allows, personal vault first."""
    rows = db.execute(
        select(Team, TeamMember)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == principal.user_id, TeamMember.removed_at.is_(None))
        .order_by(Team.kind, Team.name, Team.id)
    ).all()
    return [
        _choice(team, member, principal) for team, member in rows if _may(principal, team, member)
    ]


def _may(principal: Principal, team: Team, member: TeamMember) -> bool:
    if principal.api_key_id is not None:
        return principal.key_allows(team.id, "read-usage")
    return member.role in DASHBOARD_ROLES
