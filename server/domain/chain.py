"""The team chain as the server keeps it: the one place teams, genesis and shares lock a team
row, parse and verify signed statements, and store the statements a verified chain ends with.

Rules and SQL only (no HTTP): the controllers of ``server.domain.teams``, ``genesis`` and
``shares`` call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keymgmt import (
    ChainError,
    UnverifiedStatement,
    VerifiedTeamState,
    parse_statement,
    verify_chain,
)
from server.db.models import ChainStatement, Team, User
from server.deps import Principal
from server.errors import BadRequest, Conflict, Unauthorized
from tapes_e2e.protocol import Problem
from tapes_e2e.protocol.teams import ChainHeadOut, ChainPage, SignedWire

__all__ = [
    "MANAGERS",
    "MAX_CLOCK_SKEW",
    "calling_user",
    "chain_page",
    "head_out",
    "interactive_user",
    "lock_team",
    "parse_signed",
    "store_statements",
    "verified_state",
]

MANAGERS = frozenset({"owner", "admin"})
MAX_CLOCK_SKEW = timedelta(minutes=10)


def interactive_user(db: Session, principal: Principal, what: str) -> User:
    if principal.api_key_id is not None:
        raise Unauthorized(f"API keys cannot {what}; log in")
    user = db.get(User, principal.user_id)
    if user is None:  # pragma: no cover - a principal always has a user
        raise Unauthorized("unknown account")
    return user


def calling_user(db: Session, principal: Principal) -> User:
    user = db.get(User, principal.user_id)
    if user is None:  # pragma: no cover - a principal always has a user
        raise Unauthorized("unknown account")
    return user


def lock_team(db: Session, team_id: str) -> Team:
    """The team row under ``SELECT … FOR UPDATE``: chain, sequence and audit writers queue.

    ``populate_existing``: the ACL check loaded the row earlier in this session, and without it
    SQLAlchemy would hand back those attributes as read *before* the lock was granted, so a
    writer that waited for the lock would compare and bump a stale head.
    """
    return db.scalars(
        select(Team)
        .where(Team.id == team_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def parse_signed(wire: SignedWire, now: datetime) -> UnverifiedStatement:
    """Parse one statement; refuse one dated in the future, which would block the team's chain
    (keymgmt refuses any later statement dated before it)."""
    try:
        statement = parse_statement(msgspec.to_builtins(wire))
    except ChainError as exc:
        raise BadRequest(str(exc)) from None
    if statement.body.time > (now + MAX_CLOCK_SKEW).timestamp():
        raise BadRequest(
            f"statement {statement.body.seqno} is dated in the future; check the signer's clock"
        )
    return statement


def verified_state(db: Session, team: Team, now: datetime) -> VerifiedTeamState:
    """The team's stored chain, verified with keymgmt (it was verified when appended) at the
    server's clock ``now``."""
    rows = db.scalars(
        select(ChainStatement.statement)
        .where(ChainStatement.team_id == team.id)
        .order_by(ChainStatement.seqno)
    ).all()
    return verify_chain(rows, team=team.id, now=int(now.timestamp()))


def head_out(state: VerifiedTeamState) -> ChainHeadOut:
    return ChainHeadOut(seqno=state.head.seqno, hash=state.head.hash)


def store_statements(
    db: Session,
    team: Team,
    statements: Sequence[UnverifiedStatement],
    state: VerifiedTeamState,
    now: datetime,
) -> None:
    """Store statements that ``state`` (the chain verified through them) ends with, and move
    the vault row's head and key epoch to it in the same transaction."""
    try:
        with db.begin_nested():
            db.add_all(
                ChainStatement(
                    team_id=team.id,
                    seqno=st.body.seqno,
                    hash=st.hash,
                    statement=st.to_dict(),
                    created_at=now,
                )
                for st in statements
            )
    except IntegrityError:  # pragma: no cover - the row lock makes this a lost race only
        raise Conflict(
            "the team chain moved; fetch it, verify it and sign again",
            problem=Problem.CHAIN_MOVED,
        ) from None
    team.chain_seqno, team.chain_head = state.head.seqno, state.head.hash
    team.epoch = state.epoch


def chain_page(db: Session, team: Team, after: int) -> ChainPage:
    """The team's signed statements after seqno ``after``, with its recorded head."""
    rows = db.scalars(
        select(ChainStatement.statement)
        .where(ChainStatement.team_id == team.id, ChainStatement.seqno > after)
        .order_by(ChainStatement.seqno)
    ).all()
    return ChainPage(
        team_id=team.id,
        after=after,
        head=ChainHeadOut(seqno=team.chain_seqno, hash=team.chain_head or ""),
        statements=[msgspec.convert(row, SignedWire) for row in rows],
    )
