"""Team vaults' rules and SQL: the signed chain's effects on members and keyrings, invites,
join requests and team creation. No HTTP here; ``server.domain.teams.controllers`` calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keymgmt import (
    ChainError,
    UnverifiedStatement,
    extend_chain,
    verify_chain,
)
from keymgmt.chain import StatementBody
from server import acl, audit
from server.db.models import (
    Invite,
    JoinRequest,
    RetiredKey,
    Share,
    Team,
    TeamMember,
    User,
)
from server.deps import (
    Principal,
    aware,
)
from server.domain.chain import (
    MANAGERS,
    calling_user,
    head_out,
    interactive_user,
    lock_team,
    parse_signed,
    store_statements,
    verified_state,
)
from server.domain.keyrings import check_keyring, drop_keyrings, store_keyring
from server.errors import (
    BadRequest,
    Conflict,
    Gone,
    NotFound,
    PlanLimit,
)
from server.plans import PlansMode, limits
from tapes_e2e.protocol import Problem
from tapes_e2e.protocol.teams import (
    ChainHeadOut,
    InviteOut,
    JoinRequestOut,
    JoinRequestWire,
    MemberOut,
    SignedWire,
    TeamCreate,
    TeamCreated,
)

__all__ = [
    "MAX_INVITE_TTL",
    "MAX_PAGE",
    "NO_INVITE",
    "append_statements",
    "check_member_limit",
    "check_team_limit",
    "create_new_team",
    "invite_out",
    "invite_usable",
    "join_out",
    "leave",
    "members_out",
    "team_manager",
    "team_member",
]

MAX_INVITE_TTL = timedelta(days=30)
MAX_PAGE = 1000
_NO_VAULT = "no such vault"  # the same words as server.acl, whatever the reason
NO_INVITE = "no such invite"
_to_builtins = msgspec.to_builtins


# --- access ----------------------------------------------------------------------------------


def team_member(db: Session, principal: Principal, team_id: str) -> tuple[Team, TeamMember]:
    """Any live member of a team vault, viewers included (an API key must be scoped to it)."""
    found = acl.membership(db, principal.user_id, team_id)
    scoped = principal.api_key_id is None or principal.key_vault == team_id
    if found is None or not scoped:
        raise NotFound(_NO_VAULT)
    if found[0].kind != "team":
        raise BadRequest("a personal vault has no team chain, keyrings or invites")
    return found


def team_manager(db: Session, principal: Principal, team_id: str) -> tuple[Team, TeamMember]:
    found = acl.require_role(db, principal, team_id, MANAGERS)
    if found[0].kind != "team":
        raise BadRequest("a personal vault has no team chain, keyrings or invites")
    return found


# --- the chain -------------------------------------------------------------------------------


def _live_members(db: Session, team_id: str) -> int:
    count = db.scalar(
        select(func.count())
        .select_from(TeamMember)
        .where(TeamMember.team_id == team_id, TeamMember.removed_at.is_(None))
    )
    return count or 0


def check_member_limit(db: Session, team: Team, mode: PlansMode) -> None:
    limit = limits(mode, team.tier).members
    if limit is not None and _live_members(db, team.id) >= limit:
        raise PlanLimit(
            f"the {team.tier} plan allows {limit} members per team and this team has {limit}; "
            "upgrade the plan or remove a member first"
        )


def _user_by_fingerprint(db: Session, body: StatementBody) -> User:
    """The account a statement's member names: by its key, or by a key it rotated away from
    (the removal of a member who left before rotating still names the old one)."""
    user = db.scalar(select(User).where(User.fingerprint == body.member))
    if user is None:
        user = db.scalar(
            select(User).join(RetiredKey, RetiredKey.user_id == User.id)
            .where(RetiredKey.fingerprint == body.member)
        )  # fmt: skip
    if user is None:
        raise NotFound(f"no registered user has the fingerprint {body.member}")
    return user


def _add(db: Session, team: Team, body: StatementBody, now: datetime, mode: PlansMode) -> str:
    user = _user_by_fingerprint(db, body)
    keys = body.member_keys
    if keys is None or (keys.x25519, keys.ed25519) != (user.x25519.hex(), user.ed25519.hex()):
        raise BadRequest("the statement's member keys are not the keys that user registered")
    check_member_limit(db, team, mode)
    if body.invite_id is not None:
        _use_invite(db, team, body, user, now)
    row = db.get(TeamMember, (team.id, user.id))
    role = body.role or "member"
    if row is None:
        db.add(TeamMember(team_id=team.id, user_id=user.id, role=role, joined_at=now))
    else:
        row.role, row.joined_at, row.removed_at = role, now, None
    db.flush()
    return user.id


def _remove(db: Session, team: Team, body: StatementBody, now: datetime) -> str:
    user = _user_by_fingerprint(db, body)
    row = db.get(TeamMember, (team.id, user.id))
    if row is not None:
        row.removed_at, row.left_at = now, None
    _end_access(db, team.id, user, now)
    return user.id


def _end_access(db: Session, team_id: str, user: User, now: datetime) -> None:
    """What the server stops serving someone who is out of the team (removed, or left): the
    keyrings sealed to them, and their live shares (clients refuse shares whose sharer left)."""
    drop_keyrings(db, team_id, user.fingerprint)
    db.execute(
        update(Share)
        .where(Share.team_id == team_id, Share.shared_by == user.id, Share.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _change_role(db: Session, team: Team, body: StatementBody) -> str:
    user = _user_by_fingerprint(db, body)
    row = db.get(TeamMember, (team.id, user.id))
    if row is not None and body.role is not None:
        row.role = body.role
        if body.role not in acl.READERS:
            drop_keyrings(db, team.id, user.fingerprint)
    return user.id


def _apply(
    db: Session,
    team: Team,
    statement: UnverifiedStatement,
    actor: User,
    now: datetime,
    mode: PlansMode,
) -> None:
    """Make the rows follow one verified statement, and audit it."""
    body = statement.body
    detail: dict[str, object] = {"seqno": body.seqno, "epoch": body.epoch}
    subject = body.member or team.id
    if body.action == "add":
        detail |= {"user_id": _add(db, team, body, now, mode), "role": body.role}
        detail |= {"invite_id": body.invite_id} if body.invite_id else {}
    elif body.action == "remove":
        detail["user_id"] = _remove(db, team, body, now)
    elif body.action == "change_role":
        detail |= {"user_id": _change_role(db, team, body), "role": body.role}
    elif body.action == "change_policy":
        detail |= {"metadata_policy": body.metadata_policy, "content_policy": body.content_policy}
    action = {
        "add": "member_added",
        "remove": "member_removed",
        "change_role": "member_role_changed",
        "rotate": "epoch_rotated",
        "change_policy": "policy_changed",
    }.get(body.action, body.action)
    audit.record(
        db, team_id=team.id, actor_id=actor.id, action=action, subject=subject,
        detail={k: v for k, v in detail.items() if v is not None}, now=now,
    )  # fmt: skip


def append_statements(
    db: Session,
    principal: Principal,
    team_id: str,
    expected_head_seqno: int,
    wires: Sequence[SignedWire],
    now: datetime,
    *,
    plans_mode: PlansMode,
    action: str | None = None,
    member: User | None = None,
) -> ChainHeadOut:
    """Append signed statements with compare-and-swap on the head; rows follow the chain.

    ``action``/``member`` restrict the append to one statement of that action naming that user
    (the RFC's members endpoints).
    """
    team_manager(db, principal, team_id)
    actor = calling_user(db, principal)
    statements = [parse_signed(wire, now) for wire in wires]
    for st in statements:
        if st.body.signer != actor.fingerprint:
            raise BadRequest(f"statement {st.body.seqno} is not signed by your identity")
        if action is not None and st.body.action != action:
            raise BadRequest(f"this endpoint takes one '{action}' statement")
        if member is not None and st.body.member != member.fingerprint:
            raise BadRequest("the statement names another member than the path")
        if st.body.action == "rekey":
            raise BadRequest(
                "a key rotation is recorded in every vault at once: POST /auth/rekey "
                "(tapes keys rotate)"
            )
    team = lock_team(db, team_id)
    if team.chain_seqno != expected_head_seqno:
        raise Conflict(
            f"the team chain moved: its head is {team.chain_seqno}, not {expected_head_seqno}; "
            "fetch it, verify it and sign again",
            problem=Problem.CHAIN_MOVED,
        )
    try:
        state = verified_state(db, team, now)
        extended = extend_chain(state, statements, now=int(now.timestamp()))
    except ChainError as exc:
        raise BadRequest(f"the team chain refuses this statement: {exc}") from None
    for st in statements:
        _apply(db, team, st, actor, now, plans_mode)
    store_statements(db, team, statements, extended, now)
    return head_out(extended)


# --- invites ---------------------------------------------------------------------------------


def _use_invite(db: Session, team: Team, body: StatementBody, user: User, now: datetime) -> None:
    """Approval of a join request: the ``add`` names the invite; it becomes used (once)."""
    invite = db.scalar(select(Invite).where(Invite.id == body.invite_id).with_for_update())
    if invite is None or invite.team_id != team.id:
        raise NotFound(NO_INVITE)
    invite_usable(invite, now)
    if body.role != invite.role:
        raise BadRequest(f"the invite is for the role {invite.role!r}, not {body.role!r}")
    requests = db.scalars(
        select(JoinRequest).where(
            JoinRequest.invite_id == invite.id, JoinRequest.status == "pending"
        )
    ).all()
    if not any(r.user_id == user.id for r in requests):
        raise BadRequest("that user has no pending join request for this invite")
    invite.used_at = now
    for request in requests:
        request.status = "approved" if request.user_id == user.id else "rejected"


def invite_usable(invite: Invite, now: datetime) -> None:
    if invite.used_at is not None:
        raise Conflict("this invite was already used; ask for a new one")
    if aware(invite.expires_at) <= now:
        raise Gone("this invite expired; ask for a new one")


def invite_out(invite: Invite) -> InviteOut:
    return InviteOut(
        invite_id=invite.id,
        team_id=invite.team_id,
        role=invite.role,
        expires_at=aware(invite.expires_at).isoformat(),
        used=invite.used_at is not None,
    )


def join_out(request: JoinRequest, invite: Invite, user: User) -> JoinRequestOut:
    return JoinRequestOut(
        request_id=request.id,
        invite_id=invite.id,
        role=invite.role,
        user_id=user.id,
        fingerprint=user.fingerprint,
        status=request.status,
        created_at=aware(request.created_at).isoformat(),
        request=msgspec.convert(request.request, JoinRequestWire),
        handle=user.handle,
    )


def members_out(db: Session, team_id: str) -> list[MemberOut]:
    """The team's members with their handles, by role then handle: the live ones, and those
    who left and still wait for their signed removal (``left_at``)."""
    rows = db.execute(
        select(TeamMember.role, TeamMember.left_at, User)
        .join(User, User.id == TeamMember.user_id)
        .where(
            TeamMember.team_id == team_id,
            or_(TeamMember.removed_at.is_(None), TeamMember.left_at.is_not(None)),
        )
        .order_by(TeamMember.role, User.handle)
    ).all()
    return [
        MemberOut(
            user_id=u.id, handle=u.handle, fingerprint=u.fingerprint, role=role,
            left_at=aware(left).isoformat() if left is not None else None,
            github_login=u.github_login,
        )
        for role, left, u in rows
    ]  # fmt: skip


def leave(db: Session, principal: Principal, team_id: str, now: datetime) -> None:
    """The caller leaves: the server stops serving them this team at once (no pull, push,
    keyrings or shares of theirs) and lists them as leaving, until an owner or admin signs
    their removal, which starts the new key epoch. The last owner cannot leave."""
    user = interactive_user(db, principal, "leave a team")
    team, member = team_member(db, principal, team_id)
    lock_team(db, team.id)  # two owners leaving at once: the second counts after the first
    if member.role == "owner":
        owners = db.scalar(
            select(func.count()).where(
                TeamMember.team_id == team.id,
                TeamMember.role == "owner",
                TeamMember.removed_at.is_(None),
            )
        )
        if owners == 1:
            raise Conflict("you are the team's only owner: make another member owner first")
    member.removed_at, member.left_at = now, now
    _end_access(db, team.id, user, now)
    audit.record(
        db, team_id=team.id, actor_id=user.id, action="member_left", subject=user.id,
        detail={"role": member.role}, now=now,
    )  # fmt: skip


def check_team_limit(db: Session, owner: User, mode: PlansMode) -> str:
    """The owner's plan (their personal vault's tier), if it allows one more team."""
    personal = lock_team(db, owner.personal_vault)  # two creations at once count one by one
    limit = limits(mode, personal.tier).teams
    owned = db.scalar(
        select(func.count()).select_from(Team).where(Team.owner_id == owner.id, Team.kind == "team")
    )
    if limit is not None and (owned or 0) >= limit:
        raise PlanLimit(
            f"the {personal.tier} plan allows {limit} team(s) per owner and you own {owned}; "
            "upgrade to create more"
        )
    return personal.tier


def create_new_team(
    db: Session, principal: Principal, data: TeamCreate, now: datetime, mode: PlansMode
) -> TeamCreated:
    owner = interactive_user(db, principal, "create teams")
    statement = parse_signed(data.statement, now)
    try:
        state = verify_chain([statement], team=data.team_id, now=int(now.timestamp()))
    except ChainError as exc:
        raise BadRequest(f"the genesis statement does not verify: {exc}") from None
    if statement.body.signer != owner.fingerprint:
        raise BadRequest("the genesis statement is not signed by your identity")
    keyring = check_keyring(data.keyring, state, owner.fingerprint)
    if db.get(Team, data.team_id) is not None:
        raise Conflict(f"the team id {data.team_id!r} is taken; pick another")
    if db.scalar(select(Team.id).where(Team.slug == data.slug)) is not None:
        raise Conflict(f"the slug {data.slug!r} is taken; pick another")
    tier_name = check_team_limit(db, owner, mode)
    team = Team(
        id=data.team_id, name=data.name, slug=data.slug, kind="team", owner_id=owner.id,
        tier=tier_name, head_seq=0, node_count=0, chain_seqno=-1,
        chain_head=state.head.hash, epoch=state.epoch, created_at=now,
    )  # fmt: skip
    try:
        with db.begin_nested():
            db.add(team)
            db.flush()
    except IntegrityError:
        raise Conflict("the team id or slug was just taken; pick another") from None
    db.add(TeamMember(team_id=team.id, user_id=owner.id, role="owner", joined_at=now))
    store_statements(db, team, [statement], state, now)
    store_keyring(db, team.id, keyring, now)
    audit.record(
        db, team_id=team.id, actor_id=owner.id, action="team_created", subject=team.id,
        detail={"slug": team.slug, "tier": team.tier}, now=now,
    )  # fmt: skip
    return TeamCreated(
        team_id=team.id, name=team.name, slug=team.slug, tier=team.tier, head=head_out(state)
    )
