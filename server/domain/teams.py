"""Team vaults: creation, the signed chain, members, keyrings, invites, join requests, audit.

The server never changes membership on its own: every change is a statement signed by an owner
or admin (``keymgmt`` verifies it here too, as defence in depth — clients verify again), and the
``team_members`` rows only follow the verified chain.

- ``POST /api/v1/teams`` — create a team from the client's genesis statement and the owner's
  epoch-1 keyring. Plans: the owner's plan (their personal vault's tier) caps the teams they own.
- ``GET /api/v1/teams/{id}/chain?after=`` — statements after a seqno (any live member).
- ``POST /api/v1/teams/{id}/chain`` — append with compare-and-swap on ``expected_head_seqno``:
  409 if the head moved, 400 if keymgmt refuses a statement, 404 if an ``add`` names no
  registered user, 402 over the plan's member limit.
- ``POST /api/v1/teams/{id}/members`` — the same append for one signed ``add`` statement.
- ``DELETE /api/v1/teams/{id}/members/{uid}?expected_head_seqno=&statement_body=&signature=`` —
  the same append for one signed ``remove`` statement naming that user. Query parameters, not a
  body, because DELETE bodies are dropped by some proxies and clients.
- ``POST|GET /api/v1/teams/{id}/keyrings`` — admins upload an epoch's sealed keyring (recipients
  must be exactly the content readers at the keyring's chain position, all still readers now);
  members fetch the keyrings sealed to them. Viewers never appear as recipients.
- ``POST /api/v1/teams/{id}/invite`` — store an invite's id, role and expiry (never the secret).
- ``POST /api/v1/invites/{invite_id}/join`` — store the invitee's join request for the admins.
- ``GET /api/v1/teams/{id}/join-requests`` — admins; approval is the chain append of the signed
  ``add`` carrying the invite id, which marks the invite used (single use).
- ``GET /api/v1/teams/{id}/audit`` — owners and admins: entries and whether the chain verifies.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec
from litestar import Controller
from litestar.params import JSONBody, Parameter
from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update
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
    AuditEntry,
    ChainStatement,
    Invite,
    JoinRequest,
    Keyring,
    Share,
    Team,
    TeamMember,
    User,
)
from server.deps import (
    AUTHENTICATED,
    NowDep,
    PlansDep,
    Principal,
    PrincipalDep,
    SessionDep,
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
from server.domain.keyrings import check_keyring, keyrings_for, store_keyring
from server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PlanLimit,
)
from server.openapi import AfterSeqno, TeamPath, delete, get, post
from server.plans import PlansMode, limits
from tapes_e2e.protocol import Problem
from tapes_e2e.protocol.teams import (
    AuditEntryOut,
    AuditPage,
    ChainAppend,
    ChainHeadOut,
    ChainPage,
    InviteCreate,
    InviteOut,
    JoinRequestOut,
    JoinRequestWire,
    JoinResult,
    KeyringOut,
    KeyringUpload,
    KeyringUploaded,
    MemberAdd,
    SignedWire,
    TeamCreate,
    TeamCreated,
)

__all__ = [
    "InviteController",
    "TeamController",
    "append_statements",
    "create_team",
]

MAX_INVITE_TTL = timedelta(days=30)
MAX_PAGE = 1000
_NO_VAULT = "no such vault"  # the same words as server.acl, whatever the reason
_NO_INVITE = "no such invite"
_to_builtins = msgspec.to_builtins


# --- access ----------------------------------------------------------------------------------


def _team_member(db: Session, principal: Principal, team_id: str) -> tuple[Team, TeamMember]:
    """Any live member of a team vault, viewers included (an API key must be scoped to it)."""
    found = acl.membership(db, principal.user_id, team_id)
    scoped = principal.api_key_id is None or principal.key_vault == team_id
    if found is None or not scoped:
        raise NotFound(_NO_VAULT)
    if found[0].kind != "team":
        raise BadRequest("a personal vault has no team chain, keyrings or invites")
    return found


def _team_manager(db: Session, principal: Principal, team_id: str) -> tuple[Team, TeamMember]:
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


def _check_member_limit(db: Session, team: Team, mode: PlansMode) -> None:
    limit = limits(mode, team.tier).members
    if limit is not None and _live_members(db, team.id) >= limit:
        raise PlanLimit(
            f"the {team.tier} plan allows {limit} members per team and this team has {limit}; "
            "upgrade the plan or remove a member first"
        )


def _user_by_fingerprint(db: Session, body: StatementBody) -> User:
    user = db.scalar(select(User).where(User.fingerprint == body.member))
    if user is None:
        raise NotFound(f"no registered user has the fingerprint {body.member}")
    return user


def _add(db: Session, team: Team, body: StatementBody, now: datetime, mode: PlansMode) -> str:
    user = _user_by_fingerprint(db, body)
    keys = body.member_keys
    if keys is None or (keys.x25519, keys.ed25519) != (user.x25519.hex(), user.ed25519.hex()):
        raise BadRequest("the statement's member keys are not the keys that user registered")
    _check_member_limit(db, team, mode)
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
        row.removed_at = now
    _drop_keyrings(db, team.id, user.fingerprint)
    # Clients refuse shares whose sharer left the team; the server stops serving them too.
    db.execute(
        update(Share)
        .where(Share.team_id == team.id, Share.shared_by == user.id, Share.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return user.id


def _change_role(db: Session, team: Team, body: StatementBody) -> str:
    user = _user_by_fingerprint(db, body)
    row = db.get(TeamMember, (team.id, user.id))
    if row is not None and body.role is not None:
        row.role = body.role
        if body.role not in acl.READERS:
            _drop_keyrings(db, team.id, user.fingerprint)
    return user.id


def _drop_keyrings(db: Session, team_id: str, fingerprint: str) -> None:
    db.execute(
        sql_delete(Keyring).where(Keyring.team_id == team_id, Keyring.recipient == fingerprint)
    )


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
    _team_manager(db, principal, team_id)
    actor = calling_user(db, principal)
    statements = [parse_signed(wire, now) for wire in wires]
    for st in statements:
        if st.body.signer != actor.fingerprint:
            raise BadRequest(f"statement {st.body.seqno} is not signed by your identity")
        if action is not None and st.body.action != action:
            raise BadRequest(f"this endpoint takes one '{action}' statement")
        if member is not None and st.body.member != member.fingerprint:
            raise BadRequest("the statement names another member than the path")
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
        raise NotFound(_NO_INVITE)
    _invite_usable(invite, now)
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


def _invite_usable(invite: Invite, now: datetime) -> None:
    if invite.used_at is not None:
        raise Conflict("this invite was already used; ask for a new one")
    if aware(invite.expires_at) <= now:
        raise Gone("this invite expired; ask for a new one")


def _invite_out(invite: Invite) -> InviteOut:
    return InviteOut(
        invite_id=invite.id,
        team_id=invite.team_id,
        role=invite.role,
        expires_at=aware(invite.expires_at).isoformat(),
        used=invite.used_at is not None,
    )


def _join_out(request: JoinRequest, invite: Invite, user: User) -> JoinRequestOut:
    return JoinRequestOut(
        request_id=request.id,
        invite_id=invite.id,
        role=invite.role,
        user_id=user.id,
        fingerprint=user.fingerprint,
        status=request.status,
        created_at=aware(request.created_at).isoformat(),
        request=msgspec.convert(request.request, JoinRequestWire),
    )


# --- controllers -----------------------------------------------------------------------------

Limit = Annotated[int, Parameter(ge=1, le=MAX_PAGE)]


def _check_team_limit(db: Session, owner: User, mode: PlansMode) -> str:
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


def _create_team(
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
    tier_name = _check_team_limit(db, owner, mode)
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


@post(
    "/api/v1/teams",
    sync_to_thread=True,
    status_code=201,
    tags=["teams"],
    dependencies=AUTHENTICATED,
)
def create_team(
    data: JSONBody[TeamCreate], db: SessionDep, principal: PrincipalDep, now: NowDep,
    plans_mode: PlansDep,
) -> TeamCreated:  # fmt: skip
    """Create a team vault from a signed genesis statement and the owner's keyring.

    A plain handler, not a ``TeamController`` method: ``GET /api/v1/teams`` lives in another
    controller and Litestar refuses two controllers on one path.
    """
    return _create_team(db, principal, data, now, plans_mode)


class TeamController(Controller):
    path = "/api/v1/teams"
    tags = ["teams"]
    dependencies = AUTHENTICATED

    @get("/{team_id:str}/chain", sync_to_thread=True)
    def chain(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep, after: AfterSeqno = -1
    ) -> ChainPage:
        """The signed statements after ``after`` (any live member, viewers included)."""
        team, _member = _team_member(db, principal, team_id)
        rows = db.scalars(
            select(ChainStatement)
            .where(ChainStatement.team_id == team.id, ChainStatement.seqno > after)
            .order_by(ChainStatement.seqno)
        ).all()
        return ChainPage(
            team_id=team.id,
            after=after,
            head=ChainHeadOut(seqno=team.chain_seqno, hash=team.chain_head or ""),
            statements=[msgspec.convert(r.statement, SignedWire) for r in rows],
        )

    @post("/{team_id:str}/chain", sync_to_thread=True, status_code=200)
    def append(
        self, team_id: TeamPath, data: JSONBody[ChainAppend], db: SessionDep,
        principal: PrincipalDep, now: NowDep, plans_mode: PlansDep,
    ) -> ChainHeadOut:  # fmt: skip
        """Append statements if the head is still ``expected_head_seqno`` (else 409)."""
        return append_statements(
            db, principal, team_id, data.expected_head_seqno, data.statements, now,
            plans_mode=plans_mode,
        )  # fmt: skip

    @post("/{team_id:str}/members", sync_to_thread=True, status_code=201)
    def add_member(
        self, team_id: TeamPath, data: JSONBody[MemberAdd], db: SessionDep, principal: PrincipalDep,
        now: NowDep, plans_mode: PlansDep,
    ) -> ChainHeadOut:  # fmt: skip
        """Add a member: one signed ``add`` statement, appended like ``POST …/chain``."""
        return append_statements(
            db, principal, team_id, data.expected_head_seqno, [data.statement], now,
            plans_mode=plans_mode, action="add",
        )  # fmt: skip

    @delete("/{team_id:str}/members/{user_id:str}", sync_to_thread=True, status_code=200)
    def remove_member(
        self,
        team_id: TeamPath,
        user_id: Annotated[str, Parameter(max_length=36)],
        db: SessionDep,
        principal: PrincipalDep,
        now: NowDep,
        plans_mode: PlansDep,
        expected_head_seqno: Annotated[int, Parameter(ge=0, le=2**31 - 1)],
        statement_body: Annotated[str, Parameter(min_length=2, max_length=8192)],
        signature: Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{86}$")],
    ) -> ChainHeadOut:
        """Remove a member: one signed ``remove`` statement naming that user, in the query."""
        _team_manager(db, principal, team_id)
        member = db.get(User, user_id)
        if member is None or acl.membership(db, member.id, team_id) is None:
            raise NotFound("no such member")
        wire = SignedWire(body=statement_body, signature=signature)
        return append_statements(
            db, principal, team_id, expected_head_seqno, [wire], now,
            plans_mode=plans_mode, action="remove", member=member,
        )  # fmt: skip

    @post("/{team_id:str}/keyrings", sync_to_thread=True, status_code=201)
    def upload_keyring(
        self, team_id: TeamPath, data: JSONBody[KeyringUpload], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> KeyringUploaded:  # fmt: skip
        """Store an epoch's keyring for each of its recipients (owners and admins)."""
        _team_manager(db, principal, team_id)
        team = lock_team(db, team_id)
        keyring = check_keyring(
            data.keyring, verified_state(db, team, now), calling_user(db, principal).fingerprint
        )
        store_keyring(db, team.id, keyring, now)
        recipients = sorted(keyring.body.recipients)
        audit.record(
            db, team_id=team.id, actor_id=principal.user_id, action="keyring_uploaded",
            subject=f"epoch {keyring.body.epoch}", detail={"recipients": recipients}, now=now,
        )  # fmt: skip
        return KeyringUploaded(epoch=keyring.body.epoch, recipients=recipients)

    @get("/{team_id:str}/keyrings", sync_to_thread=True)
    def keyrings(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep
    ) -> list[KeyringOut]:
        """The keyrings sealed to the caller, by epoch (a viewer has none)."""
        team, _member = _team_member(db, principal, team_id)
        acl.require_content_key(principal, team.id)
        return keyrings_for(db, team.id, calling_user(db, principal).fingerprint)

    @post("/{team_id:str}/invite", sync_to_thread=True, status_code=201)
    def invite(
        self, team_id: TeamPath, data: JSONBody[InviteCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep, plans_mode: PlansDep,
    ) -> InviteOut:  # fmt: skip
        """Record an invite (id, role, expiry). The secret stays with the inviter's client."""
        _team, member = _team_manager(db, principal, team_id)
        team = lock_team(db, team_id)
        caller = calling_user(db, principal)
        if data.team is not None and data.team != team.id:
            raise BadRequest("the invite names another team")
        if data.inviter != caller.fingerprint:
            raise BadRequest("the invite must name your own fingerprint as the inviter")
        if data.role == "admin" and member.role != "owner":
            raise Forbidden("only an owner can invite an admin")
        expires = datetime.fromtimestamp(data.expires_at, UTC)
        if not now < expires <= now + MAX_INVITE_TTL:
            raise BadRequest("an invite must expire in the future and within 30 days")
        _check_member_limit(db, team, plans_mode)
        if db.get(Invite, data.invite_id) is not None:
            raise Conflict("an invite with this id exists; make a new invite")
        invite = Invite(
            id=data.invite_id, team_id=team.id, created_by=caller.id, role=data.role,
            expires_at=expires, created_at=now,
        )  # fmt: skip
        try:
            with db.begin_nested():
                db.add(invite)
        except IntegrityError:  # pragma: no cover - a race on a random 64-bit id
            raise Conflict("an invite with this id exists; make a new invite") from None
        audit.record(
            db, team_id=team.id, actor_id=caller.id, action="invite_created",
            subject=invite.id, detail={"role": invite.role}, now=now,
        )  # fmt: skip
        return _invite_out(invite)

    @get("/{team_id:str}/join-requests", sync_to_thread=True)
    def join_requests(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep,
        status: Annotated[str, Parameter(pattern=r"^(pending|approved|rejected)$")] = "pending",
    ) -> list[JoinRequestOut]:  # fmt: skip
        """Join requests for this team's invites (owners and admins)."""
        team, _member = _team_manager(db, principal, team_id)
        rows = db.execute(
            select(JoinRequest, Invite, User)
            .join(Invite, Invite.id == JoinRequest.invite_id)
            .join(User, User.id == JoinRequest.user_id)
            .where(Invite.team_id == team.id, JoinRequest.status == status)
            .order_by(JoinRequest.created_at, JoinRequest.id)
        ).all()
        return [_join_out(request, invite, user) for request, invite, user in rows]

    @get("/{team_id:str}/audit", sync_to_thread=True)
    def audit_log(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep,
        after: Annotated[int, Parameter(ge=0, le=2**62)] = 0, limit: Limit = 100,
    ) -> AuditPage:  # fmt: skip
        """The team's audit entries after ``after``, and whether this page's part of the hash
        chain verifies (its entries, their links, the link to the entry before the page and, on
        the last page, the team's head): O(page), however long the log."""
        team, _member = _team_manager(db, principal, team_id)
        rows = db.scalars(
            select(AuditEntry)
            .where(AuditEntry.team_id == team.id, AuditEntry.id > after)
            .order_by(AuditEntry.id)
            .limit(limit + 1)
        ).all()
        page = rows[:limit]
        return AuditPage(
            team_id=team.id,
            chain_ok=audit.verify_audit_page(db, team.id, page, last=len(rows) <= limit),
            entries=[
                AuditEntryOut(
                    id=e.id,
                    action=e.action,
                    subject=e.subject,
                    actor_id=e.actor_id,
                    detail=dict(e.detail),
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                    created_at=aware(e.created_at).isoformat(),
                )
                for e in page
            ],
            cursor=page[-1].id if page else after,
            more=len(rows) > limit,
        )


class InviteController(Controller):
    path = "/api/v1/invites"
    tags = ["teams"]
    dependencies = AUTHENTICATED

    @post("/{invite_id:str}/join", sync_to_thread=True, status_code=201)
    def join(
        self,
        invite_id: Annotated[str, Parameter(pattern=r"^[0-9a-f]{16}$")],
        data: JSONBody[JoinRequestWire],
        db: SessionDep,
        principal: PrincipalDep,
        now: NowDep,
    ) -> JoinResult:
        """Ask to join with an invite: the keys MACed with the invite secret, for the admins."""
        user = interactive_user(db, principal, "join teams")
        invite = db.scalar(select(Invite).where(Invite.id == invite_id).with_for_update())
        if invite is None:
            raise NotFound(_NO_INVITE)
        _invite_usable(invite, now)
        body = data.body
        if body.invite_id != invite.id:
            raise BadRequest("the join request is for another invite")
        keys = (body.member_keys.x25519, body.member_keys.ed25519)
        if body.member != user.fingerprint or keys != (user.x25519.hex(), user.ed25519.hex()):
            raise BadRequest("the join request must carry your own registered keys")
        if acl.membership(db, user.id, invite.team_id) is not None:
            raise Conflict("you are already a member of this team")
        lock_team(db, invite.team_id)
        mine = select(JoinRequest.id).where(
            JoinRequest.invite_id == invite.id, JoinRequest.user_id == user.id
        )
        if db.scalar(mine) is not None:
            raise Conflict("you already asked to join with this invite")
        request = JoinRequest(
            id=str(uuid.uuid4()), invite_id=invite.id, user_id=user.id,
            request=_to_builtins(data), status="pending", created_at=now,
        )  # fmt: skip
        db.add(request)
        audit.record(
            db, team_id=invite.team_id, actor_id=user.id, action="join_requested",
            subject=invite.id, detail={"request_id": request.id}, now=now,
        )  # fmt: skip
        return JoinResult(
            request_id=request.id, team_id=invite.team_id, invite_id=invite.id, status="pending"
        )
