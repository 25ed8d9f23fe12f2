"""HTTP of team vaults: creation, the chain, members, keyrings, invites, join requests, audit.

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
- ``POST /api/v1/teams/{id}/hold`` — owners: legal hold on or off (retention skips a held vault).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Controller
from litestar.params import JSONBody, Parameter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from keymgmt._encoding import b64e
from keymgmt.audit import sign_audit_head
from server import acl, audit
from server.db.models import (
    AuditEntry,
    Invite,
    JoinRequest,
    User,
)
from server.deps import (
    AUTHENTICATED,
    NowDep,
    PlansDep,
    PrincipalDep,
    SessionDep,
    aware,
)
from server.domain.chain import (
    calling_user,
    chain_page,
    interactive_user,
    lock_team,
    verified_state,
)
from server.domain.keyrings import check_keyring, keyrings_for, store_keyring
from server.domain.teams.services import (
    MAX_INVITE_TTL,
    MAX_PAGE,
    NO_INVITE,
    append_statements,
    check_member_limit,
    create_new_team,
    invite_out,
    invite_usable,
    join_out,
    leave,
    members_out,
    team_manager,
    team_member,
)
from server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
)
from server.openapi import After, AfterSeqno, TeamPath, delete, get, post
from server.signing import public_key, signing_seed
from tapes_e2e.protocol.teams import (
    AuditEntryOut,
    AuditPage,
    ChainAppend,
    ChainHeadOut,
    ChainPage,
    HoldOut,
    HoldSet,
    InviteCreate,
    InviteOut,
    JoinRequestOut,
    JoinRequestWire,
    JoinResult,
    KeyringOut,
    KeyringUpload,
    KeyringUploaded,
    MemberAdd,
    MemberOut,
    ServerKeyOut,
    SignedAuditHead,
    SignedWire,
    TeamCreate,
    TeamCreated,
)

__all__ = ["InviteController", "TeamController", "WellKnownController", "create_team"]

Limit = Annotated[int, Parameter(ge=1, le=MAX_PAGE)]


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
    return create_new_team(db, principal, data, now, plans_mode)


class TeamController(Controller):
    path = "/api/v1/teams"
    tags = ["teams"]
    dependencies = AUTHENTICATED

    @get("/{team_id:str}/chain", sync_to_thread=True)
    def chain(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep, after: AfterSeqno = -1
    ) -> ChainPage:
        """The signed statements after ``after`` (any live member, viewers included)."""
        team, _member = team_member(db, principal, team_id)
        return chain_page(db, team, after)

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
        team_manager(db, principal, team_id)
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
        team_manager(db, principal, team_id)
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
        team, _member = team_member(db, principal, team_id)
        acl.require_content_key(principal, team.id)
        return keyrings_for(db, team.id, calling_user(db, principal).fingerprint)

    @post("/{team_id:str}/invite", sync_to_thread=True, status_code=201)
    def invite(
        self, team_id: TeamPath, data: JSONBody[InviteCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep, plans_mode: PlansDep,
    ) -> InviteOut:  # fmt: skip
        """Record an invite (id, role, expiry). The secret stays with the inviter's client."""
        _team, member = team_manager(db, principal, team_id)
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
        check_member_limit(db, team, plans_mode)
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
        return invite_out(invite)

    @get("/{team_id:str}/members", sync_to_thread=True)
    def members(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep
    ) -> list[MemberOut]:
        """Live members with their handles (any live member, viewers included): labels for the
        fingerprints of the verified chain, on the server's word."""
        team, _member = team_member(db, principal, team_id)
        return members_out(db, team.id)

    @post("/{team_id:str}/hold", sync_to_thread=True, status_code=200)
    def hold(
        self, team_id: TeamPath, data: JSONBody[HoldSet], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> HoldOut:  # fmt: skip
        """Put the vault on legal hold (retention deletes nothing of it) or take it off: an
        owner, logged in; audited."""
        team, member = team_member(db, principal, team_id)
        user = interactive_user(db, principal, "set a legal hold")
        if member.role != "owner":
            raise Forbidden("only an owner puts a vault on legal hold or takes it off")
        team = lock_team(db, team.id)
        if team.legal_hold != data.on:
            team.legal_hold = data.on
            audit.record(
                db, team_id=team.id, actor_id=user.id, subject=team.id, now=now,
                action="legal_hold_on" if data.on else "legal_hold_off", detail={},
            )  # fmt: skip
        return HoldOut(vault=team.id, legal_hold=team.legal_hold)

    @post("/{team_id:str}/leave", sync_to_thread=True, status_code=204)
    def leave(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep, now: NowDep
    ) -> None:
        """Leave the team: the server stops serving it to you at once; an owner or admin's
        signed removal (listed as leaving until then) starts the new key epoch."""
        leave(db, principal, team_id, now)

    @get("/{team_id:str}/join-requests", sync_to_thread=True)
    def join_requests(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep,
        status: Annotated[str, Parameter(pattern=r"^(pending|approved|rejected)$")] = "pending",
    ) -> list[JoinRequestOut]:  # fmt: skip
        """Join requests for this team's invites (owners and admins)."""
        team, _member = team_manager(db, principal, team_id)
        rows = db.execute(
            select(JoinRequest, Invite, User)
            .join(Invite, Invite.id == JoinRequest.invite_id)
            .join(User, User.id == JoinRequest.user_id)
            .where(Invite.team_id == team.id, JoinRequest.status == status)
            .order_by(JoinRequest.created_at, JoinRequest.id)
        ).all()
        return [join_out(request, invite, user) for request, invite, user in rows]

    @get("/{team_id:str}/audit", sync_to_thread=True)
    def audit_log(
        self, team_id: TeamPath, db: SessionDep, principal: PrincipalDep,
        after: After = 0, limit: Limit = 100,
    ) -> AuditPage:  # fmt: skip
        """The team's audit entries after ``after``, and whether this page's part of the hash
        chain verifies (its entries, their links, the link to the entry before the page and, on
        the last page, the team's head): O(page), however long the log."""
        team, _member = team_manager(db, principal, team_id)
        rows = db.scalars(
            select(AuditEntry)
            .where(AuditEntry.team_id == team.id, AuditEntry.id > after)
            .order_by(AuditEntry.id)
            .limit(limit + 1)
        ).all()
        page = rows[:limit]
        last = db.scalar(select(func.max(AuditEntry.id)).where(AuditEntry.team_id == team.id))
        head_id, head_hash = last or 0, team.audit_head or ""
        signature = sign_audit_head(signing_seed(db), team.id, head_id, head_hash)
        return AuditPage(
            team_id=team.id,
            head=SignedAuditHead(entry_id=head_id, hash=head_hash, signature=b64e(signature)),
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
            raise NotFound(NO_INVITE)
        invite_usable(invite, now)
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
            request=msgspec.to_builtins(data), status="pending", created_at=now,
        )  # fmt: skip
        db.add(request)
        audit.record(
            db, team_id=invite.team_id, actor_id=user.id, action="join_requested",
            subject=invite.id, detail={"request_id": request.id}, now=now,
        )  # fmt: skip
        return JoinResult(
            request_id=request.id, team_id=invite.team_id, invite_id=invite.id, status="pending"
        )


class WellKnownController(Controller):
    path = "/.well-known"
    tags = ["auth"]

    @get("/tapes-server-key", sync_to_thread=True)
    def server_key(self, db: SessionDep) -> ServerKeyOut:
        """The server's own Ed25519 public key, which signs each team's audit log head;
        clients pin it on first use."""
        return ServerKeyOut(ed25519=public_key(db).hex())
