"""A personal vault's signed chain: its genesis, and the chain and keyrings of any vault.

Every account's personal vault is created by the server at registration with an empty chain
(``chain_seqno == -1``). At the first login the client makes the vault's keys, signs the
genesis statement for the vault id (``keymgmt.create_team``), seals the epoch-1 keyring to
itself and uploads both here — the same checks as team creation (``server.domain.teams``), so
teams and personal vaults share one path on the client.

- ``POST /api/v1/teams/{vault}/genesis`` — once, by the owner of a personal vault whose chain is
  empty: 404 for anybody else (as for a vault that does not exist), 400 for a team vault (its
  genesis came with ``POST /api/v1/teams``) or a statement or keyring keymgmt refuses, 409 once
  the chain has its genesis. API keys cannot do it.
- ``GET /api/v1/vaults/{vault}/chain?after=`` — the signed statements after a seqno, for any live
  member of a personal or team vault (``/api/v1/teams/{id}/chain`` serves team vaults only).
- ``GET /api/v1/vaults/{vault}/keyrings`` — the keyrings sealed to the caller, by epoch; a
  viewer gets none.
"""

from __future__ import annotations

from datetime import datetime

from litestar import Controller
from litestar.params import JSONBody
from sqlalchemy.orm import Session

from keymgmt import ChainError, verify_chain
from server import acl, audit
from server.db.models import Team, TeamMember
from server.deps import AUTHENTICATED, NowDep, Principal, PrincipalDep, SessionDep
from server.domain.chain import (
    calling_user,
    chain_page,
    head_out,
    interactive_user,
    lock_team,
    parse_signed,
    store_statements,
)
from server.domain.keyrings import check_keyring, keyrings_for, store_keyring
from server.errors import BadRequest, Conflict, NotFound
from server.openapi import AfterSeqno, TeamPath, get, post
from tapes_e2e.protocol.teams import ChainPage, KeyringOut
from tapes_e2e.protocol.vaults import GenesisCreate, GenesisCreated

__all__ = ["VaultChainController", "create_genesis"]

_NO_VAULT = "no such vault"  # the same words as server.acl, whatever the reason
_HAS_GENESIS = (
    "this vault's chain already has its genesis; fetch it with GET /api/v1/vaults/{vault}/chain"
)


def _vault_member(db: Session, principal: Principal, vault: str) -> tuple[Team, TeamMember]:
    """Any live member of a personal or team vault (an API key must be scoped to it)."""
    found = acl.membership(db, principal.user_id, vault)
    scoped = principal.api_key_id is None or principal.key_vault == vault
    if found is None or not scoped:
        raise NotFound(_NO_VAULT)
    return found


def create_genesis(
    db: Session, principal: Principal, vault: str, data: GenesisCreate, now: datetime
) -> GenesisCreated:
    """Store a personal vault's genesis statement and the owner's epoch-1 keyring, once."""
    owner = interactive_user(db, principal, "create a vault's chain")
    found = acl.membership(db, owner.id, vault)
    if found is None or found[0].owner_id != owner.id or found[1].role != "owner":
        raise NotFound(_NO_VAULT)
    if found[0].kind != "personal":
        raise BadRequest("a team vault gets its genesis when it is created (POST /api/v1/teams)")
    if found[0].chain_seqno != -1:
        raise Conflict(_HAS_GENESIS)
    statement = parse_signed(data.statement, now)
    try:
        state = verify_chain([statement], team=vault, now=int(now.timestamp()))
    except ChainError as exc:
        raise BadRequest(f"the genesis statement does not verify: {exc}") from None
    if statement.body.signer != owner.fingerprint:
        raise BadRequest("the genesis statement is not signed by your identity")
    keyring = check_keyring(data.keyring, state, owner.fingerprint)
    team = lock_team(db, vault)  # two uploads at once: the second waits here, then gets 409
    if team.chain_seqno != -1:
        raise Conflict(_HAS_GENESIS)
    store_statements(db, team, [statement], state, now)
    store_keyring(db, team.id, keyring, now)
    audit.record(
        db, team_id=team.id, actor_id=owner.id, action="vault_genesis", subject=team.id,
        detail={"epoch": keyring.body.epoch}, now=now,
    )  # fmt: skip
    return GenesisCreated(vault_id=team.id, head=head_out(state))


class VaultChainController(Controller):
    """Routes under ``/api/v1``: the genesis under ``teams/``, the reads under ``vaults/``."""

    path = "/api/v1"
    tags = ["vaults"]
    dependencies = AUTHENTICATED

    @post("/teams/{vault:str}/genesis", sync_to_thread=True, status_code=201)
    def genesis(
        self, vault: TeamPath, data: JSONBody[GenesisCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> GenesisCreated:  # fmt: skip
        """Upload a personal vault's genesis statement and keyring (the owner, once)."""
        return create_genesis(db, principal, vault, data, now)

    @get("/vaults/{vault:str}/chain", sync_to_thread=True)
    def chain(
        self, vault: TeamPath, db: SessionDep, principal: PrincipalDep, after: AfterSeqno = -1
    ) -> ChainPage:
        """The signed statements after ``after`` (any live member, viewers included)."""
        team, _member = _vault_member(db, principal, vault)
        return chain_page(db, team, after)

    @get("/vaults/{vault:str}/keyrings", sync_to_thread=True)
    def keyrings(
        self, vault: TeamPath, db: SessionDep, principal: PrincipalDep
    ) -> list[KeyringOut]:
        """The keyrings sealed to the caller, by epoch (a viewer has none)."""
        team, member = _vault_member(db, principal, vault)
        acl.require_content_key(principal, team.id)
        if member.role not in acl.READERS:
            return []
        return keyrings_for(db, team.id, calling_user(db, principal).fingerprint)
