"""Vaults as the caller sees them, and a personal vault's signed chain.

Every account's personal vault is created by the server at registration with an empty chain
(``chain_seqno == -1``). At the first login the client makes the vault's keys, signs the
genesis statement for the vault id (``keymgmt.create_team``), seals the epoch-1 keyring to
itself and uploads both — the same checks as team creation (``server.domain.teams``), so teams
and personal vaults share one path on the client.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from keymgmt import ChainError, verify_chain
from server import acl, audit
from server.db.models import Team, TeamMember
from server.deps import Principal
from server.domain.chain import (
    calling_user,
    head_out,
    interactive_user,
    lock_team,
    parse_signed,
    store_statements,
)
from server.domain.keyrings import check_keyring, keyrings_for, store_keyring
from server.errors import BadRequest, Conflict, NotFound
from tapes_e2e.protocol import VaultOut
from tapes_e2e.protocol.teams import KeyringOut
from tapes_e2e.protocol.vaults import GenesisCreate, GenesisCreated

__all__ = ["create_genesis", "my_keyrings", "vault", "vault_member", "vaults"]

_NO_VAULT = "no such vault"  # the same words as server.acl, whatever the reason
_HAS_GENESIS = (
    "this vault's chain already has its genesis; fetch it with GET /api/v1/vaults/{vault}/chain"
)


def _out(team: Team, member: TeamMember) -> VaultOut:
    return VaultOut(
        vault_id=team.id,
        name=team.name,
        kind="personal" if team.kind == "personal" else "team",
        role=member.role,
        tier=team.tier,
        head_seq=team.head_seq,
        node_count=team.node_count,
        legal_hold=team.legal_hold,
    )


def vaults(db: Session, principal: Principal) -> list[VaultOut]:
    """The caller's vaults: their personal vault and the teams they belong to (with an API
    key, only the vault it is scoped to)."""
    rows = db.execute(
        select(Team, TeamMember)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == principal.user_id, TeamMember.removed_at.is_(None))
        .order_by(Team.created_at)
    ).all()
    return [
        _out(team, member)
        for team, member in rows
        if principal.key_allows(team.id, "read-usage") or principal.key_allows(team.id, "pull")
    ]


def vault(db: Session, principal: Principal, vault_id: str) -> VaultOut:
    """One vault of the caller's."""
    team, member = acl.require_vault(db, principal, vault_id, "read-usage")
    return _out(team, member)


def vault_member(db: Session, principal: Principal, vault_id: str) -> tuple[Team, TeamMember]:
    """Any live member of a personal or team vault (an API key must be scoped to it)."""
    found = acl.membership(db, principal.user_id, vault_id)
    scoped = principal.api_key_id is None or principal.key_vault == vault_id
    if found is None or not scoped:
        raise NotFound(_NO_VAULT)
    return found


def my_keyrings(db: Session, principal: Principal, vault_id: str) -> list[KeyringOut]:
    """The keyrings of a vault sealed to the caller, by epoch (a viewer has none)."""
    team, member = vault_member(db, principal, vault_id)
    acl.require_content_key(principal, team.id)
    if member.role not in acl.READERS:
        return []
    return keyrings_for(db, team.id, calling_user(db, principal).fingerprint)


def create_genesis(
    db: Session, principal: Principal, vault_id: str, data: GenesisCreate, now: datetime
) -> GenesisCreated:
    """Store a personal vault's genesis statement and the owner's epoch-1 keyring, once."""
    owner = interactive_user(db, principal, "create a vault's chain")
    found = acl.membership(db, owner.id, vault_id)
    if found is None or found[0].owner_id != owner.id or found[1].role != "owner":
        raise NotFound(_NO_VAULT)
    if found[0].kind != "personal":
        raise BadRequest("a team vault gets its genesis when it is created (POST /api/v1/teams)")
    if found[0].chain_seqno != -1:
        raise Conflict(_HAS_GENESIS)
    statement = parse_signed(data.statement, now)
    try:
        state = verify_chain([statement], team=vault_id, now=int(now.timestamp()))
    except ChainError as exc:
        raise BadRequest(f"the genesis statement does not verify: {exc}") from None
    if statement.body.signer != owner.fingerprint:
        raise BadRequest("the genesis statement is not signed by your identity")
    keyring = check_keyring(data.keyring, state, owner.fingerprint)
    team = lock_team(db, vault_id)  # two uploads at once: the second waits here, then gets 409
    if team.chain_seqno != -1:
        raise Conflict(_HAS_GENESIS)
    store_statements(db, team, [statement], state, now)
    store_keyring(db, team.id, keyring, now)
    audit.record(
        db, team_id=team.id, actor_id=owner.id, action="vault_genesis", subject=team.id,
        detail={"epoch": keyring.body.epoch}, now=now,
    )  # fmt: skip
    return GenesisCreated(vault_id=team.id, head=head_out(state))
