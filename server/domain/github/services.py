"""The rules of binding a GitHub login to an account: no HTTP here and no call to GitHub (the
controllers hand in what :mod:`~server.domain.github.gateway` found)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server import audit
from server.db.models import GithubBind, User
from server.deps import aware
from server.errors import Conflict, NotFound
from tapes_e2e.protocol import GithubUserOut

__all__ = [
    "EXPIRED",
    "bind",
    "find_by_github",
    "forget_bind",
    "new_bind",
    "pending_bind",
    "slow_down",
]

_NO_BIND = "no such GitHub sign-in under way; start again with `tapes auth login --github`"


def new_bind(
    db: Session, user_id: str, device_code: str, interval: int, expires_in: int, now: datetime
) -> str:
    """Keep a device flow for ``user_id`` (expired ones are swept); its id for the polls."""
    db.execute(delete(GithubBind).where(GithubBind.expires_at < now))
    bind_id = secrets.token_urlsafe(32)
    db.add(
        GithubBind(
            id=bind_id, user_id=user_id, device_code=device_code, interval=interval,
            expires_at=now + timedelta(seconds=expires_in),
        )
    )  # fmt: skip
    return bind_id


def pending_bind(db: Session, user_id: str, bind_id: str, now: datetime) -> GithubBind | None:
    """The caller's own device flow, or ``None`` once it expired (it is forgotten then: raise
    :data:`EXPIRED` after this transaction commits); anybody else's reads as absent."""
    found = db.get(GithubBind, bind_id)
    if found is None or found.user_id != user_id:
        raise NotFound(_NO_BIND)
    if aware(found.expires_at) <= now:
        db.delete(found)
        return None
    return found


EXPIRED = "the GitHub code expired before it was approved; start again"


def slow_down(db: Session, bind_id: str, interval: int) -> None:
    found = db.get(GithubBind, bind_id)
    if found is not None:
        found.interval = max(found.interval + 5, interval)


def forget_bind(db: Session, bind_id: str) -> None:
    db.execute(delete(GithubBind).where(GithubBind.id == bind_id))


def bind(db: Session, user_id: str, github_id: int, login: str, now: datetime) -> GithubUserOut:
    """Record the GitHub account on the caller's account, once the device flow was approved
    (the controller forgot the flow first: GitHub grants a device code once). A GitHub account
    already bound to another account is a conflict, never moved silently. GitHub just said who
    holds ``login`` now, so another account still labelled with it (its GitHub account was
    renamed since it bound) loses that stale label: a login finds one account, the right one."""
    taken = db.scalar(select(User.id).where(User.github_id == github_id))
    if taken is not None and taken != user_id:
        raise Conflict(f"the GitHub account @{login} is bound to another account here")
    user = db.get(User, user_id)
    if user is None:  # pragma: no cover - a caller always has an account
        raise NotFound(_NO_BIND)
    stale = db.scalars(
        select(User.id).where(func.lower(User.github_login) == login.lower(), User.id != user_id)
    ).all()
    if stale:
        db.execute(update(User).where(User.id.in_(stale)).values(github_login=None))
    for other in stale:
        audit.record(
            db, team_id=None, actor_id=user_id, action="github_login_stale", subject=other,
            detail={"login": login, "now_github_id": github_id}, now=now,
        )  # fmt: skip
    user.github_id, user.github_login = github_id, login
    audit.record(
        db, team_id=None, actor_id=user_id, action="github_bound", subject=user_id,
        detail={"github_id": github_id, "login": login}, now=now,
    )  # fmt: skip
    return GithubUserOut(handle=user.handle, fingerprint=user.fingerprint, github_login=login)


def find_by_github(db: Session, login: str) -> GithubUserOut:
    """The account bound to a GitHub login (GitHub logins are case-insensitive)."""
    found = db.scalars(select(User).where(func.lower(User.github_login) == login.lower())).all()
    if len(found) != 1:  # two only if two binds raced: neither is sure, so neither is named
        raise NotFound(f"no account here is bound to the GitHub login @{login}")
    user = found[0]
    return GithubUserOut(
        handle=user.handle, fingerprint=user.fingerprint, github_login=user.github_login or login
    )
